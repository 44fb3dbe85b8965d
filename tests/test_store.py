"""The output folder: names, no overwriting, whole-or-nothing writes, and the per-user fallback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from flux_klein_mcp import store as store_module
from flux_klein_mcp.errors import StorageError
from flux_klein_mcp.store import Store, file_stem, name_stem, slugify, sweep

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


# --- file systems without hard links (FAT/exFAT, some network shares) ---------------------------------------

@pytest.fixture
def no_hard_links(monkeypatch):
    """The OS edge of such a file system: every link() is refused with EPERM."""

    def refuse(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


def test_without_hard_links_a_save_still_lands_whole_and_never_overwrites(tmp_path, no_hard_links):
    (tmp_path / "stem.png").write_bytes(b"precious")
    saved = store(tmp_path).save(b"PNGDATA", "png", "stem", {"prompt": "p"})
    assert saved.path.name == "stem_2.png" and saved.path.read_bytes() == b"PNGDATA"
    assert json.loads(saved.sidecar.read_text()) == {"prompt": "p"}
    assert (tmp_path / "stem.png").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.png", "stem_2.json", "stem_2.png"]


def test_without_hard_links_concurrent_saves_land_under_distinct_names(tmp_path, no_hard_links):
    target = store(tmp_path)
    barrier = threading.Barrier(8)
    results: list[Path] = []

    def save(i: int) -> None:
        barrier.wait()
        results.append(target.save(f"image {i}".encode(), "png", "same", {"i": i}).path)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 8
    assert sorted(p.read_bytes() for p in results) == sorted(f"image {i}".encode() for i in range(8))
    assert len(list(tmp_path.iterdir())) == 16


def test_without_hard_links_a_failed_rename_leaves_no_reservation_behind(tmp_path, no_hard_links, monkeypatch):
    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StorageError, match="disk is full") as failure:
        store(tmp_path).save(b"PNGDATA" * 1000, "png", "stem", {"prompt": "p"})
    assert "Nothing was written" in str(failure.value)
    assert list(tmp_path.iterdir()) == []  # no 0-byte file under the final name, no temp file


# --- the folder is checked before every call's spend ------------------------------------------------------------

def test_a_vanished_folder_that_is_ours_is_made_again_before_the_call(tmp_path):
    target = Store(tmp_path / "out", explicit=True, fallback=tmp_path / "never")
    first = target.ready()
    shutil.rmtree(first)
    assert target.ready() == first and first.is_dir()


def test_a_vanished_folder_the_user_made_is_refused_before_the_call(tmp_path):
    mine = tmp_path / "pictures"
    mine.mkdir()
    target = Store(mine, explicit=True, fallback=tmp_path / "never")
    target.ready()
    shutil.rmtree(mine)
    with pytest.raises(StorageError, match="has disappeared") as refused:
        target.ready()
    assert "FLUX_KLEIN_OUTPUT_DIR" in str(refused.value) and not mine.exists()


def test_a_folder_replaced_by_a_file_is_refused_before_the_call(tmp_path):
    target = Store(tmp_path / "out", explicit=True, fallback=tmp_path / "never")
    folder = target.ready()
    folder.rmdir()
    folder.write_text("not a folder")
    with pytest.raises(StorageError, match="has disappeared"):
        target.ready()


def test_a_folder_out_of_files_is_refused_before_the_call(tmp_path, monkeypatch):
    """Free bytes but no free inodes: a save needs new files, so the call is refused before it is paid for (found by
    the third adversarial pass)."""
    from tests.test_spend import full_file_system_at

    target = Store(tmp_path / "out", explicit=True, fallback=tmp_path / "never")
    folder = target.ready()
    full_file_system_at(folder, monkeypatch, space=False, files=True)
    with pytest.raises(StorageError, match="room for only 1 more file") as refused:
        target.ready()
    assert "out of inodes" in str(refused.value) and "Nothing was sent" in str(refused.value)


def test_a_folder_replaced_by_a_link_elsewhere_is_refused_before_the_call(tmp_path):
    """Its files are readable inputs (and the view lists them): a link swapped in while the server runs must not
    open another folder to them (found by the third adversarial pass)."""
    private = tmp_path / "private"
    private.mkdir()
    (private / "20261121-120000-passport.png").write_bytes(b"x")
    target = Store(tmp_path / "out", explicit=True, fallback=tmp_path / "never")
    folder = target.ready()
    folder.rmdir()
    folder.symlink_to(private)
    for check in (target.ready, target.present):
        with pytest.raises(StorageError, match="now leads to") as refused:
            check()
        assert str(private) in str(refused.value) and "FLUX_KLEIN_OUTPUT_DIR" in str(refused.value)


def test_a_link_swapped_in_while_a_call_runs_gets_no_files(tmp_path):
    """Found by the fifth adversarial pass: the check ran only before the request, so a swap while the provider
    answered sent the image and sidecar into the link's target."""
    private = tmp_path / "private"
    private.mkdir()
    target = Store(tmp_path / "out", explicit=True, fallback=tmp_path / "never")
    folder = target.ready()  # before the spend: fine
    folder.rmdir()
    folder.symlink_to(private)  # while the provider answers
    with pytest.raises(StorageError, match="now leads to"):
        target.save(b"PNGDATA", "png", "fox", {"prompt": "p"})
    assert list(private.iterdir()) == []


