"""Asset-check machinery shared by the asset modules: data-quality gates on the dataset tables, the distillation and
generation outputs, the mapped pairs, every trained model's weights and the evaluation table.

Layout
  Each check is a plain `evaluate_*(storage, dataset) -> Outcome` function that computes the numbers (testable
  without Dagster), wrapped by `build_check` into a thin `@dg.asset_check`. The `evaluate_*` functions and the
  `build_check(...)` definitions live in the asset module of the asset they guard, which exposes them as a list
  (`dataset_checks`, `distillation_checks`, `generation_checks`, `mapping_checks`, `training_checks`, `ova_checks`,
  `evaluation_checks`); `definitions.all_checks` collects them. This module holds what is stage-independent: the
  `Outcome` verdict, the Dagster wiring, the table and weights validators, and the query-quality check that guards
  both the teacher's demonstrations and the student's synthetic queries.
  Checks marked blocking stop the run's downstream assets when they fail with severity ERROR (a WARN failure never
  blocks): a broken table, an empty generation or a non-finite model would otherwise poison everything after it.

Partitions
  Every asset checked is partitioned by dataset (`dataset_partitions`), so every check is declared with the same
  `partitions_def`. Dagster 1.13 supports partitioned asset checks (a *preview* feature; its PreviewWarning is
  silenced below): the check runs once per partition inside the partitioned run that materializes the asset
  (e.g. `skim_pipeline`), reads its dataset from `context.partition_key`, and its result is recorded against that
  partition. Verified on 1.13: a blocking check that fails with ERROR in a partitioned run skips that partition's
  downstream assets.
  When the context has no partition key (a direct call with `dg.build_asset_check_context()`, which in 1.13
  takes no partition key, or a launch without one) the check evaluates every dataset folder present under
  `<root>/<asset>/` and merges the outcomes: it passes only if every dataset passes, severity is the worst failing
  one, and metadata is keyed `<dataset>/<name>`. We do not look up the asset's latest materialized partition in
  `context.instance`: the storage root is the source of truth for what the check actually reads.

What a check judges
  A check step runs after its asset's step in the same run and reads the artifact that step has just written: its
  evaluation names that materialization (the run's partition's latest) as its target and is recorded after it
  (`test_cli.assert_checks_passed_on_what_the_run_wrote`). In the 1.13 UI, a check page's "Latest execution /
  Timestamp" is when the run planned the check (Dagster logs every check's ASSET_CHECK_EVALUATION_PLANNED when
  it creates the run), so on a long run it reads earlier than the target materialization; the check's execution
  history and the run's event log show the evaluation's own time.

Thresholds are module constants; the numbers behind every verdict are in the result's metadata.

The table validators here count (rows with empty text, repeated keys, distinct unknown ids, extra columns and
wrong dtypes) where `lib.formats`' `require_*` validators raise on the first offending row: a check reports every
figure as metadata, an import stops at the first error it can name by file line.
"""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ..lib.quality import judged_quality
from ..partitions import dataset_partitions
from ..resources import StorageResource

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN

WEIGHT_TOLERANCE = 1e-6  # float slack on the [tau, 1] bounds of pair weights
BAD_EXAMPLES = 5  # offending ids / tensor names listed in metadata
GROUNDED_SHARE_WARN = 0.8  # teacher / student queries: share whose content words all occur in their document
JUNK_SHARE_WARN = 0.1  # share of role prefixes, code-like strings, one-word fragments, stop-word-only text
FINITE_WEIGHTS_DESCRIPTION = "Every tensor of the saved weights is finite (no NaN / inf)."


# ----------------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """The verdict of one check on one dataset; `metadata` holds plain JSON-able values."""

    passed: bool
    severity: dg.AssetCheckSeverity = ERROR
    description: str = ""
    metadata: dict = field(default_factory=dict)


def ok(description: str, **metadata) -> Outcome:
    return Outcome(True, ERROR, description, metadata)


def fail(severity: dg.AssetCheckSeverity, description: str, **metadata) -> Outcome:
    return Outcome(False, severity, description, metadata)


Evaluate = Callable[[StorageResource, str], Outcome]  # what every check computes: (storage, dataset) -> verdict


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
        "wrong_dtypes": {c: str(frame.schema[c]) for c in schema if c in frame.columns and frame.schema[c] != schema[c]},
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


def evaluate_query_quality(asset: str) -> Evaluate:
    """Grounded and junk shares of what a writer wrote: its `judged` table (the parsed queries with the writer's
    own verdicts, before any quality filter), per source it was asked about (its `raw` table)."""
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        raw, judged = storage.read_asset_tables(asset, dataset, "raw", "judged")
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

    return evaluate


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


