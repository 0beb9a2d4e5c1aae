
import os
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.storage import write_parquet_atomic

DEFAULT_ROOT = os.environ.get("SKIM_DATA_ROOT", "data")


class StorageResource(dg.ConfigurableResource):
    """The storage root. Inputs live in `<root>/inputs/<dataset>/`; every artifact in `<root>/<asset>/<dataset>/`
    (tables as `<table>.parquet`, models as folders), written atomically; `<root>/skim.duckdb` catalogues them."""

    root: str = Field(default=DEFAULT_ROOT, description="Storage root (default: $SKIM_DATA_ROOT or ./data).")

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def inputs(self, dataset: str) -> Path:
        return self.root_path / "inputs" / dataset

    def artifact_dir(self, asset: str, dataset: str) -> Path:
        return self.root_path / asset / dataset

    def table_path(self, asset: str, dataset: str, table: str = "data") -> Path:
        return self.artifact_dir(asset, dataset) / f"{table}.parquet"

    def write_table(self, asset: str, dataset: str, frame: pl.DataFrame, table: str = "data") -> Path:
        return write_parquet_atomic(frame, self.table_path(asset, dataset, table))

    def read_table(self, asset: str, dataset: str, table: str = "data") -> pl.DataFrame:
        path = self.table_path(asset, dataset, table)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: materialize asset '{asset}' for partition '{dataset}' first")
        return pl.read_parquet(path)
