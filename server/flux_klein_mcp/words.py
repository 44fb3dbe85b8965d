"""Words for the two ways the server is used: an agent calling the MCP tools, and a person at the command line.

Most of a message is the same for both. Where they need different words (a parameter the agent passes is a flag
the person types; "tell the user" means nothing on a terminal), that part is written for each with `either`,
which marks it inline, so a message still composes with f-strings and `+`. Each exit renders its audience's side:
`for_mcp` (tool results, logs of the server; also what `str()` of an error gives) and `for_cli` (everything the
command line prints). A marked part may hold others (`arg` inside `either`); no part survives either rendering.

The small helpers a person's sentence needs live here too: `plural`, `usd`, `closest`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Unicode noncharacters, set aside for a program's internal use: no text of ours holds them (a private-use character
# might be an icon in someone's prompt), and a stray one is dropped when rendering.
_OPEN, _OR, _CLOSE = "\ufdd0", "\ufdd1", "\ufdd2"
_PART = re.compile(f"{_OPEN}([^{_OPEN}-{_CLOSE}]*){_OR}([^{_OPEN}-{_CLOSE}]*){_CLOSE}")
_MARKS = re.compile(f"[{_OPEN}-{_CLOSE}]")


def either(mcp: str, cli: str) -> str:
    """A part of a message with the words for each audience."""
    return f"{_OPEN}{mcp}{_OR}{cli}{_CLOSE}"


def for_mcp(text: str) -> str:
    return _render(text, 1)


def for_cli(text: str) -> str:
    return _render(text, 2)


def _render(text: str, side: int) -> str:
    if _OPEN in text:
        found = 1
        while found:  # innermost parts first
            text, found = _PART.subn(lambda part: part.group(side), text)
    return _MARKS.sub("", text)


def well_formed(text: str) -> str:
    """`text` as UTF-8 can carry it: each unpaired UTF-16 surrogate becomes U+FFFD (a pair joins into its character).
    Python strings hold them where text came from outside: a JSON file's `"\\ud800"` escape, a provider's reply, a
    file name of bytes that are not UTF-8. Every transport writes UTF-8, and a message it cannot encode stops the
    stdio server, so text from files and providers passes through this on its way out."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def rendered(value: Any, render: Callable[[str], str]) -> Any:
    """A JSON-like value with every string in it rendered (a JSON encoder would hide the marks behind escapes)."""
    if isinstance(value, str):
        return render(value)
    if isinstance(value, Mapping):
        return {render(str(k)): rendered(v, render) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rendered(v, render) for v in value]
    return value


def mcp_json(value: Any) -> str:
    """A JSON text block as the model reads it (NaN and Infinity are refused: they are not JSON)."""
    return json.dumps(rendered(value, for_mcp), indent=2, allow_nan=False)


def arg(name: str, value: object = None) -> str:
    """A tool parameter, optionally with a value, as each audience writes it: `aspect_ratio='3:2'` for the agent,
    `--aspect-ratio 3:2` for the person."""
    flag = {"n": "-n", "images": "--image", "prompt": "the prompt"}.get(name, "--" + name.replace("_", "-"))
    if value is None:
        return either(name, flag)
    return either(f"{name}={value!r}", f"{flag} {value}")


def item(name: str, index: int) -> str:
    """One of several images passed in one parameter: `images[1]`, or the second `--image`."""
    return either(f"{name}[{index}]", f"--image number {index + 1}")


def tool(operation: str) -> str:
    """The tool for an operation, or the command that does the same."""
    return either("compose_images" if operation == "compose" else f"{operation}_image", f"`flux-klein-mcp {operation}`")


#: Where a person changes the server's environment, and what makes it take effect.
SET_IT = either("in the MCP client's config for the server, then restart it", "in your shell")
RESTART = either(", then restart the server", "")


def out_of_credits(where: str) -> str:
    """What to do when the provider's account is out of credits (402): stop, in each audience's terms."""
    return either(f"STOP: do not retry, and do not switch to another tier, model or provider. Tell the user to add "
                  f"credits at {where}, then ask again.", f"Add credits at {where}, then run it again.")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 image`, `4 images`."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def usd(amount: float) -> str:
    """An amount as a person writes it: $0.014, $0.0085, $0.04, $5.00 (never $-0)."""
    text = f"{amount if round(amount, 6) else 0.0:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The choice `value` was most likely meant to be (a typo, another case), if any is close."""
    options = list(choices)
    found = difflib.get_close_matches(value.strip().lower(), [o.lower() for o in options], n=1, cutoff=0.6)
    return next((o for o in options if o.lower() == found[0]), None) if found else None
