"""A DuckDB catalogue of views over every Parquet artifact, so an analyst can query results with SQL.

Artifacts live at `<root>/<asset>/<dataset>/<table>.parquet`; each (asset, table) becomes one view across all
datasets, with a `dataset` column: `<asset>` for table 'data', else `<asset>__<table>`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import duckdb


def _view_name(asset: str, table: str) -> str:
    name = asset if table == "data" else f"{asset}__{table}"
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def refresh_catalogue(root: str | Path, database: str | Path | None = None) -> list[str]:
    """(Re)create one view per artifact table; returns the view names. Views read the files at query time."""
    root = Path(root).resolve()
    database = Path(database) if database else root / "skim.duckdb"
    tables: dict[tuple[str, str], str] = defaultdict(str)
    for path in sorted(root.glob("*/*/*.parquet")):
        asset = path.parts[-3]
        if asset.startswith(".") or asset == "inputs":
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
