"""Image work is bounded by memory, not only by thread count: one edit of an 8192x8192 RGBA PNG (a 64 MP image in a
few hundred KB) peaks at most 700 MB in the server process, and calls arriving together are admitted by the
decoded-pixel budget instead of multiplying it. Measured as the server process's peak resident set (VmHWM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import summary
from tests.test_cli import BASE_ENV, COMMAND
from tests.test_shutdown import children_running

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")]

LIMIT_MB = 700
MAKE_BIG_PNG = """
import sys
from PIL import Image
Image.linear_gradient("L").resize((8192, 8192)).convert("RGBA").save(sys.argv[1], compress_level=1)
"""


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """A 64 MP RGBA PNG, made in a child process so this one never holds its pixels."""
    path = tmp_path_factory.mktemp("big") / "huge.png"
    subprocess.run([sys.executable, "-c", MAKE_BIG_PNG, str(path)], check=True, timeout=120)
    return path


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def serve_and_measure(workdir: Path, big_png: Path, calls: list[tuple[str, dict]]) -> float:
    env = {**BASE_ENV, "FLUX_KLEIN_PROVIDER": "sandbox", "FLUX_KLEIN_INPUT_DIRS": str(big_png.parent)}
    async with Client(StdioServerParameters(command=COMMAND, args=[], env=env, cwd=workdir)) as client:
        [pid] = children_running(COMMAND)
        results = []

        async def one(tool: str, arguments: dict) -> None:
            results.append(await client.call_tool(tool, arguments))

        async with anyio.create_task_group() as group:
            for tool, arguments in calls:
                group.start_soon(one, tool, arguments)
        for result in results:
            assert summary(result)["images"]
        return peak_mb(pid)


async def test_one_edit_of_a_64_megapixel_rgba_png_peaks_under_700_mb(workdir, big_png):
    peak = await serve_and_measure(workdir, big_png, [("edit_image", {"prompt": "blue", "image": str(big_png)})])
    assert peak <= LIMIT_MB, f"peak {peak:.0f} MB"


async def test_concurrent_edits_of_huge_images_stay_within_the_same_bound(workdir, big_png):
    calls = [("edit_image", {"prompt": f"take {i}", "image": str(big_png)}) for i in range(2)]
    peak = await serve_and_measure(workdir, big_png, calls)
    assert peak <= LIMIT_MB, f"peak {peak:.0f} MB"
