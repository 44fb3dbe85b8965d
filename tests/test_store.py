"""The output folder: names, no overwriting, whole-or-nothing writes, and the per-user fallback."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path

import pytest

from flux_klein_mcp.errors import StorageError
from flux_klein_mcp.store import Store, file_stem, name_stem, slugify

NOW = datetime(2026, 11, 21, 9, 5, 7)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A red fox in snow", "a-red-fox-in-snow"),
        ("Café crème — 100% délicieux!", "cafe-creme-100-delicieux"),
        ("../../etc/passwd", "etc-passwd"),
        ("   ", "image"),
        ("日本語だけ", "image"),
        ("word " * 40, "word-" * 8 + "word"),  # cut at a word, at most 48 characters
        ("x" * 100, "x" * 48),
    ],
)
def test_slugify(text, expected):
    assert slugify(text) == expected


@pytest.mark.parametrize(
    ("filename", "prompt", "expected"),
    [
        (None, "A logo for Acme", "a-logo-for-acme"),
        ("hero banner", "ignored", "hero-banner"),
        ("hero.PNG", "ignored", "hero"),
        ("../../../root/.ssh/id_rsa", "ignored", "id-rsa"),
        ("C:\\Users\\me\\evil.jpg", "ignored", "evil"),
        ("/etc/passwd", "ignored", "passwd"),
        ("", "fallback prompt", "fallback-prompt"),
        ("...", "ignored", "image"),
    ],
)
def test_name_stem_keeps_only_a_safe_slug(filename, prompt, expected):
    assert name_stem(filename, prompt) == expected


@pytest.mark.parametrize(
    ("index", "expected"), [(None, "20261121-090507-fox"), (1, "20261121-090507-fox-1"), (4, "20261121-090507-fox-4")]
)
def test_file_stem(index, expected):
    assert file_stem(NOW, "fox", index) == expected


def store(folder: Path) -> Store:
    return Store(folder, explicit=True, fallback=folder / "never")


def test_save_writes_image_and_sidecar_and_nothing_else(tmp_path):
    saved = store(tmp_path).save(b"PNGDATA", "png", "stem", {"prompt": "p"})
    assert saved.path == tmp_path / "stem.png" and saved.path.read_bytes() == b"PNGDATA"
    assert json.loads(saved.sidecar.read_text()) == {"prompt": "p"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.json", "stem.png"]


def test_an_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "stem.png").write_bytes(b"precious")
    (tmp_path / "stem_2.json").write_text("{}")  # a stray sidecar also blocks its name
    saved = store(tmp_path).save(b"new", "png", "stem", {})
    assert (tmp_path / "stem.png").read_bytes() == b"precious"
    assert (tmp_path / "stem_2.json").read_text() == "{}"
    assert saved.path.name == "stem_3.png" and saved.sidecar.name == "stem_3.json"
    assert not (tmp_path / "stem_2.png").exists()


def test_concurrent_saves_of_one_name_all_land_under_distinct_names(tmp_path):
    target = store(tmp_path)
    results: list[Path] = []
    barrier = threading.Barrier(16)

    def save(i: int) -> None:
        barrier.wait()
        results.append(target.save(f"image {i}".encode(), "png", "same", {"i": i}).path)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 16
    contents = sorted(p.read_bytes() for p in results)
    assert contents == sorted(f"image {i}".encode() for i in range(16))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores permissions")
def test_an_unwritable_explicit_folder_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(StorageError, match="FLUX_KLEIN_OUTPUT_DIR"):
        _ = store(locked / "out").folder


def test_an_unusable_default_folder_falls_back_to_the_per_user_folder_and_says_so(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")  # mkdir below it fails even for root
    fallback = tmp_path / "user" / "output"
    target = Store(blocker / "output", explicit=False, fallback=fallback)
    assert target.folder == fallback.resolve()
    assert target.note is not None and str(fallback.resolve()) in target.note and "FLUX_KLEIN_OUTPUT_DIR" in target.note


def test_an_unusable_explicit_folder_does_not_fall_back(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    target = Store(blocker / "output", explicit=True, fallback=tmp_path / "user")
    with pytest.raises(StorageError, match="FLUX_KLEIN_OUTPUT_DIR"):
        _ = target.folder
    assert not (tmp_path / "user").exists()


def test_discard_removes_image_and_sidecar(tmp_path):
    saved = store(tmp_path).save(b"x", "png", "gone", {})
    Store.discard(saved)
    assert list(tmp_path.iterdir()) == []


def test_a_sidecar_that_cannot_be_written_takes_its_image_with_it(tmp_path, monkeypatch):
    real_link = os.link
    calls = []

    def link(src, dst, *args, **kwargs):  # the OS edge: the second link (the sidecar's) hits a full disk
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(StorageError, match="disk is full"):
        store(tmp_path).save(b"PNGDATA", "png", "stem", {"prompt": "p"})
    assert list(tmp_path.iterdir()) == []
