"""Adversarial tests of the MCP Apps view's gallery tools (issue 14), written by a tester who did not build them.

Each test below is a break found in the merged code: it fails until the product is fixed. (The classes of attack
that held are listed in the tester's report, not here: a test that cannot fail proves nothing.)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from flux_klein_mcp import curate, moves
from tests.conftest import error_text
from tests.fakes.core import png
from tests.test_gallery import SANDBOX, make, page
from tests.test_store import no_hard_links  # noqa: F401  (a fixture)

pytestmark = pytest.mark.anyio
COMMAND = shutil.which("flux-klein-mcp", path=str(Path(sys.executable).parent)) or "flux-klein-mcp"
APPS = {"extensions": {"io.modelcontextprotocol/ui": {"mimeTypes": ["text/html;profile=mcp-app"]}}}


def tree(folder: Path) -> dict[str, bytes]:
    """Every regular file under `folder`, by path relative to it."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.is_symlink()}


# --- one foreign sidecar takes the whole stdio server down ---------------------------------------------------------

class RawStdio:
    """The installed server over stdio, spoken to line by line. A stdio transport whose writer failed answers
    nothing more but stays alive (its stdin reader keeps it) until stdin closes, then prints why on stderr; so a
    missing answer is waited for up to ANSWER_GUARD_S (a guard against a hang, not a timing: a healthy answer here
    takes about a second) and the reason is read after hanging up."""

    ANSWER_GUARD_S = 60

    def __init__(self, cwd: Path) -> None:
        env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "FLUX_KLEIN_PROVIDER": "sandbox",
               "XDG_STATE_HOME": os.environ.get("XDG_STATE_HOME", str(cwd))}
        self.proc = subprocess.Popen([COMMAND], cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()
        self.next_id = 1

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # EOF: the server is gone

    def _watch(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to one request, or None when the server closed its stdout or answered nothing."""
        ident, self.next_id = self.next_id, self.next_id + 1
        self.send({"id": ident, "method": method, "params": params})
        while True:
            try:
                line = self.lines.get(timeout=self.ANSWER_GUARD_S)
            except queue.Empty:
                return None
            if not line:
                return None
            message = json.loads(line)
            if message.get("id") == ident:
                return dict(message)

    def close(self) -> str:
        """Hang up; what the server wrote on stderr."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return "".join(self.stderr)


def test_a_sidecar_with_an_unpaired_surrogate_does_not_kill_the_stdio_server(workdir):
    """`"\\ud800"` is valid JSON (JavaScript's JSON.stringify writes it for a lone surrogate); the gallery passes the
    prompt through, the stdio writer cannot encode it as UTF-8, and the whole server exits. The view loads the gallery
    as soon as it opens, so while that one file is in the folder every host that shows the view loses the server."""
    folder = workdir / "output"
    folder.mkdir()
    (folder / "20260101-120000-kite.png").write_bytes(png(64, 64))
    (folder / "20260101-120000-kite.json").write_text('{"prompt": "a kite \\ud800", "operation": "generate"}')
    server = RawStdio(workdir)
    try:
        init = server.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": APPS,
                                             "clientInfo": {"name": "attack", "version": "1"}})
        assert init is not None and "result" in init, init
        server.send({"method": "notifications/initialized"})
        gallery = server.request("tools/call", {"name": "recent_images", "arguments": {}})
        after = server.request("tools/list", {})
    finally:
        stderr = server.close()
    assert gallery is not None, f"the server stopped answering at recent_images: {stderr[-700:]}"
    assert after is not None and "result" in after, "the server is gone after one gallery page"
    assert gallery["result"].get("isError") is not True  # (one odd prompt must not hide the whole folder)


async def test_a_gallery_page_can_be_written_on_any_wire_whatever_a_sidecar_holds(connect):
    """The same break without a subprocess: the page must serialise as the stdio and HTTP transports do (UTF-8 JSON).
    A prompt of "\\ud800" passes the gallery's checks (`_text` takes any str) and cannot be encoded."""
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        sidecar = image.with_suffix(".json")
        sidecar.write_text('{"prompt": "a kite \\ud800", "model": "m\\udfff", "operation": "generate"}')
        result = await client.call_tool("recent_images", {})
    assert not result.is_error, error_text(result)
    result.model_dump_json(by_alias=True, exclude_none=True).encode()  # what the transports do; raises here


# --- the 1 MB page cap ---------------------------------------------------------------------------------------------

