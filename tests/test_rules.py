"""The skill's rules as pure functions: payloads per model, aspect ratios, seeds, prompt shortening, prices."""

from __future__ import annotations

import pytest

from flux_klein_mcp.errors import InputError
from flux_klein_mcp.pricing import list_price, total
from flux_klein_mcp.providers.openrouter import build_payload
from flux_klein_mcp.request import ImageRequest, InputImage
from flux_klein_mcp.rules import (
    ASPECT_RATIOS,
    FLUX_FORBIDDEN_KEYS,
    MODEL_RULES,
    OPENROUTER_SIZES,
    check_flux_payload,
    prompt_text,
    seeds_for,
    shorten_prompt,
)

LOW, HIGH = MODEL_RULES["low"], MODEL_RULES["high"]
PNG_URL = "data:image/png;base64,iVBORw0KGgo="


@pytest.mark.parametrize(
    ("tier", "aspect_ratio", "seed", "expected"),
    [
        ("low", None, None, {"model": "black-forest-labs/flux.2-klein-4b",
                             "messages": [{"role": "user", "content": "a fox"}]}),
        ("low", "16:9", None, {"model": "black-forest-labs/flux.2-klein-4b",
                               "messages": [{"role": "user", "content": "a fox, aspect ratio 16:9"}]}),
        ("low", "1:1", 7, {"model": "black-forest-labs/flux.2-klein-4b",
                           "messages": [{"role": "user", "content": "a fox, aspect ratio 1:1"}], "seed": 7}),
        ("high", "9:16", None, {"model": "bytedance-seed/seedream-4.5",
                                "messages": [{"role": "user", "content": "a fox"}],
                                "modalities": ["image"], "image_config": {"aspect_ratio": "9:16"}}),
        ("high", None, 3, {"model": "bytedance-seed/seedream-4.5",
                           "messages": [{"role": "user", "content": "a fox"}], "modalities": ["image"], "seed": 3}),
    ],
)
def test_payload_table(tier, aspect_ratio, seed, expected):
    assert build_payload(MODEL_RULES[tier], "a fox", aspect_ratio, (), seed) == expected


@pytest.mark.parametrize("aspect_ratio", [None, *ASPECT_RATIOS])
@pytest.mark.parametrize("inputs", [0, 1, 4])
def test_flux_payloads_never_carry_forbidden_keys(aspect_ratio, inputs):
    images = tuple(InputImage(PNG_URL, "x.png") for _ in range(inputs))
    payload = build_payload(LOW, "a fox", aspect_ratio, images, 1)
    assert not FLUX_FORBIDDEN_KEYS & payload.keys()
    text = payload["messages"][0]["content"]
    text = text if isinstance(text, str) else text[0]["text"]
    assert text.endswith(f", aspect ratio {aspect_ratio}") == (aspect_ratio is not None)


def test_edit_payload_puts_text_first_then_one_part_per_image():
    images = (InputImage(PNG_URL, "a.png"), InputImage("https://example.com/b.jpg", "https://example.com/b.jpg"))
    payload = build_payload(LOW, "blend them", "3:2", images, None)
    assert payload["messages"][0]["content"] == [
        {"type": "text", "text": "blend them, aspect ratio 3:2"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}},
    ]


@pytest.mark.parametrize("key", sorted(FLUX_FORBIDDEN_KEYS))
def test_flux_guard_refuses_each_forbidden_key(key):
    with pytest.raises(AssertionError, match=key):
        check_flux_payload({"model": "black-forest-labs/flux.2-klein-4b", key: 1})


@pytest.mark.parametrize(
    ("prompt", "aspect_ratio", "expected"),
    [
        ("a fox", "4:5", "a fox, aspect ratio 4:5"),
        ("a fox.", "4:5", "a fox, aspect ratio 4:5"),
        ("a fox, aspect ratio 4:5", "4:5", "a fox, aspect ratio 4:5"),  # never doubled
        ("a fox", None, "a fox"),
    ],
)
def test_prompt_text_appends_the_aspect_ratio_for_flux(prompt, aspect_ratio, expected):
    assert prompt_text(prompt, aspect_ratio, LOW) == expected


def test_prompt_text_leaves_the_prompt_alone_for_seedream():
    assert prompt_text("a fox", "16:9", HIGH) == "a fox"


def test_every_aspect_ratio_has_a_documented_size_of_about_one_megapixel():
    assert set(OPENROUTER_SIZES) == set(ASPECT_RATIOS)
    for ratio, (w, h) in OPENROUTER_SIZES.items():
        a, b = (int(x) for x in ratio.split(":"))
        assert abs(w / h - a / b) < 0.05, ratio
        assert 0.95e6 < w * h <= 1024 * 1024


