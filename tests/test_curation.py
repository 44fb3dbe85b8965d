"""The view's changes to the output folder (pick, hide, restore) one at a time, across threads and processes; moves
relative to the folders' descriptors that put back what they moved when they fail; a name is free only when every
file of it is. (The races themselves, as a second host would run them: test_attack_view.py.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flux_klein_mcp import curate, moves
from flux_klein_mcp.errors import StorageError

NAME = "20260101-120000-kite"


def saved(folder: Path, name: str = NAME, sidecar: str | None = '{"prompt": "a kite"}') -> Path:
    image = folder / f"{name}.png"
    image.write_bytes(b"pixels of " + name.encode())
    if sidecar is not None:
        image.with_suffix(".json").write_text(sidecar)
    return image


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


HOLDER = """
import sys
from pathlib import Path
from flux_klein_mcp import moves
with moves.changing(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_a_change_waits_for_another_process_then_is_refused_in_words_and_changes_nothing(tmp_path, monkeypatch):
    """Two servers on one folder (two hosts, replicas): while one is changing it, the other's pick waits, and after
    WAIT_S is refused, saying so; once the first is done, the same pick goes through."""
    image = saved(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(moves, "WAIT_S", 0.3)
        before = files(tmp_path)
        for change in (lambda: curate.set_picked(tmp_path, str(image), True),
                       lambda: curate.hide(tmp_path, str(image))):
            with pytest.raises(StorageError, match="still under way .* nothing was changed. Try again in a moment"):
                change()
        assert files(tmp_path) == before
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "released\n"
    finally:
        holder.kill()
        holder.wait()
    curate.set_picked(tmp_path, str(image), True)
    assert json.loads(image.with_suffix(".json").read_text()) == {"prompt": "a kite", "picked": True}


def test_a_move_that_fails_half_way_puts_back_what_it_moved_and_leaves_no_reservation(tmp_path, monkeypatch):
    image = saved(tmp_path)
    before = files(tmp_path)
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(src).name == image.name and Path(dst).name == image.name:  # the image's move (not the put-back)
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(StorageError, match=f"Could not move {image.name} into .*Input/output error.*it is still in"):
        curate.hide(tmp_path, str(image))
    assert files(tmp_path) == before  # the sidecar, already moved, is back; the image never left
    assert list((tmp_path / ".hidden").iterdir()) == []  # no reserved name left behind


def test_a_move_never_gives_an_image_a_name_another_file_of_that_name_holds(tmp_path):
    """An image and its sidecar go where no image of any format, nor a sidecar, has the name: a `.jpg` of that name
    without a sidecar would otherwise take this image's sidecar for its own."""
    image = saved(tmp_path)
    hidden = tmp_path / ".hidden"
    hidden.mkdir()
    (hidden / f"{NAME}.jpg").write_bytes(b"another image, no sidecar")
    (hidden / f"{NAME}_2.json").write_text('{"prompt": "an orphaned sidecar"}')
    moved = curate.hide(tmp_path, str(image))
    assert moved == hidden / f"{NAME}_3.png"
    assert json.loads(moved.with_suffix(".json").read_text()) == {"prompt": "a kite"}


def test_the_hidden_folder_is_opened_once_refusing_a_link(tmp_path):
    outside = tmp_path / "elsewhere"
    folder = tmp_path / "output"
    outside.mkdir()
    folder.mkdir()
    image = saved(folder)
    (folder / ".hidden").symlink_to(outside)
    with pytest.raises(StorageError, match="is not a folder .* Move it away"):
        curate.hide(folder, str(image))
    with pytest.raises(StorageError, match="is not a folder"):
        curate.restore(folder, str(folder / ".hidden" / image.name))
    assert list(outside.iterdir()) == [] and image.exists()


def test_a_refused_change_creates_nothing(tmp_path):
    """The lock is the folder itself (no lock file), and the hidden folder is made only by a hide: a pick, or a
    restore with nothing hidden, leaves the folder exactly as it was."""
    image = saved(tmp_path)
    curate.set_picked(tmp_path, str(image), True)
    with pytest.raises(Exception, match="there is no"):
        curate.restore(tmp_path, str(tmp_path / ".hidden" / image.name))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{NAME}.json", f"{NAME}.png"]


@pytest.mark.parametrize(("value", "says"), [("NaN", "NaN or Infinity"), ("-Infinity", "NaN or Infinity"),
                                             ('"\\udfff"', "unpaired UTF-16 surrogate")])
def test_a_pick_names_what_in_the_sidecar_json_cannot_write_back(tmp_path, value, says):
    image = saved(tmp_path, sidecar='{"prompt": "a kite", "odd": ' + value + "}")
    before = files(tmp_path)
    with pytest.raises(StorageError, match=f"{image.with_suffix('.json')} holds .*{says}.*the pick was not kept"):
        curate.set_picked(tmp_path, str(image), True)
    assert files(tmp_path) == before


def test_a_failed_move_removes_only_what_is_still_its_own_reservation(tmp_path, monkeypatch):
    """The clean-up after a failure unlinks a reserved name only while it is the very file the move created: one
    that something else (a file manager, a program that does not take the lock) put in its place meanwhile stays."""
    image = saved(tmp_path)
    hidden = tmp_path / ".hidden"
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(src).name == image.name and Path(dst).name == image.name:
            (hidden / "theirs").write_bytes(b"someone else's image")
            real_replace(hidden / "theirs", hidden / image.name)  # over the move's reservation, by another hand
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(StorageError, match="it is still in"):
        curate.hide(tmp_path, str(image))
    assert (hidden / image.name).read_bytes() == b"someone else's image"
    assert image.read_bytes() == b"pixels of " + NAME.encode() and image.with_suffix(".json").exists()