def evaluate_finite_weights(
    asset: str, folder: str, pattern: str, reader: Callable[[Path], dict], required: Sequence[str] = ()
) -> Evaluate:
    """Every tensor in `<root>/<asset>/<dataset>/<folder>/<pattern>` finite (and the `required` names present)."""

    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        base = storage.artifact_dir(asset, dataset) / folder
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


# ----------------------------------------------------------------------------------------------- Dagster wiring


def datasets_to_check(context: dg.AssetCheckExecutionContext, storage: StorageResource, asset: str) -> list[str]:
    """The run's partition, or (no partition key) every dataset folder under `<root>/<asset>/`."""
    if context.has_partition_key:
        return [context.partition_key]
    folder = storage.root_path / asset
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def evaluate_safely(evaluate: Evaluate, storage: StorageResource, dataset: str) -> Outcome:
    """A missing or unreadable artifact is an ERROR verdict, not a crashed check."""
    try:
        return evaluate(storage, dataset)
    except FileNotFoundError as error:
        return fail(ERROR, f"artifact missing: {error}", error=str(error))
    except Exception as error:  # noqa: BLE001 - an unreadable artifact is exactly what the check reports
        return fail(ERROR, f"artifact unreadable: {type(error).__name__}: {error}", error=f"{type(error).__name__}: {error}")


def merge_outcomes(outcomes: dict[str, Outcome]) -> Outcome:
    """One dataset: its outcome (plus `dataset`). Several: passes only if all pass, the worst failing severity,
    metadata keyed `<dataset>/<name>`."""
    if len(outcomes) == 1:
        (dataset, outcome), = outcomes.items()
        return Outcome(outcome.passed, outcome.severity, f"{dataset}: {outcome.description}",
                       {"dataset": dataset} | outcome.metadata)
    failed = {d: o for d, o in outcomes.items() if not o.passed}
    severity = ERROR if not failed or any(o.severity == ERROR for o in failed.values()) else WARN
    metadata = {"datasets": sorted(outcomes), "failed_datasets": sorted(failed)}
    for dataset, outcome in outcomes.items():
        metadata |= {f"{dataset}/{k}": v for k, v in outcome.metadata.items()}
    description = "; ".join(f"{d}: {o.description}" for d, o in sorted((failed or outcomes).items()))
    return Outcome(not failed, severity, description, metadata)


def to_result(outcome: Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, severity=outcome.severity, description=outcome.description,
                               metadata=outcome.metadata)


def run_check(context: dg.AssetCheckExecutionContext, storage: StorageResource, asset: str,
              evaluate: Evaluate) -> dg.AssetCheckResult:
    datasets = datasets_to_check(context, storage, asset)
    if not datasets:
        return to_result(fail(ERROR, f"no partition key and no materialized dataset under {storage.root_path / asset}"))
    return to_result(merge_outcomes({d: evaluate_safely(evaluate, storage, d) for d in datasets}))


def build_check(
    asset: str, name: str, evaluate: Evaluate, *, blocking: bool, description: str,
    additional_deps: Sequence[str] = (),
) -> dg.AssetChecksDefinition:
    """A dataset-partitioned check of `asset` whose verdict is `evaluate(storage, dataset)`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned asset checks are preview in 1.13

        @dg.asset_check(asset=asset, name=name, blocking=blocking, description=description,
                        partitions_def=dataset_partitions, additional_deps=list(additional_deps) or None)
        def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
            return run_check(context, storage, asset, evaluate)

    return _check


def build_query_quality_check(asset: str) -> dg.AssetChecksDefinition:
    """The non-blocking `query_quality` check of a query writer (the teacher, or a synthetic-queries asset)."""
    return build_check(
        asset, "query_quality", evaluate_query_quality(asset), blocking=False,
        description=f"WARN when under {GROUNDED_SHARE_WARN:.0%} of the written queries are grounded in their document "
                    f"or over {JUNK_SHARE_WARN:.0%} are junk (measured before the generation's quality filter).",
    )


def build_finite_weights_check(asset: str, folder: str, pattern: str, reader: Callable[[Path], dict],
                               required: Sequence[str] = (), name: str = "weights_finite") -> dg.AssetChecksDefinition:
    """The blocking `weights_finite` check of a model asset (see `evaluate_finite_weights`); `name` tells apart
    the checks of an asset holding two models."""
    return build_check(asset, name, evaluate_finite_weights(asset, folder, pattern, reader, required),
                       blocking=True, description=FINITE_WEIGHTS_DESCRIPTION)
