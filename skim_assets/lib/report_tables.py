"""Report tables as people read them: what each column is, how its values are shown, and what it means.

One place decides how a figure reads, for the Dagster UI (table metadata), the CLI and the HTML report:

- a *share* (precision, recall, R@k, a grounded share) is a percentage with 2 decimals (0.7145 -> 71.45);
- a *count* is an integer;
- a *setting* (tau, a floor, an exposure window) is shown as it was set (0.7 stays 0.7, never 70.00);
- any other *number* (a loss, a propensity, queries per document) keeps 4 significant digits;
- a figure that does not apply is "n/a", and the table's `note` column says why (empty where all apply).

Columns are known by name (`COLUMNS`), by metric pattern (`R@100`, `dual_encoder unbiased R@100`), or else by
their type; a report can override any of them. Rows of method tables come SKIM first, then base, then the rest
in their own order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import polars as pl

__all__ = ["ColumnKind", "ReportColumn", "COLUMNS", "report_columns", "shown_value", "format_cell",
           "methods_first", "metrics_table_markdown", "NOT_APPLICABLE"]

ColumnKind = Literal["label", "flag", "share", "count", "setting", "number"]
NOT_APPLICABLE = "n/a"
FIRST_METHODS = ("skim", "base")


@dataclass(frozen=True)
class ReportColumn:
    name: str
    kind: ColumnKind
    description: str

    @property
    def unit(self) -> str:
        """The column's type as the UI shows it."""
        return {"share": "percent", "count": "int", "setting": "setting", "number": "float", "flag": "bool"}.get(
            self.kind, "string")


def _known(kind: ColumnKind, description: str) -> tuple[ColumnKind, str]:
    return kind, description


HELD_BACK = "held-back train labels (every train label minus the clicks)"
COLUMNS: dict[str, tuple[ColumnKind, str]] = {
    "method": _known("label", "how the training pairs were made (the paper's rows; skim = clicks + mapped pairs)"),
    "model": _known("label", "method and base model"),
    "base_model": _known("label", "dual_encoder (fine-tuned encoder) or ova_head (one-vs-all head on frozen "
                                  "features); zero_shot is the untrained encoder"),
    "test_set": _known("label", "biased: clicks simulated on the test labels; unbiased: every test label"),
    "student": _known("label", "the small LM that wrote the queries"),
    "pipeline_student": _known("flag", "the pipeline's own student (its LoRA adapter, queries and pairs)"),
    "note": _known("label", "why a figure is n/a"),
    "ndcg_gains": _known("label", "nDCG's gains: graded (the labels' relevance grades) or binary"),
    "queries": _known("count", "test queries with at least one label, the mean is over these"),
    "precision": _known("share", f"added pairs that are {HELD_BACK}, of the pairs judged (%)"),
    "recall": _known("share", f"{HELD_BACK} that the added pairs recover (%)"),
    "repair_precision": _known("share", f"added pairs that are {HELD_BACK} (%)"),
    "repair_recall": _known("share", f"{HELD_BACK} the added pairs recover (%)"),
    "repair_precision_without_shown_filter": _known(
        "share", "repair precision had shown-but-not-clicked pairs been kept (%)"),
    "pairs_added": _known("count", "new (query, document) pairs beside the clicks"),
    "pairs_judged": _known("count", "added pairs whose query has held-back labels to judge them by"),
    "pairs_correct": _known("count", f"added pairs that are {HELD_BACK}"),
    "pairs_shown_not_clicked": _known("count", "pairs removed because the log showed the document and no click came"),
    "held_back_labels": _known("count", HELD_BACK),
    "documents_repaired": _known("count", "documents that gained at least one correct label"),
    "documents_missing_labels": _known("count", "documents with held-back labels"),
    "training_pairs": _known("count", "pairs the model trained on"),
    "labels_kept": _known("share", "train labels that survive as clicks (%)"),
    "fraction_kept": _known("share", "train labels that survive as clicks (%)"),
    "tau": _known("setting", "mapping threshold: least cosine between a synthetic and a train query"),
    "click_neighbour_floor": _known("setting", "least cosine to the document's nearest clicked query (none = off)"),
    "floor": _known("setting", "least cosine to the document's nearest clicked query"),
    "exposure_k": _known("setting", "exposure window K of Algorithm 1: only the top K results can be clicked"),
    "position": _known("setting", "rank position the result was shown at"),
    "propensity": _known("number", "examination probability relative to position 1, by regression-EM"),
    "click_rate_propensity": _known("number", "click rate at the position over the click rate at position 1"),
    "true_propensity": _known("number", "the simulation's examination probability relative to position 1"),
    "error": _known("number", "|regression-EM propensity - true propensity|"),
    "click_rate_error": _known("number", "|click-rate propensity - true propensity|"),
    "parameters_M": _known("count", "student parameters, millions"),
    "lora_steps": _known("count", "LoRA optimiser steps"),
    "holdout_loss_before": _known("number", "student loss on held-out demonstrations before LoRA"),
    "holdout_loss_after": _known("number", "student loss on held-out demonstrations after LoRA"),
    "queries_written": _known("count", "queries the student wrote"),
    "queries_kept": _known("count", "queries kept after the quality filter"),
    "grounded_share": _known("share", "written queries whose content words occur in their document (%)"),
    "junk_share": _known("share", "written queries that are empty, prompt echoes or not a query (%)"),
    "distinct_per_document": _known("number", "distinct queries per document"),
}

