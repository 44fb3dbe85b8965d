"""Arguments that break a tool's schema, answered in the server's own words: the parameter, what is allowed, what
to do. The SDK checks arguments against the schema before a tool runs and would otherwise answer with pydantic's
text ("1 validation error for generate_imageArguments ... errors.pydantic.dev"). Codex and OpenAI strict mode strip
the schema's bounds from what the model sees, so this message is where the model learns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .words import closest


def explain(tool: str, schema: Mapping[str, Any], error: ValidationError) -> str:
    """One sentence per bad parameter, in the words of the checks the pipeline makes itself (the server's exit
    scrubs secrets from the values it quotes)."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    sentences: dict[str, None] = {}
    for problem in error.errors():
        parameter = str(problem["loc"][0]) if problem["loc"] else ""
        if parameter not in properties:
            sentences[f"{parameter or 'The arguments'} is not a parameter of {tool}; it takes "
                      f"{', '.join(properties)}."] = None
            continue
        prop = properties[parameter]
        if problem["type"] == "missing":
            sentences[f"{parameter} is required: {_first_sentence(prop)}"] = None
        else:
            given = problem.get("input")
            guess = closest(given, _enum(prop)) if isinstance(given, str) else None
            hint = f" Did you mean {guess!r}?" if guess else ""
            sentences[f"{parameter} must be {allowed(prop)}, got {_shown(given)}.{hint}"] = None
    names = ", ".join(dict.fromkeys(str(p["loc"][0]) for p in error.errors() if p["loc"]))
    return " ".join(sentences) + f" Fix {names or 'the arguments'} and call {tool} again."


def allowed(prop: Mapping[str, Any]) -> str:
    """What a schema property accepts, in words ("a whole number from 1 to 4", "one of: 1:1, 2:3 ...")."""
    options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    words = " or ".join(_kind(option) for option in options) or "a value"
    return words + (", or left out" if len(options) < len(prop.get("anyOf", [prop])) else "")


def _enum(prop: Mapping[str, Any]) -> list[str]:
    return [str(value) for option in prop.get("anyOf", [prop]) for value in option.get("enum", [])]


def _kind(prop: Mapping[str, Any]) -> str:
    if "enum" in prop:
        return "one of: " + ", ".join(str(value) for value in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    kind = prop.get("type")
    if kind == "integer":
        return "a whole number" + _bounds(prop.get("minimum"), prop.get("maximum"))
    if kind == "number":
        return "a number" + _bounds(prop.get("minimum"), prop.get("maximum"))
    if kind == "string":
        longest = prop.get("maxLength")
        return "text" + (f" of at most {longest} characters" if longest is not None else "")
    if kind == "array":
        low, high = prop.get("minItems"), prop.get("maxItems")
        count = f"{low} to {high}" if low is not None and high is not None else "any number of"
        each = (prop.get("items") or {}).get("type")
        return f"a list of {count} {'strings' if each == 'string' else 'items'}"
    if kind == "boolean":
        return "true or false"
    return str(kind or "a value")


def _bounds(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    return f" of at most {high}" if high is not None else ""


def _first_sentence(prop: Mapping[str, Any]) -> str:
    text = str(prop.get("description") or "see the tool's description").strip()
    return text.split(". ")[0].rstrip(".") + "."


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
