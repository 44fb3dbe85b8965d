"""Property-based tests: file names, prompts and paths hold their rules for any input hypothesis can think of."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_klein_mcp.errors import InputError
from flux_klein_mcp.inputs import InputPolicy, resolve_input
from flux_klein_mcp.request import ImageRequest
from flux_klein_mcp.rules import ASPECT_RATIOS, MAX_PROMPT_CHARS, MODEL_RULES, prompt_text, shorten_prompt
from flux_klein_mcp.store import SLUG_MAX, file_stem, name_stem
from tests.fakes.core import png

SAFE_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(filename=st.one_of(st.none(), st.text()), prompt=st.text(min_size=1))
def test_file_names_are_safe_slugs_that_stay_in_the_output_folder(filename, prompt):
    stem = name_stem(filename, prompt)
    assert SAFE_SLUG.fullmatch(stem) and len(stem) <= SLUG_MAX
    folder = Path(tempfile.gettempdir()) / "flux-out"
    target = folder / f"{file_stem(datetime(2026, 1, 2, 3, 4, 5), stem, 4)}.png"
    assert os.path.normpath(target).startswith(str(folder) + os.sep)
    assert target.parent == folder


@FAST
@given(filename=st.text(alphabet=st.sampled_from("./\\~:aZ09 -_\x00"), max_size=40))
def test_path_like_file_names_never_keep_a_separator(filename):
    stem = name_stem(filename, "fallback")
    assert "/" not in stem and "\\" not in stem and ".." not in stem and "\x00" not in stem


@FAST
@given(prompt=st.text(min_size=1, max_size=MAX_PROMPT_CHARS).filter(lambda p: any(c.isalnum() for c in p)),
       aspect_ratio=st.one_of(st.none(), st.sampled_from(ASPECT_RATIOS)))
def test_any_reasonable_prompt_is_accepted_and_gets_one_suffix(prompt, aspect_ratio):
    ImageRequest("generate", prompt, aspect_ratio)
    text = prompt_text(prompt, aspect_ratio, MODEL_RULES["low"])
    if aspect_ratio:
        suffix = f", aspect ratio {aspect_ratio}"
        assert text.endswith(suffix) and not text[: -len(suffix)].endswith(suffix)


@settings(max_examples=40, deadline=None, database=None)
@given(prompt=st.one_of(st.text(alphabet=" \t\n\r\u200b\u200e\ufeff\x08", max_size=20),
                        st.text(min_size=MAX_PROMPT_CHARS + 1, max_size=MAX_PROMPT_CHARS + 50)))
def test_empty_or_overlong_prompts_are_refused(prompt):
    with pytest.raises(InputError, match="prompt"):
        ImageRequest("generate", prompt)


@FAST
@given(prompt=st.text(min_size=1, max_size=MAX_PROMPT_CHARS).filter(lambda p: p.strip()))
def test_a_shortened_prompt_is_never_longer_and_never_empty(prompt):
    short = shorten_prompt(prompt)
    assert short.strip()
    assert len(short) <= min(len(prompt), 200)


# --- paths ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """allowed/ (the working directory) with an image, a subfolder and symlinks out; private/ outside."""
    root = tmp_path_factory.mktemp("tree")
    allowed, private = root / "allowed", root / "private"
    (allowed / "sub").mkdir(parents=True)
    private.mkdir()
    for folder in (allowed, allowed / "sub", private):
        (folder / "a.png").write_bytes(png(4, 4))
    (allowed / "out").symlink_to(private, target_is_directory=True)
    (allowed / "b.png").symlink_to(private / "a.png")
    (allowed / "sub" / "ok.png").symlink_to(allowed / "a.png")
    return root


SEGMENTS = st.sampled_from(["..", ".", "sub", "out", "private", "allowed", "a.png", "b.png", "ok.png", "", "x"])


@FAST
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=6), absolute=st.booleans(), as_uri=st.booleans())
def test_no_path_reads_outside_the_allowed_folders(tree, parts, absolute, as_uri):
    allowed = tree / "allowed"
    policy = InputPolicy.build(allowed, [], 10 * 1024 * 1024)
    relative = "/".join(parts)
    ref = str(allowed / relative) if absolute else relative
    if as_uri and absolute:
        ref = Path(ref).as_uri() if not relative.endswith("/") else ref
    try:
        image = resolve_input(ref, policy, "image")
    except InputError:
        return
    # Accepted: then the file really is inside the allowed folder, whatever the path said.
    full = Path(os.path.realpath(allowed / relative if not absolute else ref.removeprefix("file://")))
    assert full.is_relative_to(os.path.realpath(allowed))
    assert image.url.startswith("data:image/png;base64,")
