"""A DuckDB catalogue of views over every Parquet artifact, so an analyst can query results with SQL.

Artifacts live at `<root>/<asset>/<dataset>/<table>.parquet`; each (asset, table) becomes one view across all
datasets, with a `dataset` column: `<asset>` for table 'data', else `<asset>__<table>`. Folders that hold inputs,
caches or work state rather than artifacts (`lib.layout.is_artifact_folder`) get no view.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from .formats import TRAINING_VIEW_TABLES
from .layout import Layout

# The training view's tables are catalogued where they are made; the artifacts that carry them along (links to the
# same files) would only repeat them under another name.
VIEW_SOURCES = ("click_log_pairs", "click_train_pairs", "train_pairs")


def _view_name(asset: str, table: str) -> str:
    name = asset if table == "data" else f"{asset}__{table}"
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def refresh_catalogue(root: str | Path | Layout, database: str | Path | None = None) -> list[str]:
    """(Re)create one view per artifact table; returns the view names. Views read the files at query time."""
    layout = root if isinstance(root, Layout) else Layout(root)
    database = Path(database) if database else layout.catalogue
    tables = {(asset, table): layout.table_pattern(asset, table) for asset, table in layout.artifact_tables()
              if table not in TRAINING_VIEW_TABLES or asset in VIEW_SOURCES}
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