METRIC = re.compile(r"^(?:(?P<prefix>.+) )?(?P<metric>P|R|nDCG|PSP)@(?P<k>\d+)$")
METRIC_NAMES = {"P": "precision", "R": "recall", "nDCG": "nDCG", "PSP": "propensity-scored precision"}


def _metric_description(match: re.Match) -> str:
    prefix = f"{match['prefix']}: " if match["prefix"] else ""
    return f"{prefix}{METRIC_NAMES[match['metric']]} at {match['k']} (%)"


def report_column(name: str, dtype: pl.DataType | None = None,
                  overrides: dict[str, tuple[ColumnKind, str]] | None = None) -> ReportColumn:
    """How column `name` reads: an override, a known column, a metric, else by its type."""
    if overrides and name in overrides:
        return ReportColumn(name, *overrides[name])
    if name in COLUMNS:
        return ReportColumn(name, *COLUMNS[name])
    if match := METRIC.match(name):
        return ReportColumn(name, "share", _metric_description(match))
    if dtype is not None and dtype.is_integer():
        return ReportColumn(name, "count", "")
    if dtype is not None and dtype.is_float():
        return ReportColumn(name, "number", "")
    if dtype == pl.Boolean:
        return ReportColumn(name, "flag", "")
    return ReportColumn(name, "label", "")


def report_columns(frame: pl.DataFrame, overrides: dict[str, tuple[ColumnKind, str]] | None = None
                   ) -> list[ReportColumn]:
    return [report_column(name, dtype, overrides) for name, dtype in frame.schema.items()]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def shown_value(value, kind: ColumnKind):
    """The value as the reader sees it, still a number where it is one (so a UI can sort it); None if missing."""
    if _missing(value):
        return None
    if kind == "share":
        return round(float(value) * 100, 2)
    if kind == "count" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if kind in ("setting", "number") and isinstance(value, float):
        return float(f"{value:.{6 if kind == 'setting' else 4}g}")  # 0.41000000000000003 -> 0.41
    return value


def format_cell(value, kind: ColumnKind) -> str:
    """The value as text (Markdown, HTML, terminal): a missing figure is "n/a", a missing label (a note) empty."""
    shown = shown_value(value, kind)
    if shown is None:
        return "" if kind == "label" else NOT_APPLICABLE
    if kind == "share":
        return f"{shown:.2f}"
    if isinstance(shown, float):
        return f"{shown:g}"
    return str(shown).replace("|", "\\|").replace("\n", " ")


def methods_first(frame: pl.DataFrame, column: str = "method") -> pl.DataFrame:
    """SKIM and base first (the comparison a reader looks for), the other rows in their order."""
    if column not in frame.columns:
        return frame
    rank = {m: i for i, m in enumerate(FIRST_METHODS)}
    return frame.with_row_index("_order").sort(
        pl.col(column).replace_strict(rank, default=len(rank), return_dtype=pl.Int32), "_order").drop("_order")


def metrics_table_markdown(rows: list[dict] | pl.DataFrame, columns: list[str] | None = None,
                           overrides: dict[str, tuple[ColumnKind, str]] | None = None) -> str:
    """A GitHub-Markdown table of `rows` (dicts or a frame) in the given `columns` order, cells as `format_cell`
    shows them; text columns left-aligned, numbers right-aligned. Ends without a trailing newline."""
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, infer_schema_length=None)
    columns = list(columns) if columns is not None else frame.columns
    if not columns:
        raise ValueError("columns must not be empty")
    info = [report_column(c, frame.schema.get(c), overrides) for c in columns]
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if c.kind == "label" else "---:" for c in info) + "|"]
    for row in frame.iter_rows(named=True):
        lines.append("| " + " | ".join(format_cell(row.get(c.name), c.kind) for c in info) + " |")
    return "\n".join(lines)
