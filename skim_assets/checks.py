"""Asset checks: data-quality gates on the dataset tables, the distillation and generation outputs, the mapped
pairs, every trained model's weights and the evaluation table.

Layout
  Each check is a plain `evaluate_*(storage, dataset) -> Outcome` function that computes the numbers (testable
  without Dagster), wrapped by `build_check` into a thin `@dg.asset_check`. `all_checks` lists them all.
  Checks marked blocking stop the run's downstream assets when they fail with severity ERROR (a WARN failure never
  blocks): a broken table, an empty generation or a non-finite model would otherwise poison everything after it.

Partitions
  Every asset here is partitioned by dataset (`dataset_partitions`), so every check is declared with the same
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

Thresholds are module constants; the numbers behind every verdict are in the result's metadata.
"""

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from .assets.generation import generation_assets
from .assets.mapping import mapping_assets
from .assets.ova import HEAD_FILE, OVA_HEADS
from .assets.training import RETRIEVER_FOLDER, RETRIEVERS
from .lib.demonstrations import duplicate_rate
from .lib.quality import judged_quality, query_quality
from .lib.formats import DOCUMENTS_SCHEMA, QRELS_SCHEMA, QUERIES_SCHEMA, SPLITS
from .partitions import dataset_partitions
from .resources import StorageResource

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN

PARSE_RATE_ERROR = 0.5  # teacher demonstrations: below this the distillation data is mostly garbage
PARSE_RATE_WARN = 0.9
DUPLICATE_RATE_WARN = 0.2  # synthetic queries: share of queries whose normalised text occurs earlier
EMPTY_OUTPUT_RATE_WARN = 0.1  # synthetic queries: share of documents whose raw generation is empty
DEFAULT_TAU = 0.8  # mapped pairs: weights are (1 + cos) / 2 kept at >= tau
WEIGHT_TOLERANCE = 1e-6  # float slack on the [tau, 1] bounds
METRIC_TOLERANCE = 1e-9  # float slack on metrics in [0, 1]
BAD_EXAMPLES = 5  # offending ids / tensor names listed in metadata

LORA_ADAPTERS = ("lora_adapter", "lora_adapter_no_metadata")
LORA_FOLDER = "adapter"
SYNTHETIC_QUERY_ASSETS = tuple(a.key.to_user_string() for a in generation_assets)
MAPPED_PAIRS_ASSETS = tuple(k for a in mapping_assets if (k := a.key.to_user_string()).startswith("mapped_pairs"))
METRICS_TEST_SET = "unbiased"
METRICS_COMPARED = ("skim_retriever", "base_retriever", "R@100")


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


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _examples(values) -> list:
    return [v if isinstance(v, (int, float, bool)) or v is None else str(v) for v in list(values)[:BAD_EXAMPLES]]


# ----------------------------------------------------------------------------------------------- dataset tables


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


def _table_outcome(what: str, frame: pl.DataFrame, schema: dict, counts: dict, extra: dict | None = None) -> Outcome:
    """Schema problems first (nothing else is meaningful without the columns), then the named bad-row counts."""
    problems = schema_problems(frame, schema)
    metadata = {"rows": frame.height, **problems}
    if any(problems.values()):
        return fail(ERROR, f"{what}: columns differ from the canonical schema {list(schema)}", **metadata)
    metadata |= counts | (extra or {})
    bad = {name: n for name, n in counts.items() if n}
    if bad:
        return fail(ERROR, f"{what}: " + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in bad.items()), **metadata)
    return ok(f"{what}: {frame.height} rows, canonical schema, unique ids, no empty text", **metadata)


def evaluate_documents(storage: StorageResource, dataset: str) -> Outcome:
    documents = storage.read_table("documents", dataset)
    if schema_problems(documents, DOCUMENTS_SCHEMA)["missing_columns"]:
        return _table_outcome("documents", documents, DOCUMENTS_SCHEMA, {})
    return _table_outcome("documents", documents, DOCUMENTS_SCHEMA, {
        "empty_doc_ids": empty_text_count(documents["doc_id"]),
        "duplicate_doc_ids": duplicate_count(documents, ["doc_id"]),
        "empty_titles": empty_text_count(documents["title"]),
    })


