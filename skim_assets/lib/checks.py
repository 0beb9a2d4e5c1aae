"""Data-quality verdicts, free of Dagster: what every asset check computes from the artifact it guards.

Each check is a plain `evaluate(artifact) -> Outcome` function over the value the IO manager loads (a `Tables`
of the artifact's tables, or a model folder's path), testable without Dagster; `assets/common.build_check` wraps
it into a dataset-partitioned `@dg.asset_check` whose input is that asset. Thresholds are module constants; the
numbers behind every verdict are in the outcome's metadata.

The table validators here count (rows with empty text, repeated keys, distinct unknown ids, extra columns and
wrong dtypes) where `lib.formats`' `require_*` validators raise on the first offending row: a check reports every
figure as metadata, an import stops at the first error it can name by file line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from .quality import judged_quality

ERROR, WARN = "ERROR", "WARN"  # a check's severity: an ERROR failure of a blocking check stops what follows

WEIGHT_TOLERANCE = 1e-6  # float slack on the [tau, 1] bounds of pair weights
BAD_EXAMPLES = 5  # offending ids / tensor names listed in metadata
GROUNDED_SHARE_WARN = 0.8  # teacher / student queries: share whose content words all occur in their document
JUNK_SHARE_WARN = 0.1  # share of role prefixes, code-like strings, one-word fragments, stop-word-only text
FINITE_WEIGHTS_DESCRIPTION = "Every tensor of the saved weights is finite (no NaN / inf)."


# ----------------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """The verdict of one check on one artifact; `metadata` holds plain JSON-able values."""

    passed: bool
    severity: str = ERROR
    description: str = ""
    metadata: dict = field(default_factory=dict)


def ok(description: str, **metadata) -> Outcome:
    return Outcome(True, ERROR, description, metadata)


def fail(severity: str, description: str, **metadata) -> Outcome:
    return Outcome(False, severity, description, metadata)


Evaluate = Callable[..., Outcome]  # what every check computes: the artifact (and any other input) -> verdict


def rounded(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def examples(values) -> list:
    """The first BAD_EXAMPLES values, as JSON-able metadata (anything but a number, bool or None as its str)."""
    return [v if isinstance(v, (int, float, bool)) or v is None else str(v) for v in list(values)[:BAD_EXAMPLES]]


# ----------------------------------------------------------------------------------------------- table validators


def schema_problems(frame: pl.DataFrame, schema: dict) -> dict:
    """Missing and extra columns, and columns whose dtype differs from the canonical one."""
    return {
        "missing_columns": [c for c in schema if c not in frame.columns],
        "extra_columns": [c for c in frame.columns if c not in schema],
        "wrong_dtypes": {c: str(frame.schema[c]) for c in schema
                         if c in frame.columns and frame.schema[c] != schema[c]},
    }


def empty_text_count(values: pl.Series) -> int:
    """Null or whitespace-only strings."""
    return int((values.is_null() | (values.cast(pl.String).str.strip_chars().str.len_chars() == 0)).sum())


def duplicate_count(frame: pl.DataFrame, columns: list[str]) -> int:
    """Rows beyond the first of every repeated key."""
    return frame.height - frame.select(columns).unique().height


def unknown_values(values: pl.Series, known: pl.Series) -> pl.Series:
    return values.filter(~values.is_in(known.implode())).unique(maintain_order=True)


def weights_outside(weights: pl.Series, low: float, high: float, tolerance: float = WEIGHT_TOLERANCE) -> int:
    """Null, NaN or out-of-[low, high] weights."""
    w = weights.cast(pl.Float64)
    inside = w.is_not_null() & w.is_finite().fill_null(False) & (w >= low - tolerance) & (w <= high + tolerance)
    return int((~inside.fill_null(False)).sum())


# ----------------------------------------------------------------------------------------------- query quality


def evaluate_query_quality(written) -> Outcome:
    """Grounded and junk shares of what a writer wrote (`written`: its tables): its `judged` table (the parsed
    queries with the writer's own verdicts, before any quality filter), per source it was asked about (its `raw`
    table)."""
    raw, judged = written["raw"], written["judged"]
    figures = judged_quality(judged, raw["doc_id"].n_unique())
    metadata = {
        "queries": figures["queries"],
        "grounded_share": rounded(figures["grounded_share"]),
        "junk_share": rounded(figures["junk_share"]),
        "junk_by_reason": figures["junk_by_reason"],
        "distinct_queries_per_document": rounded(figures["distinct_queries_per_document"], 2),
        "grounded_share_warn_below": GROUNDED_SHARE_WARN,
        "junk_share_warn_above": JUNK_SHARE_WARN,
    }
    summary = f"grounded {figures['grounded_share']:.1%}, junk {figures['junk_share']:.1%}"
    problems = [text for text, bad in (
        (f"grounded share {figures['grounded_share']:.1%} < {GROUNDED_SHARE_WARN:.0%}",
         figures["grounded_share"] < GROUNDED_SHARE_WARN),
        (f"junk share {figures['junk_share']:.1%} > {JUNK_SHARE_WARN:.0%}", figures["junk_share"] > JUNK_SHARE_WARN),
    ) if bad]
    if problems:
        return fail(WARN, "; ".join(problems), **metadata)
    return ok(summary, **metadata)


# ----------------------------------------------------------------------------------------------- model weights


def nonfinite_in_safetensors(path: Path) -> dict[str, tuple[int, int]]:
    """tensor name -> (elements, non-finite elements), read tensor by tensor (torch handles bf16 too)."""
    import torch
    from safetensors import safe_open

    counts = {}
    with safe_open(str(path), framework="pt") as handle:
        for name in handle.keys():
            tensor = handle.get_tensor(name)
            bad = int((~torch.isfinite(tensor)).sum()) if tensor.is_floating_point() or tensor.is_complex() else 0
            counts[name] = (tensor.numel(), bad)
    return counts


def nonfinite_in_npz(path: Path) -> dict[str, tuple[int, int]]:
    """array name -> (elements, non-finite elements) for the numeric arrays of an .npz (strings are skipped)."""
    counts = {}
    with np.load(path, allow_pickle=False) as arrays:
        for name in arrays.files:
            array = arrays[name]
            if array.dtype.kind in "fc":
                counts[name] = (int(array.size), int((~np.isfinite(array)).sum()))
            elif array.dtype.kind in "iub":
                counts[name] = (int(array.size), 0)
    return counts


def evaluate_finite_weights(folder: str, pattern: str, reader: Callable[[Path], dict],
                            required: Sequence[str] = ()) -> Evaluate:
    """Every tensor in `<artifact>/<folder>/<pattern>` finite (and the `required` names present)."""

    def evaluate(artifact: Path) -> Outcome:
        base = Path(artifact) / folder
        files = sorted(base.glob(pattern))
        if not files:
            return fail(ERROR, f"no weights file {pattern} in {base}", path=str(base))
        counts = {}
        for path in files:
            counts |= {name if len(files) == 1 else f"{path.name}:{name}": c for name, c in reader(path).items()}
        missing = [name for name in required if name not in counts]
        bad = {name: n_bad for name, (_, n_bad) in counts.items() if n_bad}
        metadata = {
            "path": str(base),
            "files": [p.name for p in files],
            "tensors": len(counts),
            "parameters": sum(n for n, _ in counts.values()),
            "nonfinite_values": sum(bad.values()),
            "nonfinite_tensors": len(bad),
            "nonfinite_tensor_examples": examples(bad),
            "missing_tensors": missing,
        }
        if missing:
            return fail(ERROR, f"missing tensor(s) {missing}", **metadata)
        if bad:
            return fail(ERROR, f"{sum(bad.values())} NaN/inf values in {len(bad)} tensor(s)", **metadata)
        if not counts:
            return fail(ERROR, "the weights file holds no tensors", **metadata)
        return ok(f"{len(counts)} tensors, {metadata['parameters']} values, all finite", **metadata)

    return evaluate




def evaluate_safely(evaluate: Evaluate, *inputs) -> Outcome:
    """A missing or unreadable artifact is an ERROR verdict, not a crashed check."""
    try:
        return evaluate(*inputs)
    except FileNotFoundError as error:
        return fail(ERROR, f"artifact missing: {error}", error=str(error))
    except Exception as error:  # noqa: BLE001 - an unreadable artifact is exactly what the check reports
        return fail(ERROR, f"artifact unreadable: {type(error).__name__}: {error}",
                    error=f"{type(error).__name__}: {error}")
