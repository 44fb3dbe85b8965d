"""The docs stay true: the skill's frontmatter is valid, the README's quick start and Development tree match the repo,
docs/configuration.md lists every variable, docs/providers.md every provider, and every link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flux_klein_mcp import config
from flux_klein_mcp.providers import Providers

ROOT = Path(__file__).resolve().parent.parent
SKILL = (ROOT / "SKILL.md").read_text()
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


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
def test_the_configuration_page_lists_every_variable(variable):
    assert f"| `{variable}` |" in (DOCS / "configuration.md").read_text()


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
def test_the_providers_page_capability_table_matches_each_provider(provider):
    page = (DOCS / "providers.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith(f"| `{provider.name}` |"))
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


def _tree() -> str:
    development = README.split("## Development", 1)[1]
    block = re.search(r"```\n(.*?)```", development, re.S)
    assert block, "README's Development section must hold the repository tree"
    return block.group(1)


def test_readme_development_tree_names_every_module_and_folder():
    tree = _tree()
    package = ROOT / "server" / "flux_klein_mcp"
    modules = [p for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    missing = [str(p.relative_to(package)) for p in modules
               if p.name not in tree and f"{p.parent.name}/" not in tree]
    assert not missing, f"not in README's Development tree: {missing}"
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name not in ("build", "dist", "output", "node_modules") and not p.name.endswith(".egg-info")
               and any(p.iterdir())]
    assert not [f for f in folders if f"{f}/" not in tree], "a top-level folder is missing from the tree"


def test_readme_development_tree_names_nothing_that_is_gone():
    names = set(re.findall(r"([A-Za-z_][\w.-]*\.(?:py|html)|[A-Za-z_][\w-]*/)", _tree()))
    everything = {p.name for p in ROOT.rglob("*") if ".venv" not in p.parts and "node_modules" not in p.parts}
    everything |= {f"{p.name}/" for p in ROOT.rglob("*") if p.is_dir()}
    assert not sorted(names - everything), "README's Development tree names files that do not exist"


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md"))])
def test_every_relative_link_leads_to_a_file(page):
    text = (ROOT / page).read_text()
    links = [link.split("#", 1)[0] for link in re.findall(r"\]\(([^)\s]+)\)", text)
             if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    broken = [link for link in links if link and not ((ROOT / page).parent / link).exists()]
    assert not broken, f"{page} links to missing files: {broken}"
