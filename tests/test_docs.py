"""The docs stay true: the skill's frontmatter is valid, the README lists every variable and its quick start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flux_klein_mcp import config
from flux_klein_mcp.providers import Providers

ROOT = Path(__file__).resolve().parent.parent
SKILL = (ROOT / "SKILL.md").read_text()
README = (ROOT / "README.md").read_text()


def frontmatter(text: str) -> dict[str, str]:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "SKILL.md must start with YAML frontmatter"
    fields = {}
    for line in match.group(1).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def test_skill_frontmatter_follows_the_agent_skills_spec():
    fields = frontmatter(SKILL)
    assert set(fields) <= {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
    assert fields["name"] == "generate-image-low-flux"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", fields["name"]) and len(fields["name"]) <= 64
    assert "claude" not in fields["name"] and "anthropic" not in fields["name"]
    assert 0 < len(fields["description"]) <= 1024
    assert "<" not in fields["description"] and ">" not in fields["description"]
    assert "Use it whenever" in fields["description"]  # says when, not only what


def test_skill_body_is_short_and_its_references_exist():
    assert len(SKILL.splitlines()) < 500
    links = re.findall(r"\]\((references/[^)]+)\)", SKILL)
    assert links
    for link in links:
        assert (ROOT / link).is_file(), link
    for name in ("generate_image", "edit_image", "compose_images", "https://openrouter.ai/settings/credits"):
        assert name in SKILL


PROVIDERS = list(Providers(config.Settings.from_env({})))
PROVIDER_VARIABLES = sorted(
    {v for p in PROVIDERS for v in (p.key_variable, getattr(p, "base_url_variable", None)) if v}
    | {"OPENROUTER_BASE_URL", "FLUX_KLEIN_MODEL"}
)


@pytest.mark.parametrize("variable", [*config.VARIABLES, *PROVIDER_VARIABLES])
def test_readme_configuration_table_lists_every_variable(variable):
    assert f"| `{variable}` |" in README


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
def test_readme_capability_table_matches_each_provider(provider):
    row = next(line for line in README.splitlines() if line.startswith(f"| `{provider.name}` |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    caps = provider.capabilities
    marks = ["✓" if flag else "✗" for flag in (caps.generate, caps.edit, caps.compose, caps.seed)]
    assert cells[2:6] == marks
    assert cells[1] == (f"`{provider.key_variable}`" if provider.key_variable else "—")
    assert provider.name in SKILL


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_public_surface_does_not_drift():
    import flux_klein_mcp

    assert sorted(flux_klein_mcp.__all__) == sorted([
        "FluxKleinError", "ImageRequest", "Outcome", "Runtime", "Settings", "__version__", "create_server", "run"])
    assert all(hasattr(flux_klein_mcp, name) for name in flux_klein_mcp.__all__)
