"""`flux-klein-mcp doctor`: is each provider's key set and valid, can the output folder be written, and which
provider would a call use. Key checks cost nothing (OpenRouter `GET /key`, the gateways `GET /models`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from . import pricing
from .config import Settings
from .errors import FluxKleinError
from .providers import KeyCheck, Provider
from .runtime import Runtime
from .spend import LedgerError
from .words import usd


@dataclass(frozen=True)
class Row:
    provider: str
    key_variable: str
    status: str
    detail: str
    #: limit, usage and limit_remaining in USD, where the provider tells them for free (OpenRouter).
    credit: dict[str, float | None] | None = None


async def diagnose(runtime: Runtime) -> dict[str, Any]:
    """Everything `doctor` reports, as data (the table and `--json` both print this)."""
    providers = list(runtime.providers)
    checks: dict[str, KeyCheck] = {}

    async def check(provider: Provider) -> None:
        try:
            checks[provider.name] = await provider.check_key(runtime.http)
        except Exception as exc:  # a check must never take the whole report down
            checks[provider.name] = KeyCheck("unreachable", f"the check failed: {type(exc).__name__}")

    async with anyio.create_task_group() as group:
        for provider in providers:
            group.start_soon(check, provider)
    rows = [Row(p.name, p.key_variable or "-", checks[p.name].status, checks[p.name].detail, checks[p.name].credit)
            for p in providers]
    warnings = [warning for p in providers if (warning := _low_credit(p, checks[p.name].credit))]
    try:
        folder: str | None = str(await anyio.to_thread.run_sync(lambda: runtime.store.folder))
        folder_note = runtime.store.note or "writable"
    except FluxKleinError as exc:
        folder, folder_note = None, exc.raw
    ledger_where, ledger_note, ledger_ok = await anyio.to_thread.run_sync(_probe_ledger, runtime)
    from .oauth.discovery import report as sign_in_report

    sign_in = await sign_in_report(runtime.settings, runtime.http)
    if sign_in is not None and sign_in["status"] != "ok":
        warnings.append(f"Sign-in (serve --http): {sign_in['detail']}. Until this is fixed, the HTTP server "
                        + ("does not start." if sign_in["status"] == "misconfigured" else
                           "answers every request 503, since no token can be checked."))
    state = "ready"
    paid = False
    try:
        chosen = runtime.providers.choose()
        paid = chosen.name != "sandbox"
        choice, usable = chosen.name, checks[chosen.name].status == "ok"
        why = "FLUX_KLEIN_PROVIDER" if runtime.settings.provider else f"the first key set, {chosen.key_variable}"
        choice_note = f"{chosen.name} (chosen by {why})"
        if not usable:
            status = checks[chosen.name].status
            state = "unreachable" if status == "unreachable" else "key rejected"
            choice_note += (" - but it could not be reached (check the network and its base URL)"
                            if status == "unreachable" else f" - but its key is {status}")
    except FluxKleinError as exc:
        choice, usable, choice_note = None, False, exc.raw
        state = "nothing configured" if runtime.providers.auto_choice() is None else "misconfigured"
    if usable and folder is None:
        state = "output folder"
    elif usable and paid and not ledger_ok:  # every paid call is refused before it is sent
        state, usable = "ledger", False
    return {
        "state": state,
        "providers": [asdict(row) for row in rows],
        "output_dir": folder,
        "output_dir_status": folder_note,
        "ledger": ledger_where,
        "ledger_status": ledger_note,
        "provider_for_calls": choice,
        "provider_note": choice_note,
        "usable": usable and folder is not None,
        "warnings": warnings,
        "sign_in": sign_in,
    }


def _probe_ledger(runtime: Runtime) -> tuple[str, str, bool]:
    """Where the ledger is, and whether a charge could be written now: proved by a real write, rolled back."""
    where = str(runtime.settings.ledger)
    try:
        ledger = runtime.spend.ledger
        where = ledger.where
        ledger.probe()
    except LedgerError as exc:
        return where, f"cannot be written: {exc}; set FLUX_KLEIN_LEDGER", False
    return where, "writable (a test write was made and rolled back)", True


def _low_credit(provider: Provider, credit: dict[str, float | None] | None) -> str | None:
    """A warning when what the key has left would not pay for one image."""
    left = (credit or {}).get("limit_remaining")
    price, _ = pricing.worst_case(provider.name, provider.model_for("low"))
    if left is None or left >= price:
        return None
    return (f"{provider.label}: the key has {usd(left)} left on its limit, less than one image ({usd(price)}). "
            f"Calls will fail with 402 until credit is added or the limit raised ({provider.billing_url}).")


def render(report: dict[str, Any]) -> str:
    rows = [("PROVIDER", "KEY VARIABLE", "STATUS", "DETAIL")]
    rows += [(r["provider"], r["key_variable"], r["status"], r["detail"]) for r in report["providers"]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
             for row in rows]
    lines += [
        "",
        f"Output folder:  {report['output_dir'] or '-'} ({report['output_dir_status']})",
        f"Spend ledger:   {report['ledger']} ({report['ledger_status']})",
        f"Calls would use: {report['provider_note']}",
    ]
    sign_in = report.get("sign_in")
    if sign_in is not None and "issuer" in sign_in:
        scopes = " ".join(sign_in["scopes"]) or "none required"
        lines.append(f"Sign-in:        issuer {sign_in['issuer']}, audience {sign_in['audience']}, scopes: {scopes} "
                     f"({sign_in['status']}: {sign_in['detail']})")
    lines += [f"Warning: {warning}" for warning in report["warnings"]]
    if not report["usable"]:
        lines.append(VERDICTS.get(report["state"], VERDICTS["misconfigured"]))
    return "\n".join(lines)


#: The last line of the report when calls would not work, by what is wrong.
VERDICTS = {
    "nothing configured": "Nothing is configured yet: set a provider's key (above), or FLUX_KLEIN_PROVIDER=sandbox "
                          "to try the tools offline.",
    "unreachable": "A key is set, but its provider could not be reached: the key may well be fine. Check the "
                   "network (a proxy or firewall) and the provider's base-URL variable, then run doctor again.",
    "key rejected": "A key is set, but its provider rejected it: set the key variable shown to a valid key.",
    "misconfigured": "The set-up has a problem: fix what is shown above, or set FLUX_KLEIN_PROVIDER=sandbox to try "
                     "the tools offline.",
    "output folder": "The provider is ready, but the output folder cannot take files: see above.",
    "ledger": "The provider is ready, but the spend ledger cannot record charges, so every paid call is refused "
              "before it is sent: see above.",
}


async def run_doctor(as_json: bool, show: Callable[[str], None], show_json: Callable[[Any], None]) -> int:
    """Print the report as a table (through `show`) or JSON (`show_json`); 1 when nothing usable is configured."""
    async with Runtime.open(Settings.from_env()) as runtime:
        report = await diagnose(runtime)
    if as_json:
        show_json(report)
    else:
        show(render(report))
    return 0 if report["usable"] else 1
