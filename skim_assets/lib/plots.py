"""Small PNG plots for materialization metadata (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
from pathlib import Path

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


def line_plot(series: dict[str, tuple[list, list]], title: str, xlabel: str, ylabel: str, path: str | Path) -> Path:
    """Plot named (x, y) series to a PNG file."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def bar_plot(labels: list[str], groups: dict[str, list[float]], title: str, ylabel: str, path: str | Path) -> Path:
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
    return save_figure(fig, path)


def markdown_image(path: str | Path, alt: str = "plot") -> str:
    """Inline a PNG into Markdown (the Dagster UI renders data URIs in Markdown metadata)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


def histogram_plot(values: list[float], title: str, xlabel: str, path: str | Path, bins: int = 30,
                   marker: float | None = None) -> Path:
    """A histogram, with an optional vertical line (e.g. the threshold tau)."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.hist(values, bins=bins, color="#4C72B0")
    if marker is not None:
        ax.axvline(marker, color="#C44E52", linestyle="--", label=f"{marker:g}")
        ax.legend(fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return save_figure(fig, path)
