"""A DuckDB catalogue of views over every Parquet artifact, so an analyst can query results with SQL.

Artifacts live at `<root>/<asset>/<dataset>/<table>.parquet`; each (asset, table) becomes one view across all
datasets, with a `dataset` column: `<asset>` for table 'data', else `<asset>__<table>`. Folders that hold inputs,
caches or work state rather than artifacts (`NOT_ARTIFACTS`, `*_shards`, `*_checkpoints`, hidden ones) get no view.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import duckdb

from .formats import TRAINING_VIEW_TABLES

# Top-level folders of the storage root that are not assets: inputs, caches and resumable work state.
NOT_ARTIFACTS = frozenset({"inputs", "click_log_cache", "embedding_cache", "mapping_state", "teacher_cache",
                           "figures", "document_index", "import_state", "slm_size_students", "student_models"})


CATALOGUE_FILE = "skim.duckdb"  # under the storage root


def is_artifact_folder(name: str) -> bool:
    """Whether a top-level folder of the storage root holds an asset's artifacts (one folder per dataset)."""
    # `<asset>_shards`: generation's resumable shards; `*_checkpoints`: mid-training checkpoints (lib.checkpoints)
    return not (name.startswith(".") or name in NOT_ARTIFACTS or name.endswith(("_shards", "_checkpoints")))


# The training view's tables are catalogued where they are made; the artifacts that carry them along (links to the
# same files) would only repeat them under another name.
VIEW_SOURCES = ("click_log_pairs", "click_train_pairs", "train_pairs")


def _view_name(asset: str, table: str) -> str:
    name = asset if table == "data" else f"{asset}__{table}"
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def refresh_catalogue(root: str | Path, database: str | Path | None = None) -> list[str]:
    """(Re)create one view per artifact table; returns the view names. Views read the files at query time."""
    root = Path(root).resolve()
    database = Path(database) if database else root / CATALOGUE_FILE
    tables: dict[tuple[str, str], str] = defaultdict(str)
    for path in sorted(root.glob("*/*/*.parquet")):
        asset = path.parts[-3]
        if not is_artifact_folder(asset) or (path.stem in TRAINING_VIEW_TABLES and asset not in VIEW_SOURCES):
            continue
        tables[(asset, path.stem)] = str(root / asset / "*" / f"{path.stem}.parquet")
    views = []
    with duckdb.connect(str(database)) as con:
        for (asset, table), pattern in sorted(tables.items()):
            view = _view_name(asset, table)
            escaped = pattern.replace("'", "''")
            con.execute(
                f"CREATE OR REPLACE VIEW {view} AS SELECT * EXCLUDE (filename), "
                f"regexp_extract(filename, '([^/]+)/[^/]+\\.parquet$', 1) AS dataset "
                f"FROM read_parquet('{escaped}', filename = true, union_by_name = true)"
            )
            views.append(view)
    return views
