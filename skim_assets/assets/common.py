"""Metadata helpers shared by the asset modules."""


from pathlib import Path

import dagster as dg
import polars as pl

from ..lib.storage import directory_size_bytes


def table_metadata(frame: pl.DataFrame, path: Path, preview_rows: int = 5) -> dict:
    """Row count, path and a Markdown preview of a written table."""
    preview = frame.head(preview_rows)
    header = "| " + " | ".join(preview.columns) + " |\n|" + "---|" * len(preview.columns) + "\n"
    rows = "".join(
        "| " + " | ".join(str(v).replace("|", "\\|")[:80] for v in row) + " |\n" for row in preview.iter_rows()
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(header + rows),
    }


def directory_metadata(path: Path) -> dict:
    return {
        "path": dg.MetadataValue.path(str(path)),
        "size_mb": dg.MetadataValue.float(round(directory_size_bytes(path) / 2**20, 2)),
    }


def all_queries(storage, dataset: str) -> pl.DataFrame:
    """The dataset's queries plus those that only occur in click logs (their text is needed for training)."""
    queries = storage.read_table("queries", dataset)
    click_queries = storage.table_path("click_log_pairs", dataset, "queries")
    if click_queries.exists():
        queries = pl.concat([queries, pl.read_parquet(click_queries)])
    return queries
