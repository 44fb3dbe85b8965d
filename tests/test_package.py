"""What the package carries and how it installs: the Agent Skill inside the wheel (identical to the repository's),
`skill install`, and the bundle and registry files agreeing with pyproject.toml."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import flux_klein_mcp
from flux_klein_mcp import config
from tests.test_cli import BASE_ENV, cli

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SKILL_FILES = ["SKILL.md", *(f"references/{p.name}" for p in sorted((ROOT / "references").glob("*.md")))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel as pip builds it from this tree (no build isolation: setuptools is a test dependency)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, timeout=300, capture_output=True)
    [built] = out.glob("flux_klein_mcp-*.whl")
    return built


def test_the_wheel_carries_the_skill_identical_to_the_repositorys(wheel):
    with zipfile.ZipFile(wheel) as archive:
        for name in SKILL_FILES:
            assert archive.read(f"flux_klein_mcp/skill/{name}") == (ROOT / name).read_bytes(), name


def test_an_installed_wheel_writes_the_skill_without_any_source_tree(wheel, tmp_path):
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**BASE_ENV, "PYTHONPATH": str(unpacked)}  # this copy of the package, not the editable one
    done = subprocess.run([sys.executable, "-m", "flux_klein_mcp", "skill", "install", "--dir", str(tmp_path / "s")],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "s" / "generate-image-low-flux"
    assert f"Installed the Agent Skill generate-image-low-flux in {folder}" in done.stdout
    for name in SKILL_FILES:
        assert (folder / name).read_bytes() == (ROOT / name).read_bytes()


def test_skill_install_defaults_to_claude_codes_skills_folder_and_says_when_it_updates(workdir, tmp_path):
    first = cli(["skill", "install"], workdir, CLAUDE_CONFIG_DIR=str(tmp_path / "claude"))
    again = cli(["skill", "install"], workdir, CLAUDE_CONFIG_DIR=str(tmp_path / "claude"))
    folder = tmp_path / "claude" / "skills" / "generate-image-low-flux"
    assert first.returncode == 0 and f"Installed the Agent Skill generate-image-low-flux in {folder}" in first.stdout
    assert again.returncode == 0 and again.stdout.startswith("Updated")
    assert (folder / "SKILL.md").read_bytes() == (ROOT / "SKILL.md").read_bytes()


def test_skill_install_replaces_an_older_copy_whole_and_leaves_no_stray_file(workdir, tmp_path):
    from flux_klein_mcp.skill import RECORD

    tmp_path = tmp_path / "skills"
    folder = tmp_path / "generate-image-low-flux"
    assert cli(["skill", "install", "--dir", str(tmp_path)], workdir).returncode == 0
    # As an older version left it: a file this version dropped, in the install record.
    (folder / "references" / "dropped-in-this-version.md").write_text("stale")
    record = json.loads((folder / RECORD).read_text())
    record["references/dropped-in-this-version.md"] = hashlib.sha256(b"stale").hexdigest()
    (folder / RECORD).write_text(json.dumps(record))
    done = cli(["skill", "install", "--dir", str(tmp_path)], workdir)
    assert done.returncode == 0 and done.stdout.startswith("Updated"), done.stderr
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.md")) == sorted(SKILL_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["generate-image-low-flux"]  # no temporary folder left


def test_skill_install_never_deletes_a_copy_made_by_hand_unless_forced(workdir, tmp_path):
    """Found by the third hardening pass: with no install record (a copy made by hand), the person's added files
    were deleted without a word. Now they are refused, and --force replaces the folder on purpose."""
    skills = tmp_path / "skills"
    folder = skills / "generate-image-low-flux"
    (folder / "references").mkdir(parents=True)
    (folder / "SKILL.md").write_text("---\nname: generate-image-low-flux\ndescription: mine\n---\nmine\n")
    (folder / "my-notes.md").write_text("my own notes")
    refused = cli(["skill", "install", "--dir", str(skills)], workdir)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "did not install" in refused.stderr and "nothing was written" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert (folder / "my-notes.md").read_text() == "my own notes" and "mine" in (folder / "SKILL.md").read_text()
    forced = cli(["skill", "install", "--dir", str(skills), "--force"], workdir)
    assert forced.returncode == 0 and forced.stdout.startswith("Updated"), forced.stderr
    assert not (folder / "my-notes.md").exists()
    assert (folder / "SKILL.md").read_bytes() == (ROOT / "SKILL.md").read_bytes()
    assert [p.name for p in skills.iterdir()] == ["generate-image-low-flux"]


def _without_root_powers() -> list[str]:
    """A command prefix that takes away root's power to read any folder, whatever its mode (util-linux setpriv)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a folder cannot be made unreadable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("force", [False, True], ids=["plain", "forced"])
