"""Words for two audiences, and a person's amounts and plurals: pure functions, tested as tables."""

from __future__ import annotations

import pytest

from flux_klein_mcp.errors import InputError
from flux_klein_mcp.words import arg, closest, either, for_cli, for_mcp, item, plural, rendered, tool, usd


@pytest.mark.parametrize(("text", "mcp", "cli"), [
    (f"Use {arg('tier', 'low')}.", "Use tier='low'.", "Use --tier low."),
    (f"{arg('aspect_ratio')} is wrong", "aspect_ratio is wrong", "--aspect-ratio is wrong"),
    (f"{arg('n')} must be", "n must be", "-n must be"),
    (f"{arg('prompt')} is empty", "prompt is empty", "the prompt is empty"),
    (f"{item('images', 1)}: missing", "images[1]: missing", "--image number 2: missing"),
    (f"use {tool('compose')}", "use compose_images", "use `flux-klein-mcp compose`"),
    (either(f"call {tool('edit')}", "run it"), "call edit_image", "run it"),  # a part inside a part
    ("plain \ufdd1 text\ufdd0", "plain  text", "plain  text"),  # stray marks (from elsewhere) are dropped
])
def test_each_audience_reads_its_own_side(text, mcp, cli):
    assert (for_mcp(text), for_cli(text)) == (mcp, cli)


def test_an_error_is_the_agents_text_and_keeps_both_sides():
    error = InputError(f"{arg('seed')} must be a whole number")
    assert str(error) == "seed must be a whole number" and error.for_cli() == "--seed must be a whole number"
    assert InputError(f"{error.raw}, got -1.").for_cli() == "--seed must be a whole number, got -1."


def test_values_are_rendered_everywhere_inside():
    assert rendered({arg("n"): [arg("seed"), 3, None]}, for_cli) == {"-n": ["--seed", 3, None]}


@pytest.mark.parametrize(("amount", "shown"), [(0.014, "$0.014"), (0.0085, "$0.0085"), (0.04, "$0.04"),
                                                (5, "$5.00"), (0.056, "$0.056"), (0.0, "$0.00"), (-0.0, "$0.00"),
                                                (1e-9, "$0.00"), (12.5, "$12.50"), (0.000001, "$0.000001")])
def test_amounts_read_as_a_person_writes_them(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize(("count", "shown"), [(0, "0 images"), (1, "1 image"), (4, "4 images")])
def test_plurals(count, shown):
    assert plural(count, "image") == shown


@pytest.mark.parametrize(("value", "guess"), [("openroutr", "openrouter"), ("OpenRouter", "openrouter"),
                                              ("sandbx", "sandbox"), ("midjourney", None)])
def test_the_closest_choice(value, guess):
    assert closest(value, ["openrouter", "empiriolabs", "aigateway", "sandbox"]) == guess
