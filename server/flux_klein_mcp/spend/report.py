"""What has been spent, as data: `get_usage` (this process, today, the budgets, the provider's credit) and
`flux-klein-mcp spend` (the ledger by day and month). Reading never spends: the credit comes from OpenRouter's
`GET /key`, which is free."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import anyio
import httpx

from ..providers import Provider
from ..words import plural
from .budget import _summary
from .ledger import DayTotal, Ledger, unusable


async def provider_credit(providers: Iterable[Provider], http: httpx.AsyncClient) -> dict[str, Any]:
    """The remaining credit of each configured provider that can tell it without spending (OpenRouter's
    `GET /key`: limit, usage, limit_remaining in USD); the others are named with where to look."""
    configured = [p for p in providers if p.key_variable and not p.missing()]
    found: dict[str, Any] = {}

    async def check(provider: Provider) -> None:
        try:
            result = await provider.check_key(http)
        except Exception as exc:  # a credit check must never take the report down
            found[provider.name] = {"error": f"the check failed ({type(exc).__name__})"}
            return
        if result.credit is not None:
            found[provider.name] = result.credit
        elif result.status != "ok":
            found[provider.name] = {"error": result.detail}
        else:
            found[provider.name] = {"note": f"{provider.label} has no endpoint for the remaining credit; see "
                                            f"{provider.billing_url}."}

    async with anyio.create_task_group() as group:
        for provider in configured:
            group.start_soon(check, provider)
    return found


def ledger_report(ledger: Ledger, today: date, days: int) -> dict[str, Any]:
    """Today, this month, and each of the last `days` days (with what was spent on each, by provider and model)."""
    try:
        totals = ledger.days()
    except OSError as exc:
        raise unusable(exc, ledger.path) from None
    month = _merge(total for day, total in totals.items() if (day.year, day.month) == (today.year, today.month))
    recent = [today - timedelta(days=back) for back in range(days)]
    return {
        "ledger": str(ledger.path),
        "today": {"date": today.isoformat(), **_summary(totals.get(today, DayTotal()))},
        "this_month": {"month": f"{today:%Y-%m}", **_summary(month)},
        "days": [{"date": day.isoformat(), **_summary(totals.get(day, DayTotal()))} for day in recent],
        "all_time": _summary(_merge(totals.values())),
    }


def _merge(totals: Iterable[DayTotal]) -> DayTotal:
    merged = DayTotal()
    for total in totals:
        merged.usd += total.usd
        merged.images += total.images
        for key, (usd, images, highest) in total.by.items():
            entry = merged.by.setdefault(key, [0.0, 0, 0.0])
            entry[0] += usd
            entry[1] += images
            entry[2] = max(entry[2], highest)
    return merged


def render(report: dict[str, Any]) -> str:
    """The `spend` command's table."""
    lines = [f"Ledger: {report['ledger']}", ""]
    lines.append(f"Today ({report['today']['date']}):  ${report['today']['spent_usd']:.4f}  "
                 f"({plural(report['today']['images'], 'image')})")
    month = report["this_month"]
    lines.append(f"This month ({month['month']}):  ${month['spent_usd']:.4f}  ({plural(month['images'], 'image')})")
    lines += ["", "DATE        SPENT (USD)  IMAGES"]
    lines += [f"{day['date']}  {day['spent_usd']:>11.4f}  {day['images']:>6}" for day in report["days"]]
    rows = month["by_provider_model"]
    if rows:
        lines += ["", "This month by provider and model:"]
        lines += [f"  {row['provider']:<18} {row['model']:<40} ${row['spent_usd']:.4f}  "
                  f"({plural(row['images'], 'image')})" for row in rows]
    return "\n".join(lines)
