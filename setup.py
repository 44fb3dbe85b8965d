"""One build step pyproject.toml cannot say: the Agent Skill (SKILL.md and references/, kept at the repository's
root where agents and people look for it) is copied into the wheel as package data, `flux_klein_mcp/skill/`, so an
installed package can write it out (`flux-klein-mcp skill install`) with no source tree at hand."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildWithSkill(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "flux_klein_mcp" / "skill"
        for source in [ROOT / "SKILL.md", *sorted((ROOT / "references").glob("*.md"))]:
            copy = target / source.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())


setup(cmdclass={"build_py": BuildWithSkill})