def evaluate_queries(storage: StorageResource, dataset: str) -> Outcome:
    queries = storage.read_table("queries", dataset)
    if schema_problems(queries, QUERIES_SCHEMA)["missing_columns"]:
        return _table_outcome("queries", queries, QUERIES_SCHEMA, {})
    splits = dict(queries.group_by("split").len().iter_rows())
    return _table_outcome("queries", queries, QUERIES_SCHEMA, {
        "empty_query_ids": empty_text_count(queries["query_id"]),
        "duplicate_query_ids": duplicate_count(queries, ["query_id"]),
        "empty_texts": empty_text_count(queries["text"]),
        "unknown_splits": int((~queries["split"].cast(pl.String).is_in(list(SPLITS)).fill_null(False)).sum()),
    }, {f"{split}_queries": int(splits.get(split, 0)) for split in SPLITS})


def evaluate_relevance_labels(storage: StorageResource, dataset: str) -> Outcome:
    qrels = storage.read_table("relevance_labels", dataset)
    if schema_problems(qrels, QRELS_SCHEMA)["missing_columns"]:
        return _table_outcome("relevance_labels", qrels, QRELS_SCHEMA, {})
    unknown_queries = unknown_values(qrels["query_id"], storage.read_table("queries", dataset)["query_id"])
    unknown_docs = unknown_values(qrels["doc_id"], storage.read_table("documents", dataset)["doc_id"])
    return _table_outcome("relevance_labels", qrels, QRELS_SCHEMA, {
        "duplicate_labels": duplicate_count(qrels, ["query_id", "doc_id"]),
        "unknown_query_ids": unknown_queries.len(),
        "unknown_doc_ids": unknown_docs.len(),
    }, {
        "labelled_queries": qrels["query_id"].n_unique(),
        "unknown_query_id_examples": _examples(unknown_queries),
        "unknown_doc_id_examples": _examples(unknown_docs),
    })


# ----------------------------------------------------------------------------------------------- distillation, generation


def parse_rate_stats(raw: pl.DataFrame, demonstrations: pl.DataFrame) -> dict:
    """Documents the teacher answered (table `raw`) and how many of them yielded >= 1 parsed query."""
    documents = raw["doc_id"].n_unique()
    parsed = demonstrations.filter(pl.col("doc_id").is_in(raw["doc_id"].implode()))["doc_id"].n_unique()
    return {"documents": documents, "parsed_documents": parsed, "parse_rate": parsed / documents if documents else 0.0}


def evaluate_teacher_demonstrations(storage: StorageResource, dataset: str) -> Outcome:
    raw = storage.read_table("teacher_demonstrations", dataset, "raw")
    stats = parse_rate_stats(raw, storage.read_table("teacher_demonstrations", dataset))
    rate = stats["parse_rate"]
    metadata = stats | {
        "parse_rate": _round(rate),
        "teacher_errors": int(raw["error"].is_not_null().sum()) if "error" in raw.columns else 0,
        "error_below": PARSE_RATE_ERROR,
        "warn_below": PARSE_RATE_WARN,
    }
    summary = f"parse rate {rate:.1%} ({stats['parsed_documents']} of {stats['documents']} documents)"
    if rate < PARSE_RATE_ERROR:
        return fail(ERROR, f"{summary} < {PARSE_RATE_ERROR:.0%}: too few usable demonstrations", **metadata)
    if rate < PARSE_RATE_WARN:
        return fail(WARN, f"{summary} < {PARSE_RATE_WARN:.0%}", **metadata)
    return ok(summary, **metadata)


def empty_output_rate(raw: pl.DataFrame) -> float:
    """Share of generations (table `raw`, column `text`) that are null or whitespace only."""
    return empty_text_count(raw["text"]) / raw.height if raw.height else 0.0


def evaluate_synthetic_queries(asset: str) -> Callable[[StorageResource, str], Outcome]:
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        queries = storage.read_table(asset, dataset)
        raw = storage.read_table(asset, dataset, "raw")
        duplicates, empties = duplicate_rate(queries), empty_output_rate(raw)
        metadata = {
            "queries": queries.height,
            "documents_with_queries": queries["doc_id"].n_unique(),
            "generations": raw.height,
            "duplicate_rate": _round(duplicates),
            "empty_output_rate": _round(empties),
            "duplicate_rate_warn_above": DUPLICATE_RATE_WARN,
            "empty_output_rate_warn_above": EMPTY_OUTPUT_RATE_WARN,
        }
        if queries.height == 0:
            judged_path = storage.table_path(asset, dataset, "judged")
            written = pl.read_parquet(judged_path).height if judged_path.exists() else 0
            if written:  # the writer produced queries, none grounded: nothing to map, nothing poisonous either
                return fail(WARN, f"the quality filter kept none of the {written} queries parsed from {raw.height} "
                                  "generations", **metadata)
            return fail(ERROR, f"no synthetic queries parsed from {raw.height} generations", **metadata)
        high = [f"{name} {value:.1%} > {limit:.0%}" for name, value, limit in
                (("duplicate rate", duplicates, DUPLICATE_RATE_WARN), ("empty-output rate", empties, EMPTY_OUTPUT_RATE_WARN))
                if value > limit]
        if high:
            return fail(WARN, "; ".join(high), **metadata)
        return ok(f"{queries.height} queries, duplicate rate {duplicates:.1%}, empty outputs {empties:.1%}", **metadata)

    return evaluate


