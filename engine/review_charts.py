"""The review's charts, drawn with matplotlib as SVG text: the funnel per owner and per region, and the
amount class × funnel position matrix.

Text stays text in the SVG (``svg.fonttype: none``), so a browser draws Chinese labels with its own
fonts and the file is small; no chart fetches anything.
"""

from __future__ import annotations

import io
import logging
import re
import textwrap
import warnings
from typing import Any

__all__ = ["review_charts"]

_LAYER_COLOURS = ["#9ecae1", "#4292c6", "#08519c", "#bdbdbd"]  # surface, middle, bottom, undetermined


def review_charts(report: dict[str, Any]) -> dict[str, str]:
    """Chart name -> SVG text: ``funnel:<grouping>`` for each grouping the report has funnels of, ``matrix``."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")  # no display: drawn to text only
    fonts = logging.getLogger("matplotlib.font_manager")
    level = fonts.level
    fonts.setLevel(logging.ERROR)  # "now using weight 500" for a CJK font with one weight: nothing to act on
    try:
        with plt.rc_context(_STYLE), warnings.catch_warnings():
            # text is measured with the first font that has its glyphs; the browser draws it with its own
            warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
            charts = {f"funnel:{grouping}": _funnel(report, grouping) for grouping in report["funnels"]}
            charts["matrix"] = _matrix(report)
    finally:
        fonts.setLevel(level)
    return charts


_STYLE: dict[Any, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "review",
    "font.family": "sans-serif",
    "font.sans-serif": ["WenQuanYi Zen Hei", "Noto Sans CJK SC", "Microsoft YaHei", "DejaVu Sans"],
}


def _svg(figure: Any) -> str:
    import matplotlib.pyplot as plt

    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = out.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # the RDF block names nothing shown
    return text[text.index("<svg") :]  # inline in HTML: no XML prolog or doctype


def _funnel(report: dict[str, Any], grouping: str) -> str:
    """One horizontal bar per group, its deals split by funnel position (stacked)."""
    import matplotlib.pyplot as plt

    funnels = report["funnels"][grouping]
    labels = report["matrix"]["column_labels"]
    rows = funnels["groups"][:40]  # the largest 40: a chart people can read
    names = [report["labels"]["none"] if row["key"] is None else str(row["key"]) for row in rows][::-1]
    figure, axes = plt.subplots(figsize=(8, 0.8 + 0.3 * max(len(rows), 1)))
    left = [0] * len(rows)
    for k, label in enumerate(labels):
        counts = [row["counts"][k] for row in rows][::-1]
        axes.barh(names, counts, left=left, color=_LAYER_COLOURS[k % len(_LAYER_COLOURS)], label=label)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    axes.set_title(funnels["title"])
    axes.set_xlabel(funnels["axis"])
    axes.legend(loc="lower right", fontsize="small")
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def _matrix(report: dict[str, Any]) -> str:
    """The class × layer matrix as a heat map, each cell's count written in it."""
    import matplotlib.pyplot as plt

    matrix = report["matrix"]
    counts = matrix["counts"]
    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.imshow(counts, cmap="Blues", aspect="auto")
    # "top of the funnel (表层)" side by side overlaps its neighbours: wrapped at spaces (zh has none to wrap)
    columns = [textwrap.fill(label, 16) for label in matrix["column_labels"]]
    axes.set_xticks(range(len(columns)), columns)
    axes.set_yticks(range(len(matrix["row_labels"])), matrix["row_labels"])
    peak = max((c for row in counts for c in row), default=0) or 1
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    axes.set_title(matrix["title"])
    return _svg(figure)