def test_skill_install_refuses_a_folder_it_cannot_read_whole_and_leaves_nothing_hidden(workdir, tmp_path, force):
    """Found by the third hardening pass: an unreadable part was skipped, the rest replaced unchecked, and a hidden
    .old-* folder left behind with the person's files in it."""
    skills = tmp_path / "skills"
    assert cli(["skill", "install", "--dir", str(skills)], workdir).returncode == 0
    private = skills / "generate-image-low-flux" / "private"
    private.mkdir()
    (private / "notes.md").write_text("mine")
    private.chmod(0)
    try:
        done = subprocess.run([*_without_root_powers(), sys.executable, "-m", "flux_klein_mcp", "skill", "install",
                               "--dir", str(skills), *(["--force"] if force else [])], cwd=workdir, env=BASE_ENV,
                              capture_output=True, text=True, timeout=60)
    finally:
        private.chmod(0o755)
    assert done.returncode == 2 and "cannot be read whole" in done.stderr and "private" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "--force" not in done.stderr
    assert (private / "notes.md").read_text() == "mine"
    assert [p.name for p in skills.iterdir()] == ["generate-image-low-flux"]  # no hidden .old-* or .new-*


@pytest.mark.parametrize("kind", ["other files", "a file", "a link"])
def test_skill_install_refuses_a_folder_that_is_not_this_skill_and_touches_nothing(workdir, tmp_path, kind):
    tmp_path = tmp_path / "skills"
    tmp_path.mkdir()
    folder = tmp_path / "generate-image-low-flux"
    if kind == "other files":
        folder.mkdir()
        (folder / "SKILL.md").write_text("---\nname: someone-elses-skill\n---\n")
    elif kind == "a file":
        folder.write_text("mine")
    else:
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    done = cli(["skill", "install", "--dir", str(tmp_path)], workdir)
    assert done.returncode == 2 and done.stdout == ""
    assert str(folder) in done.stderr and "nothing was written" in done.stderr and "--dir" in done.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("change", ["added a file", "edited SKILL.md", "a named pipe", "a link"])
def test_skill_install_never_overwrites_what_the_person_changed(workdir, tmp_path, change):
    """Found by the fourth adversarial pass: a second install deleted the person's notes and edits without a
    word; a named pipe hung it; a linked SKILL.md let it delete the link's neighbours."""
    skills = tmp_path / "skills"
    assert cli(["skill", "install", "--dir", str(skills)], workdir).returncode == 0
    folder = skills / "generate-image-low-flux"
    if change == "added a file":
        (folder / "my-notes.md").write_text("mine")
    elif change == "edited SKILL.md":
        (folder / "SKILL.md").write_text((folder / "SKILL.md").read_text() + "\nMy own rule.\n")
    elif change == "a named pipe":
        os.mkfifo(folder / "references" / "pipe.md")
    else:
        (tmp_path / "important.txt").write_text("---\nname: generate-image-low-flux\n---\n")
        (folder / "SKILL.md").unlink()
        (folder / "SKILL.md").symlink_to(tmp_path / "important.txt")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    done = cli(["skill", "install", "--dir", str(skills)], workdir)
    assert done.returncode == 2 and "nothing was written" in done.stderr, done.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_skill_install_ignores_what_is_planted_beside_it(tmp_path):
    """Found by the fourth adversarial pass: a link at the (once predictable) working folders' names redirected
    the writes into the folder it pointed to."""
    from flux_klein_mcp import skill

    skills, victim = tmp_path / "skills", tmp_path / "victim"
    skills.mkdir()
    victim.mkdir()
    for kind in ("new", "old"):
        (skills / f".generate-image-low-flux.{kind}-{os.getpid()}").symlink_to(victim)
    skill.install(skills)
    folder, _, replaced = skill.install(skills)
    assert replaced and list(victim.iterdir()) == [] and not folder.is_symlink()
    assert (folder / "SKILL.md").read_bytes() == (ROOT / "SKILL.md").read_bytes()