GROUNDED_SHARE_WARN = 0.8  # teacher / student queries: share whose content words all occur in their document
JUNK_SHARE_WARN = 0.1  # share of role prefixes, code-like strings, one-word fragments, stop-word-only text
REPAIR_PRECISION_WARN = 0.5  # label repair: share of SKIM's added pairs that are held-back train labels


def evaluate_query_quality(asset: str, judged_table: str | None) -> Callable[[StorageResource, str], Outcome]:
    """Grounded and junk shares of what a writer wrote: the parsed queries before the generation's quality
    filter (table `judged_table`), or the table itself when it has none (teacher demonstrations)."""
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        path = storage.table_path(asset, dataset, judged_table) if judged_table else None
        documents = storage.read_table("documents", dataset)
        if path is not None and path.exists():  # the generation step's own verdicts: no second judging
            figures = judged_quality(pl.read_parquet(path), documents.height)
        else:
            figures = query_quality(storage.read_table(asset, dataset), documents)
        metadata = {
            "queries": figures["queries"],
            "grounded_share": _round(figures["grounded_share"]),
            "junk_share": _round(figures["junk_share"]),
            "junk_by_reason": figures["junk_by_reason"],
            "distinct_queries_per_document": _round(figures["distinct_queries_per_document"], 2),
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


def evaluate_label_repair(storage: StorageResource, dataset: str) -> Outcome:
    table = storage.read_table("label_repair_report", dataset)
    skim = table.filter(pl.col("method") == "skim")
    if skim.height == 0:
        return ok("SKIM's pairs were not materialized: nothing to judge")
    row = skim.row(0, named=True)
    metadata = {k: _round(v) if isinstance(v, float) else v for k, v in row.items()} | {
        "precision_warn_below": REPAIR_PRECISION_WARN}
    if row["held_back_labels"] == 0:
        return ok("no held-back train labels (no simulated bias): precision not judged", **metadata)
    summary = (f"SKIM's added pairs: precision {row['precision']:.1%}, recall of held-back labels {row['recall']:.1%}, "
               f"{row['documents_repaired']} documents repaired")
    if row["precision"] < REPAIR_PRECISION_WARN:
        return fail(WARN, f"{summary}: precision < {REPAIR_PRECISION_WARN:.0%}", **metadata)
    return ok(summary, **metadata)


# ----------------------------------------------------------------------------------------------- mapping


def dataset_tau(storage: StorageResource, dataset: str) -> float:
    """`tau` from `<root>/inputs/<dataset>/dataset.json` (DEFAULT_TAU when the file or the key is absent).

    Note: a run that overrides `MappingConfig.tau` maps with a different threshold than the one checked here.
    """
    path = storage.inputs(dataset) / "dataset.json"
    if not path.exists():
        return DEFAULT_TAU
    return float(json.loads(path.read_text(encoding="utf-8")).get("tau", DEFAULT_TAU))


def weights_outside(weights: pl.Series, low: float, high: float, tolerance: float = WEIGHT_TOLERANCE) -> int:
    """Null, NaN or out-of-[low, high] weights."""
    w = weights.cast(pl.Float64)
    inside = w.is_not_null() & w.is_finite().fill_null(False) & (w >= low - tolerance) & (w <= high + tolerance)
    return int((~inside.fill_null(False)).sum())


def evaluate_mapped_pairs(asset: str) -> Callable[[StorageResource, str], Outcome]:
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        pairs = storage.read_table(asset, dataset)
        tau = dataset_tau(storage, dataset)
        documents = storage.read_table("documents", dataset).height
        outside = weights_outside(pairs["weight"], tau, 1.0)
        finite = pairs["weight"].cast(pl.Float64).drop_nulls().drop_nans()
        metadata = {
            "pairs": pairs.height,
            "tau": tau,
            "weights_outside_range": outside,
            "min_weight": _round(finite.min()) if finite.len() else None,
            "max_weight": _round(finite.max()) if finite.len() else None,
            "covered_documents": pairs["doc_id"].n_unique(),
            "document_coverage": _round(pairs["doc_id"].n_unique() / documents) if documents else 0.0,
        }
        if outside:
            return fail(ERROR, f"{outside} of {pairs.height} pair weights outside [tau={tau}, 1]", **metadata)
        if pairs.height == 0:
            return fail(WARN, "no synthetic query mapped onto a train query (0 pairs)", **metadata)
        return ok(f"{pairs.height} pairs, weights in [{tau}, 1], coverage {metadata['document_coverage']:.1%}", **metadata)

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
) -> Callable[[StorageResource, str], Outcome]:
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
            "nonfinite_tensor_examples": _examples(bad),
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


