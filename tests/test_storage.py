"""Saving under pressure: a disk that fills up after the provider answered, an unwritable working directory."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import error_text, output_files, provider_env, summary
from tests.fakes.core import Loopback
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = pytest.mark.anyio

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="uses sh, ulimit and trap")


def limited(command: list[str], max_file_kb: int) -> list[str]:
    """Run `command` with a file-size limit, SIGXFSZ ignored: a write past it fails with EFBIG, as on a full disk."""
    blocks = max_file_kb * 2  # sh counts 512-byte blocks
    return ["sh", "-c", f"trap '' XFSZ; ulimit -f {blocks}; exec {shlex.join(command)}"]


@posix_only
async def test_a_folder_that_cannot_take_an_image_is_refused_before_the_provider_is_paid(workdir):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    try:
        env = {**BASE_ENV, **provider_env(fake, server.url), "PYTHONDONTWRITEBYTECODE": "1"}
        params = StdioServerParameters(command=limited([COMMAND], 2)[0], args=limited([COMMAND], 2)[1:], env=env,
                                       cwd=workdir)
        async with Client(params) as client:
            first = await client.call_tool("generate_image", {"prompt": "a fox"})
            second = await client.call_tool("generate_image", {"prompt": "a fox", "aspect_ratio": "9:16"})
    finally:
        server.close()
    for result in (first, second):  # and the server kept answering
        assert result.is_error
        text = error_text(result)
        assert "cannot take files over 2 KB" in text and "Nothing was sent" in text
        assert "FLUX_KLEIN_OUTPUT_DIR" in text and TEST_KEY not in text
    assert len(fake.completions) == 0  # (a disk that fills after the answer: test_store.py, with an OS edge)
    assert output_files(workdir) == []  # no partial image, no sidecar, no temp file


@posix_only
def test_the_cli_reports_a_full_disk_with_exit_1(workdir):
    import subprocess

    done = subprocess.run(limited([COMMAND, "generate", "a fox", "--provider", "sandbox"], 2), cwd=workdir,
                          env={**BASE_ENV, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stdout == ""
    assert "cannot take files over 2 KB" in done.stderr and "Nothing was sent" in done.stderr
    assert output_files(workdir) == []


async def test_an_unwritable_working_directory_falls_back_to_a_per_user_folder(workdir, tmp_path):
    (workdir / "output").write_text("a file where the output folder would go")
    fake = FakeOpenRouter()
    server = Loopback(fake)
    xdg = tmp_path / "xdg"
    try:
        env = {**BASE_ENV, **provider_env(fake, server.url), "XDG_DATA_HOME": str(xdg)}
        async with Client(StdioServerParameters(command=COMMAND, args=[], env=env, cwd=workdir)) as client:
            data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    finally:
        server.close()
    saved = Path(data["images"][0]["path"])
    assert saved.parent == xdg / "flux-klein-mcp" / "output" and saved.exists()
    assert any("not writable" in note and str(saved.parent) in note for note in data["notes"])
