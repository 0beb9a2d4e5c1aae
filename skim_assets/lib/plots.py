"""Small plots for materialization metadata: a PNG (matplotlib, Agg backend) and an inline SVG sketch of it.

The Dagster UI shows Markdown metadata inline only when it is shorter than 1,000 characters; a PNG as a data URI
is far longer, so it would hide behind a "[Show Markdown]" link. Each plot is therefore written twice from the
same data: the PNG (titles, axes, legend; linked by path and embedded in the HTML report) and a sketch, an SVG
data URI small enough to render inline, with the series' names as a coloured legend. A sketch that cannot fit
drops its legend, then points; if it still cannot, there is none (`Plot.sketch` is None)."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write and close a figure (its folder made)."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


INLINE_MARKDOWN_LIMIT = 1000  # the Dagster UI renders Markdown metadata inline below this many characters
SKETCH_COLOURS = ("steelblue", "tomato", "seagreen", "darkorange", "purple", "gray")  # names: no '#' to escape
URI_SAFE = "/:=,.'-"  # left as they are in the sketch's data URI (spaces, '<', '>' are escaped)
SKETCH_WIDTH, SKETCH_HEIGHT, SKETCH_TOP = 160, 60, 9  # viewBox; the legend line sits above SKETCH_TOP


@dataclass(frozen=True)
class Plot:
    """A plot's PNG and its inline sketch (Markdown, under INLINE_MARKDOWN_LIMIT characters; None if none fits)."""
    path: Path
    title: str
    sketch: str | None


def _sketch_markdown(shapes: str, legend: list[str], title: str) -> str | None:
    """The Markdown image of an SVG sketch, with the legend if it fits, else without; None if neither fits."""
    for names in (legend, []):
        texts = "".join(f"<text x='{2 + 40 * i}' y='7' font-size='7' fill='{SKETCH_COLOURS[i % 6]}'>{name[:10]}</text>"
                        for i, name in enumerate(names[:4]))
        svg = (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {SKETCH_WIDTH} {SKETCH_HEIGHT}' width='320'>"
               f"<path d='M1,{SKETCH_TOP}V{SKETCH_HEIGHT - 1}H{SKETCH_WIDTH - 1}' stroke='silver' fill='none'/>"
               f"{shapes}{texts}</svg>")
        alt = "".join(c for c in title if c.isalnum() or c in " -_@")[:40]
        uri = min(f"data:image/svg+xml,{quote(svg, safe=URI_SAFE)}",
                  "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii"), key=len)
        markdown = f"![{alt}]({uri})"
        if len(markdown) < INLINE_MARKDOWN_LIMIT:
            return markdown
    return None


def _scale(values: list[float], low: float, high: float, lo_px: float, hi_px: float) -> list[int]:
    span = (high - low) or 1.0
    return [round(lo_px + (v - low) / span * (hi_px - lo_px)) for v in values]


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def line_sketch(series: dict[str, tuple[list, list]], title: str) -> str | None:
    """An inline sketch of named (x, y) series, fewer points per series until it fits."""
    xs_all = _finite(x for xs, _ in series.values() for x in xs)
    ys_all = _finite(y for _, ys in series.values() for y in ys)
    if not xs_all or not ys_all:
        return None
    low, high = min(0.0, min(ys_all)), max(ys_all)
    for points in (40, 20, 10, 5):
        paths = []
        for i, (xs, ys) in enumerate(series.values()):
            kept = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))]
            step = max(1, math.ceil(len(kept) / points))
            kept = kept[::step] + ([kept[-1]] if kept and (len(kept) - 1) % step else [])
            if not kept:
                continue
            px = _scale([x for x, _ in kept], min(xs_all), max(xs_all), 2, SKETCH_WIDTH - 2)
            py = _scale([y for _, y in kept], low, high, SKETCH_HEIGHT - 2, SKETCH_TOP + 1)
            d = "M" + "L".join(f"{x},{y}" for x, y in zip(px, py))
            paths.append(f"<path d='{d}' stroke='{SKETCH_COLOURS[i % 6]}' fill='none'/>")
        if markdown := _sketch_markdown("".join(paths), list(series), title):
            return markdown
    return None


def bar_sketch(labels: list[str], groups: dict[str, list[float | None]], title: str) -> str | None:
    """An inline sketch of grouped bars (a missing value: no bar)."""
    values = _finite(v for vs in groups.values() for v in vs)
    if not labels or not values:
        return None
    high = max(max(values), 0.0) or 1.0
    slot = (SKETCH_WIDTH - 4) / len(labels)
    width = max(slot * 0.8 / max(len(groups), 1), 0.5)
    paths = []
    for i, bars in enumerate(groups.values()):
        d = "".join(f"M{2 + j * slot + i * width:.1f},{SKETCH_HEIGHT - 1}V{y}h{width:.1f}V{SKETCH_HEIGHT - 1}"
                    for j, v in enumerate(bars) if v is not None and math.isfinite(float(v))
                    for y in _scale([max(float(v), 0.0)], 0.0, high, SKETCH_HEIGHT - 1, SKETCH_TOP + 1))
        paths.append(f"<path d='{d}' fill='{SKETCH_COLOURS[i % 6]}'/>")
    return _sketch_markdown("".join(paths), list(groups), title)


def line_plot(series: dict[str, tuple[list, list]], title: str, xlabel: str, ylabel: str, path: str | Path) -> Plot:
    """Plot named (x, y) series to a PNG file, with its sketch."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:  # beside the axes: inside them it covers the lines
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.set_size_inches(6.8, 3)
    ax.grid(alpha=0.3)
    return Plot(save_figure(fig, path), title, line_sketch(series, title))


def bar_plot(labels: list[str], groups: dict[str, list[float | None]], title: str, ylabel: str,
             path: str | Path) -> Plot:
    """Grouped bars: one group per label, one bar per key of `groups` (None = no bar: a model not trained)."""
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels) + 2), 3.2), dpi=100)
    width = 0.8 / max(len(groups), 1)
    for i, (name, values) in enumerate(groups.items()):
        ax.bar([x + i * width for x in range(len(labels))], [float("nan") if v is None else v for v in values],
               width=width, label=name)
    ax.set_xticks([x + width * (len(groups) - 1) / 2 for x in range(len(labels))], labels, rotation=20, ha="right",
                  fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return Plot(save_figure(fig, path), title, bar_sketch(labels, groups, title))


def png_data_uri(path: str | Path) -> str:
    """A PNG as a data URI (the HTML report embeds its plots so that it is one self-contained file)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def histogram_plot(values: list[float], title: str, xlabel: str, path: str | Path, bins: int = 30,
                   marker: float | None = None) -> Plot:
    """A histogram, with an optional vertical line (e.g. the threshold tau)."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    counts, edges, _ = ax.hist(values, bins=bins, color="#4C72B0")
    if marker is not None:
        ax.axvline(marker, color="#C44E52", linestyle="--", label=f"{marker:g}")
        ax.legend(fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    centres = [f"{(a + b) / 2:.2g}" for a, b in zip(edges[:-1], edges[1:])]
    return Plot(save_figure(fig, path), title, bar_sketch(centres, {xlabel: [float(c) for c in counts]}, title))