@pytest.mark.parametrize(
    ("seed", "n", "expected"),
    [(None, 3, [None, None, None]), (10, 1, [10]), (10, 4, [10, 11, 12, 13]), (2**32 - 1, 2, [2**32 - 1, 0])],
)
def test_seeds_count_up_from_the_given_seed(seed, n, expected):
    assert seeds_for(seed, n) == expected


LONG = (
    "A cozy reading nook in a Scandinavian apartment, soft morning light through linen curtains, "
    "a knitted blanket on an oak armchair (with a cat sleeping on it), a stack of books, "
    "muted sage and cream palette, shot on 35mm film, shallow depth of field, hyperrealistic detail."
)


@pytest.mark.parametrize(
    "prompt",
    [LONG, "word " * 300, "x" * 500, "A red fox in snow, looking at the camera, golden hour, telephoto lens"],
)
def test_shortened_prompt_is_shorter_keeps_the_subject_and_drops_detail(prompt):
    short = shorten_prompt(prompt)
    assert 0 < len(short) < len(prompt.strip())
    assert len(short) <= 200
    assert prompt.startswith(short.split()[0])  # the subject, which comes first, stays


def test_shortened_prompt_drops_parentheticals_and_trailing_clauses():
    short = shorten_prompt(LONG)
    assert "cat" not in short
    assert short.startswith("A cozy reading nook in a Scandinavian apartment")


def test_a_tiny_prompt_is_kept_as_it_is():
    assert shorten_prompt("a fox") == "a fox"


@pytest.mark.parametrize(
    ("provider", "model", "size", "expected"),
    [
        ("openrouter", "black-forest-labs/flux.2-klein-4b", (1024, 1024), 0.014),
        ("openrouter", "black-forest-labs/flux.2-klein-4b", (1344, 768), 0.014),
        ("openrouter", "black-forest-labs/flux.2-klein-4b", (1536, 1536), 0.016),  # 2.25 MP: the part counts
        ("openrouter", "black-forest-labs/flux.2-klein-4b", (2048, 2048), 0.017),
        ("openrouter", "bytedance-seed/seedream-4.5", (2048, 2048), 0.04),
        ("empiriolabs", "flux-2-klein-4b", (1024, 1024), 0.0085),
        ("openai-compatible", "flux-2-klein-4b", (1024, 1024), None),  # same id, unknown endpoint: no price
        ("aigateway", "black-forest-labs/flux-2-klein-4b", (1024, 1024), None),
        ("openrouter", "someone/unknown-model", (1024, 1024), None),
    ],
)
def test_list_price(provider, model, size, expected):
    assert list_price(provider, model, *size) == expected


def test_total_is_unknown_when_any_part_is():
    assert total([0.014, 0.014]) == 0.028
    assert total([0.014, None]) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x" * 4001}, "the limit is 4000"),
        ({"aspect_ratio": "7:3"}, "aspect_ratio '7:3' is not supported"),
        ({"n": 0}, "n must be a whole number from 1 to 4"),
        ({"n": 5}, "n must be a whole number from 1 to 4"),
        ({"seed": -1}, "seed must be a whole number"),
        ({"tier": "ultra"}, "tier must be 'low' or 'high'"),
        ({"operation": "edit", "image_refs": ()}, "edit_image takes exactly one image"),
        ({"operation": "compose", "image_refs": ("a.png",)}, "images must hold 2 to 4"),
        ({"operation": "compose", "image_refs": ("a",) * 5}, "images must hold 2 to 4"),
        ({"operation": "edit", "image_refs": ("a.png",), "n": 2}, "n applies to generate_image only"),
    ],
)
def test_bad_requests_are_refused_naming_the_parameter(kwargs, message):
    args = {"operation": "generate", "prompt": "a fox", **kwargs}
    with pytest.raises(InputError, match=message):
        ImageRequest(**args)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((896, 1152), "4:5"), ((1000, 1000), "1:1"), ((1920, 1080), "16:9"), ((1080, 1920), "9:16"),
     ((3000, 1000), "21:9"), ((600, 400), "3:2"), ((4032, 3024), "4:3"), ((10, 3000), "9:16")],
)
def test_nearest_aspect_ratio(size, expected):
    from flux_klein_mcp.rules import nearest_aspect_ratio

    assert nearest_aspect_ratio(*size) == expected
