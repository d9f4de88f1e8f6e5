"""The landing page's links and pictures point at files of this repository (the documentation
site's own links are checked by `make docs`, which fails on any broken link or anchor)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_every_relative_link_of_the_readme_names_a_file_of_the_repository():
    text = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in LINK.findall(text) if not t.startswith(("http", "#"))]
    assert targets, "the README has no relative links: the pattern no longer reads them"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"the README links to files that do not exist: {missing}"


def test_the_landing_page_fits_about_two_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 120