# ----------------------------------------------------------------------------------------------- evaluation


def metric_columns(metrics: pl.DataFrame) -> list[str]:
    """P@k, R@k, nDCG@k, PSP@k, ... (the `queries` count is not a metric)."""
    return [c for c in metrics.columns if "@" in c]


def evaluate_metric_ranges(storage: StorageResource, dataset: str) -> Outcome:
    metrics = storage.read_table("retrieval_metrics", dataset)
    columns = metric_columns(metrics)
    bad = {}
    for column in columns:
        # float slack: PSP@k is a ratio of means and comes out as 1.0000000000000002 when it is exactly 1
        n = weights_outside(metrics[column], 0.0, 1.0, tolerance=METRIC_TOLERANCE)
        if n:
            bad[column] = n
    metadata = {"rows": metrics.height, "metric_columns": columns, "values_outside_0_1": sum(bad.values()),
                "bad_columns": bad}
    if not columns:
        return fail(ERROR, "no metric columns (<name>@<k>) in the table", **metadata)
    if bad:
        return fail(ERROR, f"{sum(bad.values())} metric values outside [0, 1] (or null/NaN) in {sorted(bad)}", **metadata)
    return ok(f"{metrics.height * len(columns)} metric values in [0, 1]", **metadata)


def evaluate_skim_beats_base(storage: StorageResource, dataset: str) -> Outcome:
    metrics = storage.read_table("retrieval_metrics", dataset)
    skim_model, base_model, metric = METRICS_COMPARED
    unbiased = metrics.filter(pl.col("test_set") == METRICS_TEST_SET)

    def value(model: str) -> float | None:
        rows = unbiased.filter(pl.col("model") == model)
        return float(rows[metric][0]) if rows.height and metric in rows.columns and rows[metric][0] is not None else None

    skim, base = value(skim_model), value(base_model)
    metadata = {"test_set": METRICS_TEST_SET, "metric": metric, f"{skim_model}": skim, f"{base_model}": base}
    if skim is None or base is None or math.isnan(skim) or math.isnan(base):
        absent = [m for m, v in ((skim_model, skim), (base_model, base)) if v is None or math.isnan(v)]
        return fail(WARN, f"no {METRICS_TEST_SET} {metric} for {absent}", **metadata)
    metadata["skim_minus_base"] = _round(skim - base)
    summary = f"{METRICS_TEST_SET} {metric}: {skim_model} {skim:.4f} vs {base_model} {base:.4f}"
    if skim <= base:
        return fail(WARN, f"{summary}: SKIM does not beat the click-only baseline", **metadata)
    return ok(summary, **metadata)


# ----------------------------------------------------------------------------------------------- Dagster wiring


def datasets_to_check(context: dg.AssetCheckExecutionContext, storage: StorageResource, asset: str) -> list[str]:
    """The run's partition, or (no partition key) every dataset folder under `<root>/<asset>/`."""
    if context.has_partition_key:
        return [context.partition_key]
    folder = storage.root_path / asset
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def evaluate_safely(evaluate: Callable[[StorageResource, str], Outcome], storage: StorageResource, dataset: str) -> Outcome:
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
              evaluate: Callable[[StorageResource, str], Outcome]) -> dg.AssetCheckResult:
    datasets = datasets_to_check(context, storage, asset)
    if not datasets:
        return to_result(fail(ERROR, f"no partition key and no materialized dataset under {storage.root_path / asset}"))
    return to_result(merge_outcomes({d: evaluate_safely(evaluate, storage, d) for d in datasets}))


