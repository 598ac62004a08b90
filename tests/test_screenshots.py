"""The guide's pictures of a terminal are drawn by the display's own code, and are current."""

from __future__ import annotations

import html
import re

from bench.screenshots import OUT, draw
from tests.conftest import ROOT

TEXT = re.compile(r"<text [^>]*>([^<]*)</text>")


def texts(svg: str) -> list[str]:
    return [html.unescape(text).replace("\xa0", " ") for text in TEXT.findall(svg)]


def test_the_guide_shows_the_progress_display_and_the_summary_as_drawn_now() -> None:
    guide = (ROOT / "docs" / "guide" / "sending.md").read_text()
    for name, drawn in draw().items():
        assert f"](img/{name})" in guide, f"the guide does not show img/{name}"
        shown = (OUT / name).read_text()
        assert texts(shown) == texts(drawn), f"docs/guide/img/{name} is stale: run python -m bench.screenshots"
        assert "url(" not in shown.split("<style")[1].split("</style>")[0]  # no web font: read offline too
    progress = texts((OUT / "progress.svg").read_text())
    assert "2,278/3,960 batches  196.4 req/s  retries 3  failed 0  skipped 1,200  ETA 0:00:09" in progress
    summary = " ".join(texts((OUT / "summary.svg").read_text()))
    assert "3,960: 2,759 ok, 1 failed, 1,200 skipped (already final), 0 pending" in summary
