
import os
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.datasets import DatasetSpec, read_spec
from ..lib.layout import Layout
from ..lib.storage import (
    TableSetPins,
    missing_files,
    new_staging_directory,
    read_artifact_table,
    rematerialize_hint,
    replace_directory,
    write_folder_manifest,
    write_parquet_atomic,
    write_table_set,
)

DEFAULT_ROOT = os.environ.get("SKIM_DATA_ROOT", "data")


class StorageResource(dg.ConfigurableResource):
    """The storage root and its layout (`lib.layout.Layout`, the one owner of every path under it: ask it, never
    join paths): inputs in `<root>/inputs/<dataset>/`, every artifact in `<root>/<asset>/<dataset>/` (tables as
    `<table>.parquet`, models as folders) written atomically by the artifact IO manager (`resources/artifacts.py`),
    a step's own working state in `<root>/<kind>/<dataset>/` (`step_dir`), shared stores (`store`), and
    `<root>/skim.duckdb`, the catalogue of the tables."""

    root: str = Field(default=DEFAULT_ROOT, description="Storage root (default: $SKIM_DATA_ROOT or ./data).")

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def root_path(self) -> Path:
        return self.layout.root

    def inputs(self, dataset: str) -> Path:
        return self.layout.inputs(dataset)

    def dataset_spec(self, dataset: str) -> DatasetSpec:
        """The registered dataset's settings (`<root>/inputs/<dataset>/dataset.json`)."""
        return read_spec(self.inputs(dataset))

    def artifact_dir(self, asset: str, dataset: str | None) -> Path:
        """`<root>/<asset>/<dataset>`, or `<root>/<asset>` for an asset shared by every dataset (dataset None)."""
        return self.layout.artifact(asset, dataset)

    def step_dir(self, kind: str, dataset: str, *parts: str) -> Path:
        """A step's own working state that is not an artifact, of a kind `lib.layout` names (`EMBEDDING_CACHE`,
        `MAPPING_STATE`, a generation's shards, ...): `<root>/<kind>/<dataset>/<parts...>`."""
        return self.layout.state(kind, dataset, *parts)

    def store(self, kind: str, *parts: str) -> Path:
        """State shared by every dataset (`lib.layout.TEACHER_CACHE`, `STUDENT_MODELS`)."""
        return self.layout.store(kind, *parts)

    def figure_path(self, asset: str, dataset: str, name: str) -> Path:
        """Where a table asset's plot is saved (`<root>/figures/<dataset>/<asset>-<name>`); folder artifacts keep
        their plots inside the folder."""
        path = self.layout.figure(asset, dataset, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def figures(self, dataset: str) -> list[Path]:
        """Every plot drawn for a dataset (`lib.layout.Layout.figures`)."""
        return self.layout.figures(dataset)

    def staging_dir(self) -> Path:
        """A fresh folder to write a folder artifact into; return it from the asset and the IO manager moves it
        into place whole. Folders of killed steps (their process gone) are removed when the next one is asked for."""
        return new_staging_directory(self.layout.staging)

    def adopt_folder(self, staged: Path, asset: str, dataset: str | None) -> Path:
        """Move a finished staged folder to `<root>/<asset>/<dataset>`, replacing the previous artifact whole."""
        staged = Path(staged).resolve()
        if self.layout.staging not in staged.parents:
            raise ValueError(f"{staged} is not a staging folder of {self.root_path}: write folder artifacts into "
                             "`storage.staging_dir()`")
        write_folder_manifest(staged)
        return replace_directory(staged, self.artifact_dir(asset, dataset))

    def has_artifact(self, asset: str, dataset: str | None) -> bool:
        """Whether the asset's artifact is there whole: a table, or a folder none of whose files were deleted."""
        folder = self.artifact_dir(asset, dataset)
        return folder.exists() and not missing_files(folder)

    def table_path(self, asset: str, dataset: str | None, table: str = "data") -> Path:
        return self.layout.table(asset, dataset, table)

    def write_table(self, asset: str, dataset: str | None, frame: pl.DataFrame, table: str = "data") -> Path:
        return write_parquet_atomic(frame, self.table_path(asset, dataset, table))

    def write_table_set(self, step: str, dataset: str, tables: dict[str, dict[str, pl.DataFrame]]) -> dict:
        """Several assets' tables written as one set (all old or all new for readers): see `lib.storage`."""
        for asset, frames in tables.items():
            for table in frames:
                self.table_path(asset, dataset, table)  # refused unless inside the root
        return write_table_set(self.root_path, step, dataset, tables)

    def read_table(self, asset: str, dataset: str, table: str = "data") -> pl.DataFrame:
        return self.read_tables(dataset, asset, table=table)[0]

    def read_asset_tables(self, asset: str, dataset: str, *tables: str) -> list[pl.DataFrame]:
        """Several tables of one asset (e.g. `raw` and `data`) from one version of it, even while it is written
        again."""
        with TableSetPins() as pins:
            return [self._read_pinned(pins, asset, dataset, table) for table in tables]

    def read_tables(self, dataset: str, *assets: str, table: str = "data") -> list[pl.DataFrame]:
        """Table `table` of each asset, those of one table set (e.g. documents and queries) from one import even
        while it is written again."""
        with TableSetPins() as pins:
            return [self._read_pinned(pins, asset, dataset, table) for asset in assets]

    def _read_pinned(self, pins: TableSetPins, asset: str, dataset: str, table: str) -> pl.DataFrame:
        """One stored table, from the version of its set that `pins` holds."""
        path = pins.folder(self.artifact_dir(asset, dataset)) / f"{table}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{self.table_path(asset, dataset, table)} is missing: materialize asset "
                                    f"'{asset}' for partition '{dataset}' first")
        return read_artifact_table(path, rematerialize_hint(asset, dataset))