async def test_one_sidecar_cannot_push_a_gallery_page_over_1_mb(connect):
    """Every text field of an entry is cut to 4000 characters except `args.aspect_ratio` (copied whole from the
    sidecar): one sidecar under the 1 MiB read limit makes a one-image page of about 2 MB, which hosts refuse."""
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        sidecar = image.with_suffix(".json")
        data = json.loads(sidecar.read_text())
        data["aspect_ratio"] = '"' * 500_000  # each grows to 4 bytes once escaped twice
        sidecar.write_text(json.dumps(data))
        assert sidecar.stat().st_size < 1024 * 1024  # (read: under MAX_SIDECAR_BYTES)
        first = await page(client, limit=1)
    assert first["images"][0]["path"] == str(image)
    assert first["wire_bytes"] < 1_000_000, first["wire_bytes"]


# --- loss and duplicates when two actions meet ----------------------------------------------------------------------

class Meanwhile:
    """Runs a second action in another thread at a chosen point of the first, as two hosts (or two views) would. The
    first waits for it up to GUARD_S; a second action still running then (a fix that serialises them, or a slow
    machine) carries on beside the first, which is a real interleaving too: no result depends on the timing."""

    GUARD_S = 10

    def __init__(self) -> None:
        self.started = False
        self.outcome: list[object] = []
        self._thread: threading.Thread | None = None

    def start(self, action: Any) -> None:
        self.started = True

        def run() -> None:
            try:
                self.outcome.append(action())
            except Exception as exc:  # (a refusal is a fine answer)
                self.outcome.append(exc)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._thread.join(self.GUARD_S)

    def finish(self) -> object:
        assert self.started and self._thread, "the race did not happen"
        self._thread.join()
        return self.outcome[0]