def test_a_folder_that_was_a_link_from_the_start_is_fine(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "pictures").symlink_to(real)
    target = Store(tmp_path / "pictures", explicit=True, fallback=tmp_path / "never")
    assert target.ready() == target.present()


@pytest.mark.parametrize("replaced_by_a_file", [False, True])
def test_a_save_into_a_vanished_folder_says_so_not_free_some_space(tmp_path, replaced_by_a_file):
    target = store(tmp_path / "out")
    folder = target.folder
    shutil.rmtree(folder)
    if replaced_by_a_file:  # found by the fifth adversarial pass
        folder.write_text("not a folder")
    with pytest.raises(StorageError) as failure:
        target.save(b"x", "png", "stem", {})
    assert "folder disappeared" in str(failure.value) and "Free some space" not in str(failure.value)
    assert ("a file is in its place" in str(failure.value)) is replaced_by_a_file


# --- what a killed save leaves is swept at the next start ---------------------------------------------------

HOST = store_module._HOST


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def temp(folder: Path, data: bytes, pid: int, host: str = HOST) -> Path:
    path = folder / f".tmp-{host}-{pid}-{'ab' * 8}"
    path.write_bytes(data)
    return path


def test_the_sweep_removes_temp_files_of_dead_processes_and_keeps_live_ones(tmp_path):
    dead = temp(tmp_path, b"half an image", dead_pid())
    mine = tmp_path / f".tmp-{HOST}-{os.getpid()}-{'cd' * 8}"
    mine.write_bytes(b"a save in progress")
    other_host = temp(tmp_path, b"someone else's", 1, host="0123abcd")
    old = tmp_path / f".tmp-{'ef' * 8}"  # the naming before hosts and pids, or another host's, once stale
    old.write_bytes(b"x")
    os.utime(old, (time.time() - store_module.STALE_AFTER_S - 5,) * 2)
    removed = sweep(tmp_path)
    assert set(removed) == {dead, old}
    assert mine.exists() and other_host.exists()


def test_the_sweep_removes_an_image_whose_sidecar_was_never_linked(tmp_path):
    pid = dead_pid()
    image_tmp = temp(tmp_path, b"PNGDATA", pid)
    os.link(image_tmp, tmp_path / "20261121-090507-fox.png")  # killed right after the first link
    sidecar_tmp = tmp_path / f".tmp-{HOST}-{pid}-{'99' * 8}"
    sidecar_tmp.write_text("{}")
    complete = tmp_path / "20261121-090500-cat.png"  # a complete save whose temp files were not yet unlinked
    other_tmp = temp(tmp_path, b"CAT", pid)
    other_tmp.rename(tmp_path / f".tmp-{HOST}-{pid}-{'77' * 8}")
    os.link(tmp_path / f".tmp-{HOST}-{pid}-{'77' * 8}", complete)
    (tmp_path / "20261121-090500-cat.json").write_text("{}")
    sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261121-090500-cat.json", "20261121-090500-cat.png"]


