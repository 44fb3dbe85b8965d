"""What has been spent, as data: `get_usage` (this process, today, the budgets, the provider's credit) and
`flux-klein-mcp spend` (the ledger by day and month, or grouped by day, provider or model). Reading never spends:
the credit comes from OpenRouter's `GET /key`, which is free."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

import anyio
import httpx

from ..providers import Provider
from ..words import plural
from .budget import reap, summary, unusable
from .ledger import Ledger, LedgerError, Total


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


def ledger_report(ledger: Ledger, now: datetime, days: int, by: str | None = None,
                  user: str | None = None) -> dict[str, Any]:
    """Today, this month, each of the last `days` days and all time (with what was spent by provider and model);
    with `by`, the last `days` days grouped by day, provider, model or person; with `user`, that signed-in person's
    spend only (their subject, or the ledger's `issuer#subject`)."""
    today = ledger.day_of(now)
    recent = [today - timedelta(days=back) for back in range(days)]
    try:
        reap(ledger, now)
        person = _person(ledger, user) if user is not None else None
        rows = ledger.grouped(person=person) if user is None or person is not None else []
        people = ledger.by_person(recent[-1], recent[0]) if by == "person" and user is None else []
    except LedgerError as exc:
        raise unusable(exc) from None
    report: dict[str, Any] = {
        "ledger": ledger.where,
        "today": {"date": today.isoformat(), **summary(_total(rows, lambda day: day == today))},
        "this_month": {"month": f"{today:%Y-%m}",
                       **summary(_total(rows, lambda day: (day.year, day.month) == (today.year, today.month)))},
        "days": [{"date": day.isoformat(), **summary(_total(rows, _on(day)))} for day in recent],
        "all_time": summary(_total(rows, lambda day: True)),
    }
    if user is not None:
        report["person"] = person or user
    if by == "person":
        report["by"] = by
        most_first = sorted(people, key=lambda row: (-row[1], row[0] is None, row[0] or ""))
        report["rows"] = ([{"person": who, "spent_usd": round(spent, 6), "images": images}
                           for who, spent, images in most_first]
                          if user is None else [{"person": report["person"], **_figures(_total(rows, _in(recent)))}])
    elif by is not None:
        report["by"] = by
        report["rows"] = _grouped(rows, by, recent)
    return report


def _person(ledger: Ledger, user: str) -> str | None:
    """The ledger's name for a person given as `issuer#subject` or by their subject alone (None: never spent)."""
    from ..errors import InputError
    from ..people import subject_of

    known = [who for who, _, _ in ledger.by_person() if who is not None]
    if user in known:
        return user
    matching = [who for who in known if subject_of(who) == user]
    if len(matching) > 1:
        raise InputError(f"Several people have the subject {user!r}, each from another issuer: "
                         f"{', '.join(matching)}. Pass --user with the whole issuer#subject.")
    return matching[0] if matching else None


def _in(days: list[date]) -> Callable[[date], bool]:
    return lambda day: days[-1] <= day <= days[0]


def _on(day: date) -> Callable[[date], bool]:
    return lambda other: other == day


def _total(rows: list[tuple[date, str, str, float, int]], which: Callable[[date], bool]) -> Total:
    total = Total()
    for day, provider, model, usd, images in rows:
        if which(day):
            total.add(provider, model, usd, images)
    return total


def _grouped(rows: list[tuple[date, str, str, float, int]], by: str, recent: list[date]) -> list[dict[str, Any]]:
    """The last days' spend by day (each day, newest first), provider or provider and model (most spent first)."""
    if by == "day":
        return [{"date": day.isoformat(), **_figures(_total(rows, _on(day)))} for day in recent]
    groups: dict[tuple[str, ...], Total] = {}
    for day, provider, model, usd, images in rows:
        if recent[-1] <= day <= recent[0]:
            key = (provider,) if by == "provider" else (provider, model)
            groups.setdefault(key, Total()).add(provider, model, usd, images)
    names = ("provider",) if by == "provider" else ("provider", "model")
    ordered = sorted(groups.items(), key=lambda item: (-item[1].usd, item[0]))
    return [{**dict(zip(names, key, strict=True)), **_figures(total)} for key, total in ordered]


def _figures(total: Total) -> dict[str, Any]:
    return {"spent_usd": round(total.usd, 6), "images": total.images}


def render(report: dict[str, Any]) -> str:
    """The `spend` command's table."""
    lines = [f"Ledger: {report['ledger']}", ""]
    lines.append(f"Today ({report['today']['date']}):  ${report['today']['spent_usd']:.4f}  "
                 f"({plural(report['today']['images'], 'image')})")
    month = report["this_month"]
    lines.append(f"This month ({month['month']}):  ${month['spent_usd']:.4f}  ({plural(month['images'], 'image')})")
    by = report.get("by", "day")
    if "person" in report:
        lines[0] += f"   Person: {report['person']}"
    if by == "person":
        lines += ["", f"The last {plural(len(report['days']), 'day')} by person:"]
        lines += [f"  {row['person'] or '(nobody signed in)':<59} ${row['spent_usd']:.4f}  "
                  f"({plural(row['images'], 'image')})" for row in report["rows"]]
        if not report["rows"]:
            lines.append("  nothing was spent")
    elif by == "day":
        lines += ["", "DATE        SPENT (USD)  IMAGES"]
        lines += [f"{day['date']}  {day['spent_usd']:>11.4f}  {day['images']:>6}"
                  for day in report.get("rows", report["days"])]
    else:
        grouping = "provider" if by == "provider" else "model"
        lines += ["", f"The last {plural(len(report['days']), 'day')} by {grouping}:"]
        for row in report["rows"]:
            name = row["provider"] if by == "provider" else f"{row['provider']:<18} {row['model']}"
            lines.append(f"  {name:<59} ${row['spent_usd']:.4f}  ({plural(row['images'], 'image')})")
        if not report["rows"]:
            lines.append("  nothing was spent")
    rows = month["by_provider_model"]
    if rows and "by" not in report:
        lines += ["", "This month by provider and model:"]
        lines += [f"  {row['provider']:<18} {row['model']:<40} ${row['spent_usd']:.4f}  "
                  f"({plural(row['images'], 'image')})" for row in rows]
    return "\n".join(lines)