def test_skill_install_where_no_folder_can_be_made_says_so(workdir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    done = cli(["skill", "install", "--dir", str(tmp_path / "a-file" / "skills")], workdir)
    assert done.returncode == 1 and "could not write the skill" in done.stderr and "--dir" in done.stderr


def test_skill_fallback_without_the_command_on_path_runs(workdir):
    """SKILL.md tells an agent to try `python3 -m flux_klein_mcp …` when `flux-klein-mcp` is not on PATH: it works
    with nothing but the package (the interpreter path, no scripts folder on PATH)."""
    text = (ROOT / "SKILL.md").read_text()
    assert "python3 -m flux_klein_mcp" in text and "uvx --from" in text and ".venv/bin/flux-klein-mcp" in text
    env = {**BASE_ENV, "PATH": "/nonexistent", "FLUX_KLEIN_PROVIDER": "sandbox"}
    done = subprocess.run([sys.executable, "-m", "flux_klein_mcp", "generate", "a lighthouse", "--output-dir", "out"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)["images"][0]["path"]).is_file()


def test_the_bundle_manifest_and_registry_entry_match_pyproject():
    version, description = PYPROJECT["project"]["version"], PYPROJECT["project"]["description"]
    manifest = json.loads((ROOT / "manifest.json").read_text())
    server = json.loads((ROOT / "server.json").read_text())
    assert version == flux_klein_mcp.__version__ == manifest["version"] == server["version"]
    assert [package["version"] for package in server["packages"]] == [version]
    assert server["packages"][0]["identifier"] == PYPROJECT["project"]["name"] == manifest["name"]
    assert len(description) <= 100 and server["description"] == description == manifest["description"]
    assert {tool["name"] for tool in manifest["tools"]} == {"generate_image", "edit_image", "compose_images",
                                                            "get_usage"}


def test_every_variable_the_bundle_and_registry_name_is_a_real_one():
    table = (ROOT / "docs" / "configuration.md").read_text()
    manifest = json.loads((ROOT / "manifest.json").read_text())
    server = json.loads((ROOT / "server.json").read_text())
    named = list(manifest["server"]["mcp_config"]["env"]) + [v["name"] for v in
                                                              server["packages"][0]["environmentVariables"]]
    for name in named:
        assert f"| `{name}` |" in table, name
        assert name in config.VARIABLES or name.endswith("_API_KEY"), name
    for variable in server["packages"][0]["environmentVariables"]:
        assert variable.get("isSecret", False) == variable["name"].endswith("_API_KEY"), variable["name"]
    for key, field in manifest["user_config"].items():
        assert field.get("sensitive", False) == key.endswith("_api_key"), key
    for value in manifest["server"]["mcp_config"]["env"].values():
        assert re.fullmatch(r"\$\{user_config\.(\w+)\}", value)[1] in manifest["user_config"]


@pytest.mark.parametrize("command", ["serve", "doctor", "demo", "spend", "skill"])
def test_every_command_explains_itself(workdir, command):
    done = cli([command, "--help"], workdir)
    assert done.returncode == 0 and len(done.stdout.split("\n\n")[1]) > 40, done.stdout


def test_serve_port_without_http_says_what_is_wrong(workdir):
    done = cli(["serve", "--port", "8123"], workdir)
    assert done.returncode == 2 and "--host and --port only apply with --http" in done.stderr


def test_the_uv_cache_is_keyed_on_the_source_so_uvx_never_runs_stale_code():
    keys = PYPROJECT["tool"]["uv"]["cache-keys"]
    assert {"file": "server/**/*.py"} in keys and {"file": "pyproject.toml"} in keys