def test_the_sweep_removes_stale_empty_reservations_with_the_image_they_name(tmp_path):
    (tmp_path / "20261121-090507-fox.png").write_bytes(b"PNGDATA")  # renamed onto its reservation...
    (tmp_path / "20261121-090507-fox.json").write_bytes(b"")  # ...but the sidecar never was
    (tmp_path / "20261121-090508-owl.json").write_bytes(b"")  # a save running right now
    (tmp_path / "20261121-090508-owl.png").write_bytes(b"")
    stale = time.time() - store_module.RESERVATION_STALE_S - 5
    os.utime(tmp_path / "20261121-090507-fox.json", (stale, stale))
    sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261121-090508-owl.json", "20261121-090508-owl.png"]


def test_a_dead_processs_reservations_are_swept_at_once_a_live_ones_kept(tmp_path, no_hard_links, monkeypatch):
    """Found by the third adversarial pass: without hard links, a kill right after the image's rename left the image
    and a reserved sidecar through a restart within RESERVATION_STALE_S. Reservations now name their process."""
    real_replace = os.replace
    seen: list[bytes] = []

    def look_at_the_reservation(src, dst):
        if str(dst).endswith(".json"):
            seen.append(Path(dst).read_bytes())  # what a kill at this moment would leave under the sidecar's name
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", look_at_the_reservation)
    saved = store(tmp_path).save(b"PNGDATA", "png", "fox", {"prompt": "p"})
    assert seen == [f"reserved {HOST} {os.getpid()}\n".encode()]
    assert json.loads(saved.sidecar.read_text()) == {"prompt": "p"}

    pid = dead_pid()
    for name, owner in (("20261121-090507-fox", pid), ("20261121-090508-owl", os.getpid())):
        (tmp_path / f"{name}.png").write_bytes(b"PNGDATA")
        (tmp_path / f"{name}.json").write_bytes(seen[0].replace(str(os.getpid()).encode(), str(owner).encode()))
    removed = sweep(tmp_path)
    assert {p.name for p in removed} == {"20261121-090507-fox.json", "20261121-090507-fox.png"}
    assert (tmp_path / "20261121-090508-owl.json").exists()  # this process is alive: its save may be running


def test_the_sweep_never_touches_files_it_did_not_make(tmp_path):
    """Found by the adversarial pass: an empty image of the user's took every file of its stem with it."""
    stale = time.time() - 3600
    names = ["20240101-120000-holiday.jpg", "20240101-120000-holiday.psd", "20240101-120000-holiday.txt",
             "20240101-120000-holiday.jpg.bak", "20240101-120000-notes.json", "empty.json", "holiday.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"" if name.endswith((".jpg", ".png")) else b"user data")
        os.utime(tmp_path / name, (stale, stale))
    assert sweep(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_the_sweep_runs_when_the_folder_is_first_used(tmp_path):
    leftover = temp(tmp_path, b"x", dead_pid())
    Store(tmp_path, explicit=True).folder  # noqa: B018
    assert not leftover.exists()


def test_synced_writes_leave_nothing_when_one_fails(tmp_path):
    from flux_klein_mcp.durable import write_synced

    taken = tmp_path / "b"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        write_synced([tmp_path / "a", taken], [b"x" * 300_000, b"y"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and taken.read_bytes() == b"someone else's"
    write_synced([tmp_path / "c", tmp_path / "d"], [b"x" * 300_000, b""])
    assert (tmp_path / "c").read_bytes() == b"x" * 300_000 and (tmp_path / "d").read_bytes() == b""