@pytest.mark.usefixtures("no_hard_links")
def test_without_hard_links_two_hides_of_one_image_never_delete_its_sidecar(tmp_path, monkeypatch):
    """Two hosts (or two views) hide the same image on a file system without hard links (exFAT, SMB). The first
    renames the sidecar into .hidden, the second (seeing no sidecar any more) moves the image alone, then the
    first's image rename fails and its clean-up unlinks its reservations: one of them now *is* the sidecar."""
    image = tmp_path / "20260101-120000-kite.png"
    image.write_bytes(b"pixels")
    sidecar = image.with_suffix(".json")
    sidecar.write_text('{"prompt": "a kite", "seed": 7, "picked": true}')
    record = sidecar.read_bytes()
    real_replace, second = os.replace, Meanwhile()

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        # (names are relative to the folder's descriptor: the image's name is the image)
        if Path(src).name == image.name and not second.started:  # the second hide runs between the first's renames
            second.start(lambda: curate.hide(tmp_path, str(image)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    try:
        curate.hide(tmp_path, str(image))
    except Exception:  # (refusing one of the hides is fine; losing the record is not)
        pass
    second.finish()
    assert record in tree(tmp_path).values(), f"the sidecar was deleted: {sorted(tree(tmp_path))}"


def test_two_hides_of_one_image_leave_one_hidden_copy(tmp_path, monkeypatch):
    """With hard links, two hides of the same image that overlap both link it into .hidden (under X and X_2) before
    either unlinks the original: Restore then brings the image back twice. (The move now reserves both names, then
    renames: the second hide runs when the first has claimed its names and not yet moved the image.)"""
    image = tmp_path / "20260101-120000-kite.png"
    image.write_bytes(b"pixels")
    image.with_suffix(".json").write_text('{"prompt": "a kite"}')
    real_replace, second = os.replace, Meanwhile()

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(src).name == image.name and not second.started:  # the first has claimed both, not yet moved all
            second.start(lambda: curate.hide(tmp_path, str(image)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    curate.hide(tmp_path, str(image))
    second.finish()  # (refusing the second hide is the right answer)
    hidden = sorted(p.name for p in (tmp_path / ".hidden").iterdir() if p.suffix == ".png")
    assert hidden == [image.name], hidden


def test_a_pick_that_reports_success_is_kept_when_a_hide_runs_meanwhile(tmp_path, monkeypatch):
    """pick_image holds a lock against other picks, not against Hide: a pick landing between Hide's links and its
    unlinks writes a new sidecar that Hide then unlinks. The star says picked; no file says so."""
    image = tmp_path / "20260101-120000-kite.png"
    image.write_bytes(b"pixels")
    image.with_suffix(".json").write_text('{"prompt": "a kite"}')
    real_replace, pick = os.replace, Meanwhile()

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(src).name == image.name and not pick.started:  # (the hide's steps: now a reserve and a rename)
            pick.start(lambda: curate.set_picked(tmp_path, str(image), True))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    hidden = curate.hide(tmp_path, str(image))
    if isinstance(pick.finish(), Exception):
        return  # the pick was refused: the person is told, nothing is lost
    assert json.loads(hidden.with_suffix(".json").read_text()).get("picked") is True, "a reported pick is in no file"


# --- a move that adopts someone else's record ----------------------------------------------------------------------

def test_restoring_an_image_without_a_sidecar_never_adopts_another_images_sidecar(tmp_path):
    """An image without a sidecar is moved alone, onto the first free *image* name, even when that name's sidecar is
    taken (an image deleted by hand leaves its sidecar): the restored image then shows another image's prompt,
    seed and pick, and Variations/Final replay that other prompt."""
    (tmp_path / ".hidden").mkdir()
    hidden = tmp_path / ".hidden" / "20260101-120000-kite.png"
    hidden.write_bytes(b"pixels")  # hidden without a sidecar (made before sidecars, or its sidecar was unreadable)
    orphan = tmp_path / "20260101-120000-kite.json"  # its image deleted in a file manager
    orphan.write_text('{"prompt": "somebody else entirely", "picked": true, "operation": "generate"}')
    back = curate.restore(tmp_path, str(hidden))
    assert not back.with_suffix(".json").exists(), f"{back.name} now wears {orphan.name}"


# --- confinement ---------------------------------------------------------------------------------------------------

def test_a_hidden_folder_swapped_for_a_link_after_the_check_receives_nothing(tmp_path, monkeypatch):
    """hidden_folder() checks .hidden with lstat, then move() links into `.hidden/<name>` by path: a .hidden
    replaced by a link in between sends the image and its sidecar out of the output folder (confinement held only
    at check time; the fix is to move relative to a directory descriptor opened with O_NOFOLLOW)."""
    folder, outside = tmp_path / "output", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    image = folder / "20260101-120000-kite.png"
    image.write_bytes(b"pixels")
    image.with_suffix(".json").write_text('{"prompt": "a kite"}')
    real_move = moves.move

    def move(*args: Any) -> bool:  # (the move now takes the folders' descriptors and the names in them)
        if (folder / ".hidden").is_dir() and not (folder / ".hidden").is_symlink():
            os.rename(folder / ".hidden", folder / ".hidden-was")
            os.symlink(outside, folder / ".hidden")
        return real_move(*args)

    monkeypatch.setattr(moves, "move", move)
    try:
        curate.hide(folder, str(image))
    except Exception:
        pass  # (a refusal is the right answer)
    assert list(outside.iterdir()) == [], "the image left the output folder"


async def test_names_with_non_ascii_digits_are_not_names_the_tools_give(connect, workdir):
    """SAVED_NAME uses `\\d`, which in a Python str pattern matches any Unicode digit: a file the tools never wrote
    (Arabic-Indic digits) is listed in the gallery and pick_image writes a sidecar beside it."""
    folder = workdir / "output"
    folder.mkdir()
    foreign = folder / "٢٠٢٦٠١٠١-١٢٠٠٠٠-kite.png"
    foreign.write_bytes(png(32, 32))
    async with connect(**SANDBOX) as client:
        listed = await page(client)
        result = await client.call_tool("pick_image", {"path": str(foreign)})
    assert listed["total"] == 0, [i["path"] for i in listed["images"]]
    assert result.is_error and not foreign.with_suffix(".json").exists()


# --- errors in our words -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("poison", ['"seed": NaN', '"note": "\\ud800"'])
async def test_a_pick_on_a_sidecar_json_cannot_write_back_is_refused_in_our_words(connect, poison):
    """Python's json reads NaN and lone surrogates; the sidecar writer refuses both (allow_nan=False, UTF-8), and the
    ValueError escapes set_picked's `except OSError`: the person reads only "Error executing tool pick_image"."""
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        sidecar = image.with_suffix(".json")
        sidecar.write_text('{"prompt": "a kite", ' + poison + "}")
        before = sidecar.read_bytes()
        result = await client.call_tool("pick_image", {"path": str(image)})
    text = error_text(result)
    assert result.is_error and sidecar.read_bytes() == before
    assert "pick was not kept" in text and image.with_suffix(".json").name in text, text

