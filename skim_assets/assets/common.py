"""Metadata helpers and settings shared by the asset modules."""


from pathlib import Path

import dagster as dg
import polars as pl

from ..deployment import GPU_TAGS, gpu_op_tags
from ..lib.storage import directory_size_bytes

# Model steps (training, distillation, generation, ranking) share the `gpu` pool and carry the GPU op tags: the
# local executor runs them one at a time, the k8s profile gives each a GPU (see `deployment.py`). Asset tags
# repeat the marker so the UI can filter model assets.
GPU_POOL = "gpu"
MODEL_STEP = {"pool": GPU_POOL, "tags": GPU_TAGS, "op_tags": gpu_op_tags()}
# Cheap training tables follow their upstream (a new click drop, a retrained encoder, new synthetic queries).
EAGER = dg.AutomationCondition.eager()


def markdown_cell(value, width: int = 80) -> str:
    """A value as one Markdown table cell: cut to `width` first, then line breaks folded to spaces and `\\`, `|`
    escaped, so no value can end its row or add a column."""
    text = " ".join(str(value)[:width].splitlines())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def table_metadata(frame: pl.DataFrame, path: Path, preview_rows: int = 5) -> dict:
    """Row count, column schema (Dagster's `dagster/column_schema`: the UI's Columns tab), path and a Markdown
    preview of a written table."""
    preview = frame.head(preview_rows)
    header = ("| " + " | ".join(markdown_cell(c) for c in preview.columns) + " |\n|" + "---|" * len(preview.columns)
              + "\n")
    rows = "".join(
        "| " + " | ".join(markdown_cell(v) for v in row) + " |\n" for row in preview.iter_rows()
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(name, str(dtype))
                                                         for name, dtype in frame.schema.items()]),
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(header + rows),
    }


def directory_metadata(path: Path) -> dict:
    return {
        "path": dg.MetadataValue.path(str(path)),
        "size_mb": dg.MetadataValue.float(round(directory_size_bytes(path) / 2**20, 2)),
    }


def pairs_result(storage, asset: str, dataset: str, pairs: pl.DataFrame, extra: dict | None = None) -> dg.MaterializeResult:
    """Write a training-pairs table and describe it: rows, preview and a count per `source`."""
    path = storage.write_table(asset, dataset, pairs)
    by_source = dict(pairs.group_by("source").len().iter_rows())
    return dg.MaterializeResult(
        metadata=table_metadata(pairs, path) | {f"pairs_{s}": dg.MetadataValue.int(n) for s, n in by_source.items()}
        | (extra or {})
    )


def all_queries(storage, dataset: str, pairs_asset: str | None = None) -> pl.DataFrame:
    """The dataset's queries plus those that only occur in click logs and, when `pairs_asset` is given, the
    training points that asset created (a pairs table may carry a side table `queries`, e.g. Gandalf's)."""
    queries = storage.read_table("queries", dataset)
    for asset in ("click_log_pairs", pairs_asset):
        extra = storage.table_path(asset, dataset, "queries") if asset else None
        if extra is not None and extra.exists():
            queries = pl.concat([queries, pl.read_parquet(extra)])
    return queries


def known_queries(storage, dataset: str) -> dict:
    """doc_id -> texts of a few of its clicked train queries (what the teacher and student prompts show)."""
    from ..lib.demonstrations import known_queries_by_doc

    return known_queries_by_doc(storage.read_table("train_pairs", dataset), all_queries(storage, dataset))


def quality_metadata(figures: dict, prefix: str) -> dict:
    """Query-quality figures (`lib.quality.query_quality`) as asset metadata named `<prefix>_...`."""
    return {
        f"{prefix}_queries": dg.MetadataValue.int(figures["queries"]),
        f"{prefix}_grounded_share": dg.MetadataValue.float(round(figures["grounded_share"], 4)),
        f"{prefix}_junk_share": dg.MetadataValue.float(round(figures["junk_share"], 4)),
        f"{prefix}_junk_by_reason": dg.MetadataValue.json(figures["junk_by_reason"]),
        f"{prefix}_distinct_queries_per_document": dg.MetadataValue.float(
            round(figures["distinct_queries_per_document"], 2)),
        f"{prefix}_document_coverage": dg.MetadataValue.float(round(figures["document_coverage"], 4)),
    }


def sample_markdown(judged: pl.DataFrame, documents: pl.DataFrame, n: int = 12, seed: int = 0) -> str:
    """A seeded sample of judged queries beside their document's title, as a Markdown table to read in the UI."""
    if judged.height == 0:
        return "(no queries)"
    rows = judged.sample(min(n, judged.height), seed=seed).join(documents.select("doc_id", "title"), on="doc_id",
                                                                 how="left").sort("doc_id")

    def cell(value) -> str:
        return " ".join(str(value).split()).replace("\\", "\\\\").replace("|", "\\|")[:80]

    lines = ["| doc_id | title | query | grounded | junk |", "|---|---|---|---|---|"]
    lines += [f"| {cell(r['doc_id'])} | {cell(r['title'])} | {cell(r['query'])} | {r['grounded']} | {r['junk'] or ''} |"
              for r in rows.iter_rows(named=True)]
    return "\n".join(lines)
