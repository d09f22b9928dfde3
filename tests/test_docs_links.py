"""Every link in README.md and docs/*.md resolves inside the repository.

A user who clones the repository has nothing beside it, so a link to `../shared/...` (or to
any file that is not committed) is a dead end. Links to the web are refused too: the README
must stand on its own, air-gapped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ')' (an optional
# "title" after it is allowed). Code spans are removed first so `a[i](x)` in code is ignored.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.MULTILINE)


def links(text: str) -> list[str]:
    text = CODE_BLOCK.sub("", text)
    # Keep a code span's text when it is a link's label (`[`x`](y)`): only drop spans
    # that are not inside brackets, by blanking their contents to a neutral word.
    text = CODE_SPAN.sub("code", text)
    return LINK.findall(text)


def anchors(text: str) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for title in HEADING.findall(CODE_BLOCK.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_the_link_parser_finds_links_and_skips_code() -> None:
    text = "see [a](docs/a.md) and ![p](docs/p.png \"t\")\n```\n[x](nope.md)\n```\n`[y](no.md)`"
    assert links(text) == ["docs/a.md", "docs/p.png"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    found = links(text)
    bad: list[str] = []
    for target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            bad.append(f"{target}: points outside the repository")
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.is_relative_to(ROOT):
            bad.append(f"{target}: points outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)
    if doc.name == "README.md":
        assert len(found) >= 5  # the parser still sees the README's links


def test_docs_hold_the_design() -> None:
    for name in ("architecture.md", "failure-semantics.md", "glossary.md"):
        assert (ROOT / "docs" / name).is_file(), name
