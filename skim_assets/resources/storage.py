
import os
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.datasets import check_dataset_name
from ..lib.storage import write_parquet_atomic, write_table_set

DEFAULT_ROOT = os.environ.get("SKIM_DATA_ROOT", "data")


class StorageResource(dg.ConfigurableResource):
    """The storage root. Inputs live in `<root>/inputs/<dataset>/`; every artifact in `<root>/<asset>/<dataset>/`
    (tables as `<table>.parquet`, models as folders), written atomically; `<root>/skim.duckdb` catalogues them."""

    root: str = Field(default=DEFAULT_ROOT, description="Storage root (default: $SKIM_DATA_ROOT or ./data).")

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def inside_root(self, *parts: str) -> Path:
        """`<root>/<parts...>`, refused (ValueError) unless it stays inside the root: the last line of defence
        against a partition key or name that would write elsewhere (`../x`, `/abs`)."""
        root = self.root_path
        path = Path(os.path.normpath(root.joinpath(*parts)))
        if path == root or root not in path.parents or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"{'/'.join(parts)!r} resolves outside the storage root {root}")
        return path

    def inputs(self, dataset: str) -> Path:
        return self.inside_root("inputs", check_dataset_name(dataset))

    def artifact_dir(self, asset: str, dataset: str) -> Path:
        return self.inside_root(asset, check_dataset_name(dataset))

    def table_path(self, asset: str, dataset: str, table: str = "data") -> Path:
        return self.inside_root(asset, check_dataset_name(dataset), f"{table}.parquet")

    def write_table(self, asset: str, dataset: str, frame: pl.DataFrame, table: str = "data") -> Path:
        return write_parquet_atomic(frame, self.table_path(asset, dataset, table))

    def write_table_set(self, step: str, dataset: str, tables: dict[str, dict[str, pl.DataFrame]]) -> dict:
        """Several assets' tables written as one set (all old or all new for readers): see `lib.storage`."""
        for asset, frames in tables.items():
            for table in frames:
                self.inside_root(asset, check_dataset_name(dataset), f"{table}.parquet")
        return write_table_set(self.root_path, step, dataset, tables)

    def read_table(self, asset: str, dataset: str, table: str = "data") -> pl.DataFrame:
        path = self.table_path(asset, dataset, table)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: materialize asset '{asset}' for partition '{dataset}' first")
        return pl.read_parquet(path)