def build_check(
    asset: str, name: str, evaluate: Callable[[StorageResource, str], Outcome], *, blocking: bool, description: str,
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


documents_check = build_check(
    "documents", "documents_valid", evaluate_documents, blocking=True,
    description="Canonical columns (doc_id, title, metadata), unique non-empty doc ids, non-empty titles.",
)
queries_check = build_check(
    "queries", "queries_valid", evaluate_queries, blocking=True,
    description="Canonical columns (query_id, text, split), unique non-empty query ids, non-empty text, known splits.",
)
relevance_labels_check = build_check(
    "relevance_labels", "relevance_labels_valid", evaluate_relevance_labels, blocking=True,
    additional_deps=("documents", "queries"),
    description="Canonical columns (query_id, doc_id, relevance), unique pairs, every query and doc id known.",
)
teacher_demonstrations_check = build_check(
    "teacher_demonstrations", "parse_rate", evaluate_teacher_demonstrations, blocking=True,
    description=f"Documents with >= 1 parsed query / documents answered: ERROR below {PARSE_RATE_ERROR}, "
                f"WARN below {PARSE_RATE_WARN}.",
)
synthetic_queries_checks = [
    build_check(
        asset, "generation_quality", evaluate_synthetic_queries(asset), blocking=True,
        description=f"ERROR when no query was parsed; WARN when the quality filter kept none, the duplicate rate > "
                    f"{DUPLICATE_RATE_WARN} or the empty-output rate > {EMPTY_OUTPUT_RATE_WARN}.",
    )
    for asset in SYNTHETIC_QUERY_ASSETS
]
query_quality_checks = [
    build_check(
        asset, "query_quality", evaluate_query_quality(asset, None if asset == "teacher_demonstrations" else "judged"),
        blocking=False, additional_deps=("documents",),
        description=f"WARN when under {GROUNDED_SHARE_WARN:.0%} of the written queries are grounded in their document "
                    f"or over {JUNK_SHARE_WARN:.0%} are junk (measured before the generation's quality filter).",
    )
    for asset in ("teacher_demonstrations", *SYNTHETIC_QUERY_ASSETS)
]
label_repair_check = build_check(
    "label_repair_report", "skim_repair_precision", evaluate_label_repair, blocking=False,
    description=f"WARN when under {REPAIR_PRECISION_WARN:.0%} of SKIM's added pairs are held-back train labels.",
)
mapped_pairs_checks = [
    build_check(
        asset, "weights_within_tau", evaluate_mapped_pairs(asset), blocking=True, additional_deps=("documents",),
        description="ERROR when a pair weight lies outside [tau, 1] (tau from dataset.json, default 0.8); "
                    "WARN when no pair was mapped; reports document coverage.",
    )
    for asset in MAPPED_PAIRS_ASSETS
]
FINITE_WEIGHTS_DESCRIPTION = "Every tensor of the saved weights is finite (no NaN / inf)."
retriever_weight_checks = [
    build_check(name, "weights_finite", evaluate_finite_weights(name, RETRIEVER_FOLDER, "*.safetensors",
                                                                nonfinite_in_safetensors),
                blocking=True, description=FINITE_WEIGHTS_DESCRIPTION)
    for name in RETRIEVERS
]
lora_weight_checks = [
    build_check(name, "weights_finite", evaluate_finite_weights(name, LORA_FOLDER, "adapter_model.safetensors",
                                                                nonfinite_in_safetensors),
                blocking=True, description=FINITE_WEIGHTS_DESCRIPTION)
    for name in LORA_ADAPTERS
]
ova_weight_checks = [
    build_check(name, "weights_finite", evaluate_finite_weights(name, "", HEAD_FILE, nonfinite_in_npz,
                                                                required=("weights", "biases")),
                blocking=True, description=FINITE_WEIGHTS_DESCRIPTION)
    for name in OVA_HEADS
]
metric_range_check = build_check(
    "retrieval_metrics", "metrics_in_unit_interval", evaluate_metric_ranges, blocking=True,
    description="Every metric value (P@k, R@k, nDCG@k, PSP@k) is a number in [0, 1].",
)
skim_beats_base_check = build_check(
    "retrieval_metrics", "skim_beats_base_unbiased_r100", evaluate_skim_beats_base, blocking=False,
    description="WARN when skim_retriever does not beat base_retriever on unbiased R@100.",
)

all_checks: list = [
    documents_check, queries_check, relevance_labels_check, teacher_demonstrations_check,
    *synthetic_queries_checks, *query_quality_checks, *mapped_pairs_checks, label_repair_check,
    *retriever_weight_checks, *lora_weight_checks, *ova_weight_checks,
    metric_range_check, skim_beats_base_check,
]
