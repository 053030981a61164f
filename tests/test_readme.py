"""The README renders as written (CommonMark, as GitHub reads it)."""

from __future__ import annotations

import re

from conftest import REPO
from markdown_it import MarkdownIt

README = (REPO / "README.md").read_text(encoding="utf-8")


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_readme_opens_with_its_title() -> None:
    tokens = MarkdownIt("commonmark").parse(README)
    assert tokens[0].type == "heading_open" and tokens[0].tag == "h1"


def test_every_code_fence_closes_where_it_should() -> None:
    lines = README.splitlines()
    fences = [t for t in MarkdownIt("commonmark").parse(README) if t.type == "fence"]
    assert fences
    for fence in fences:
        start, end = fence.map
        # A fence that never closes runs to the end of the file; a closing fence with
        # text after it is no closing fence, so the block swallows the prose up to the
        # next fence line, which then shows up inside the code.
        assert end <= len(lines) and re.fullmatch(r"\s*`{3,}\s*", lines[end - 1]), (
            f"the code block opened at line {start + 1} does not close"
        )
        inner = fence.content.splitlines()
        assert not any(line.lstrip().startswith("```") for line in inner), (
            f"the code block opened at line {start + 1} holds a fence line"
        )


def test_every_contents_link_hits_a_heading() -> None:
    tokens = MarkdownIt("commonmark").parse(README)
    anchors = {
        github_anchor(tokens[i + 1].content)
        for i, token in enumerate(tokens)
        if token.type == "heading_open"
    }
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(links) >= 5
    missing = [link for link in links if link not in anchors]
    assert not missing, (missing, sorted(anchors))
