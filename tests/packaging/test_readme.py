"""The README is the page a newcomer reads: short, and every link in it leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from testsupport import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def links_of(page: Path) -> list[Path]:
    return [
        (page.parent / target).resolve()
        for target in LINK.findall(page.read_text())
        if not target.startswith(("http://", "https://", "mailto:"))
    ]


def test_the_readme_is_at_most_300_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_every_link_of_the_readme_and_the_docs_leads_to_a_file() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [f"{page.relative_to(ROOT)} -> {target}"
              for page in pages for target in links_of(page) if not target.exists()]
    assert not broken


def test_the_readme_names_its_two_commands_and_they_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in readme, script
        assert (ROOT / script).is_file(), script
