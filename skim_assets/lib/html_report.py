"""One self-contained HTML page per dataset with every report table and plot of its run: the story in one file
to open in a browser, send, or attach (plots are embedded, nothing is fetched).

Tables read as everywhere else (`lib.report_tables`: shares as percentages, settings as set, "n/a"), with each
column's description as its header's tooltip. The report assets and `skim report NAME --html` both build it
here, from the same stored tables.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from .plots import png_data_uri
from .report_tables import format_cell, methods_first, report_columns

__all__ = ["ReportSection", "REPORT_SECTIONS", "report_sections", "render_report", "comparison_by_base_model"]


@dataclass(frozen=True)
class ReportSection:
    """A report table: the asset (and side table) it is read from, a heading and what it shows."""
    asset: str
    heading: str
    explanation: str
    table: str = "data"
    split_by: str | None = None  # one table per value of this column (e.g. per base model)
    columns: tuple[str, ...] = ()  # () = every column


# the order a reader follows: the headline result, then why (label repair), then the sweeps
REPORT_SECTIONS = (
    ReportSection("comparison_report", "Every method on both test sets (the paper's Table 1)",
                  "Percentages. biased: clicks simulated on the test labels; unbiased: every test label. "
                  "dual_encoder: a fine-tuned encoder; ova_head: a one-vs-all head over frozen features."),
    ReportSection("label_repair_report", "Label repair against the held-back train labels",
                  "The pairs each method adds beyond the clicks, judged against the train labels the clicks "
                  "missed (a simulation knows them)."),
    ReportSection("tau_sweep_report", "Mapping threshold tau (the paper's Fig. 7)",
                  "Pairs added, their precision and recall, and unbiased R@10/R@100 of a one-vs-all head, by tau."),
    ReportSection("tau_sweep_report", "Label repair by tau and click-neighbour floor",
                  "The precision and recall of SKIM's pairs at each tau and floor.", table="repair_by_floor"),
    ReportSection("exposure_sweep_report", "Exposure window K (the paper's Fig. 3)",
                  "Unbiased R@100 of each method's one-vs-all head when only the top K could be clicked."),
    ReportSection("slm_size_report", "SKIM by student model (the paper's Table 5)",
                  "What each student wrote, how precise its mapped pairs are, and the unbiased recall they give."),
    ReportSection("retrieval_metrics", "Every model, every metric", "Percentages; queries without labels excluded.",
                  columns=("model", "test_set", "P@1", "P@5", "R@10", "R@25", "R@100", "nDCG@10", "PSP@5",
                           "queries", "ndcg_gains")),
)


@dataclass
class ReportContent:
    """What a report shows: tables by section (None = not materialized) and plots."""
    dataset: str
    tables: dict[ReportSection, pl.DataFrame | None]
    figures: list[Path] = field(default_factory=list)


def report_sections(read) -> dict[ReportSection, pl.DataFrame | None]:
    """Each section's table via `read(asset, table)` (None where that artifact does not exist)."""
    return {section: read(section.asset, section.table) for section in REPORT_SECTIONS}


def _table_html(frame: pl.DataFrame) -> str:
    columns = report_columns(frame)
    head = "".join(f'<th title="{html.escape(c.description)}" class="{c.kind}">{html.escape(c.name)}</th>'
                   for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c.kind}">{html.escape(format_cell(row[c.name], c.kind))}</td>'
                         for c in columns) + "</tr>"
        for row in frame.iter_rows(named=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def comparison_by_base_model(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """The comparison's wide table split per base model (`<base model> <test set> <metric>` columns): (base model,
    its `method` and `<test set> <metric>` columns), in the frame's order."""
    bases = list(dict.fromkeys(c.split(" ")[0] for c in frame.columns if c != "method"))
    out = []
    for base in bases:
        columns = [c for c in frame.columns if c.startswith(base + " ")]
        out.append((base, frame.select("method", *columns).rename({c: c.removeprefix(base + " ") for c in columns})))
    return out


def render_report(content: ReportContent) -> str:
    """The HTML page."""
    parts = []
    for section, frame in content.tables.items():
        if frame is None or frame.is_empty():
            continue
        frame = methods_first(frame.select(list(section.columns) or frame.columns))
        parts.append(f"<h2>{html.escape(section.heading)}</h2><p>{html.escape(section.explanation)}</p>")
        tables = comparison_by_base_model(frame) if section.asset == "comparison_report" else [("", frame)]
        for caption, table in tables:
            parts.append((f"<h3>{html.escape(caption)}</h3>" if caption else "") + _table_html(table))
    missing = [s.asset for s, f in content.tables.items() if f is None]
    if missing:
        parts.append("<p class=note>Not materialized for this dataset: "
                     f"{html.escape(', '.join(dict.fromkeys(missing)))}.</p>")
    if content.figures:
        parts.append("<h2>Plots</h2><div class=figures>" + "".join(
            f'<figure><img alt="{html.escape(p.stem)}" src="{png_data_uri(p)}"><figcaption>{html.escape(p.stem)}'
            "</figcaption></figure>" for p in content.figures) + "</div>")
    title = f"SKIM report: {content.dataset}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=note>Written {stamp}. Hover a column's name for what it means.</p>"
            f"{''.join(parts)}</body></html>")


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .7em; }
th { background: #f4f4f4; text-align: left; cursor: help; }
td.share, td.count, td.setting, td.number { text-align: right; }
.note { color: #666; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figure img { max-width: 560px; border: 1px solid #eee; }
figcaption { color: #666; font-size: 12px; }
"""
