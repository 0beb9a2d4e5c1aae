"""The IO manager that owns every artifact: assets return tables and folders, and receive their inputs as
function parameters, so an asset's signature is its lineage.

What an asset returns decides how it is stored (all writes atomic, through `StorageResource`):
- a polars `DataFrame`: the asset's table, `<root>/<asset>/<dataset>/data.parquet`;
- `Tables`: the asset's table (`data`) and side tables of the same step (e.g. generation's `raw` outputs),
  written as one set, so readers see all old or all new tables;
- a `Path` to a folder from `storage.staging_dir()` (a model): moved whole to `<root>/<asset>/<dataset>/`.

What a parameter is annotated with decides what it receives: `pl.DataFrame` (the `data` table), `Tables` (every
table of the artifact, read when first used) or `Path` (the folder; never a pickle). An input declared with
`dg.AssetIn(metadata={"optional": True})` receives None when the artifact was never materialized (the evaluation
of a partial run).
"""

import hashlib
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from ..lib.formats import TRAINING_VIEW_TABLES
from ..lib.report_tables import NOT_APPLICABLE, report_column, report_columns, shown_value
from ..lib.storage import (
    TableSetPins,
    directory_size_bytes,
    file_digest,
    missing_files,
    peak_rss_mib,
    read_artifact_table,
    read_json,
    rematerialize_hint,
    write_json_atomic,
)
from .storage import StorageResource

DATA = "data"  # the table an asset *is*; other tables of the artifact are its side tables
PREVIEW_ROWS = 5
SMALL_TABLE_ROWS = 25  # a table this small (a report: one row per method) is previewed whole
PREVIEW_CELL_CHARS = 60  # wider cells stretch the UI's metadata panel past the screen


class Tables(Mapping[str, pl.DataFrame]):
    """The tables of one artifact: `data` and side tables, from frames (an output) or from a folder (an input,
    each table read on first use). An output's side table may be the Path of a stored table (another artifact's,
    carried along, e.g. a training view's documents): the IO manager links it instead of writing it again."""

    def __init__(self, data: pl.DataFrame | None = None, folder: Path | None = None,
                 **side: pl.DataFrame | Path):
        self._frames: dict[str, pl.DataFrame] = ({DATA: data} if data is not None else {}) | {
            name: table for name, table in side.items() if isinstance(table, pl.DataFrame)}
        self._linked: dict[str, Path] = {name: Path(table) for name, table in side.items()
                                         if not isinstance(table, pl.DataFrame)}
        self.folder = folder
        if folder is None and DATA not in self._frames:
            raise ValueError("an artifact's tables need a `data` table")

    def path(self, table: str = DATA) -> Path:
        """Where a table of a loaded artifact (or a carried table) lives (e.g. to digest or carry it)."""
        if table in self._linked:
            return self._linked[table]
        if self.folder is None:
            raise ValueError("tables built in memory have no path until the IO manager writes them")
        return self.folder / f"{table}.parquet"

    def carried(self, table: str = DATA) -> pl.DataFrame | Path:
        """A table as another artifact's side table: the path of a stored one (linked, not rewritten), else the
        frame."""
        if table in self._linked:
            return self._linked[table]
        if self.folder is not None:  # loaded from storage (read or not): the stored file
            if not self.path(table).exists():
                raise KeyError(f"no table {table!r} in {self.folder}")
            return self.path(table)
        return self[table]

    def digest(self, table: str = DATA) -> str:
        """sha1 of a stored table's bytes: its identity (our Parquet writes are deterministic)."""
        return file_digest(self.path(table))

    def stored(self) -> dict[str, pl.DataFrame | Path]:
        """What the IO manager writes: each table as a frame, or as the path of a stored table to link."""
        return {name: self.carried(name) for name in self}

    @property
    def data(self) -> pl.DataFrame:
        return self[DATA]

    def __getitem__(self, table: str) -> pl.DataFrame:
        if table not in self._frames:
            if table not in self._linked and (self.folder is None or not self.path(table).exists()):
                raise KeyError(f"no table {table!r} in {self.folder or 'these tables'}")
            self._frames[table] = read_artifact_table(
                self.path(table), "write it again: materialize the asset that wrote it for this dataset")
        return self._frames[table]

    def _names(self) -> list[str]:
        stored = sorted(p.stem for p in self.folder.glob("*.parquet")) if self.folder is not None else []
        return list(dict.fromkeys([*self._frames, *self._linked, *stored]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


class TrainingView:
    """What a training step may see, carried by every training artifact from `train_pairs` down (its side tables
    `TRAINING_VIEW_TABLES`, hard links to the same files): the documents, every query (the dataset's and those
    only the click logs name), the click-log training pairs and their impressions. Never the held-back labels.

    Each artifact brings the texts it refers to, so an asset reads them from the input it derives from, and the
    lineage shows that one edge instead of an edge to every dataset table."""

    def __init__(self, tables: Tables):
        missing = [t for t in TRAINING_VIEW_TABLES if t not in tables]
        if missing:
            raise KeyError(f"{tables.folder or 'these tables'} carries no training view ({', '.join(missing)} "
                           "missing): materialize it again with this version")
        self.tables = tables

    @property
    def documents(self) -> pl.DataFrame:
        return self.tables["documents"]

    @property
    def queries(self) -> pl.DataFrame:
        return self.tables["queries"]

    @property
    def clicks(self) -> pl.DataFrame:
        """The click-log training pairs (`train_pairs`)."""
        return self.tables["click_pairs"]

    @property
    def impressions(self) -> pl.DataFrame | None:
        """What the engine showed train queries, clicked or not; None when no log records any."""
        impressions = self.tables["impressions"]
        return impressions if impressions.height else None

    def generation_sources(self, direction: str) -> tuple[pl.DataFrame, dict]:
        """What the teacher and the student write for in the dataset's direction, and each source's known outputs
        (`lib.demonstrations.generation_sources`, over every query, click-log ones included)."""
        from ..lib.demonstrations import generation_sources

        return generation_sources(direction, self.documents, self.queries, self.clicks)

    def carried_by(self, data: pl.DataFrame, **side: pl.DataFrame | Path) -> Tables:
        """A new artifact's tables: `data` and `side`, carrying this view along (a side table given here, e.g.
        Gandalf's `queries` with its label-text points, replaces the carried one)."""
        return Tables(data, **({t: self.tables.carried(t) for t in TRAINING_VIEW_TABLES} | side))


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    """The table's columns and types, each known report column (`lib.report_tables`) with what it means."""
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype), description=report_column(name).description or None)
                                   for name, dtype in frame.schema.items()])


def table_preview(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> dg.TableMetadataValue:
    """The first rows as a Dagster table, every row of a small one (strings cut to PREVIEW_CELL_CHARS, floats to
    4 significant digits: 0.41000000000000003 reads 0.41)."""

    def cell(value):
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            return shown_value(value, "number")
        return str(value)[:PREVIEW_CELL_CHARS]

    shown = frame if frame.height <= SMALL_TABLE_ROWS else frame.head(rows)
    records = [dg.TableRecord({k: cell(v) for k, v in row.items()}) for row in shown.iter_rows(named=True)]
    return dg.MetadataValue.table(records, schema=column_schema(frame))


def report_table(frame: pl.DataFrame, overrides: dict | None = None) -> dg.TableMetadataValue:
    """A report as the UI shows it inline: every row, values as `lib.report_tables` formats them (shares as
    percentages, settings as set, "n/a" where a figure does not apply), each column typed and described (the
    table's "Show schema")."""
    columns = report_columns(frame, overrides)

    def cell(value, kind):
        shown = shown_value(value, kind)
        if shown is None:
            return "" if kind == "label" else NOT_APPLICABLE
        return shown if isinstance(shown, (bool, int, float)) else str(shown)

    records = [dg.TableRecord({c.name: cell(row[c.name], c.kind) for c in columns})
               for row in frame.iter_rows(named=True)]
    schema = dg.TableSchema(columns=[dg.TableColumn(c.name, c.unit, description=c.description or None)
                                     for c in columns])
    return dg.MetadataValue.table(records, schema=schema)


def table_metadata(frame: pl.DataFrame, path: Path, preview_rows: int = PREVIEW_ROWS) -> dict:
    """Row count, column schema (the UI's Columns tab), path and a preview of a stored table."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        "path": dg.MetadataValue.path(str(path)),
        "preview": table_preview(frame, preview_rows),
    }


def folder_metadata(path: Path) -> dict:
    return {"path": dg.MetadataValue.path(str(path)),
            "size_mb": round(directory_size_bytes(path) / 2**20, 2)}


def tables_data_version(paths: Mapping[str, Path]) -> dg.DataVersion:
    """A stored artifact's data version: the digest of its tables' bytes (our Parquet writes are deterministic), so
    the same content is the same version however often it is written."""
    return dg.DataVersion(hashlib.sha1("".join(f"{name}:{file_digest(path)};" for name, path in sorted(paths.items()))
                                       .encode()).hexdigest()[:24])


def _record_data_version(context: dg.OutputContext, paths: Mapping[str, Path]) -> None:
    """Give the materialization its tables' content digest as data version (what the UI's unsynced view and the
    model refresh compare). A context built by hand has no step to record it in."""
    try:
        step = context.step_context
    except Exception:  # noqa: BLE001 - build_output_context: no step
        return
    step.set_data_version(context.asset_key, tables_data_version(paths))


def _without_none(annotation):
    """`Path` for `Path | None` (an optional input's type); other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores what assets return and hands it to the assets downstream (see the module docstring)."""

    storage: dg.ResourceDependency[StorageResource]
    # (step, pins): the table-set versions the current step's inputs read, so inputs of one set (documents,
    # queries) come from one import even when it is written again between two of them
    _step_pins: tuple[object, TableSetPins] | None = PrivateAttr(default=None)

    def _pins(self, context: dg.InputContext) -> TableSetPins:
        try:
            step = (context.step_context.run_id, context.step_context.step.key)
        except dg.DagsterInvariantViolationError:  # a context built by hand: no step to share pins with
            step = object()
        if self._step_pins is None or self._step_pins[0] != step:
            self._release_pins()
            self._step_pins = (step, TableSetPins())
        return self._step_pins[1]

    def _release_pins(self) -> None:
        if self._step_pins is not None:
            self._step_pins[1].release()
            self._step_pins = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._release_pins()

    @staticmethod
    def _partition(context) -> str | None:
        return context.asset_partition_key if context.has_asset_partitions else None

    def _step_output_path(self, context: dg.OutputContext) -> Path:
        """Where an op output inside a graph asset lives (a small JSON value: a shard group's number or report)."""
        step = re.sub(r"[^A-Za-z0-9_.-]", "_", context.step_key)
        name = context.name + (f"-{context.mapping_key}" if context.mapping_key else "")
        return self.storage.layout.step_output(context.run_id, step, f"{name}.json")

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        self._store(context, obj)
        # The step process's peak resident memory so far, the write included (every step is a process of its own
        # under the multiprocess executor; with the in-process executor it is the run's peak up to this step): on
        # the materialization, and on the HANDLED_OUTPUT event (an op inside a graph asset has only that one).
        context.add_output_metadata({"peak_rss_mib": dg.MetadataValue.float(peak_rss_mib())})

    def _store(self, context: dg.OutputContext, obj) -> None:
        if not context.has_asset_key:  # between the ops of a graph asset: JSON, never a pickle
            write_json_atomic(obj, self._step_output_path(context))
            return
        asset, dataset = context.asset_key.path[-1], self._partition(context)
        if obj is None:  # an asset that stored its artifact itself (a multi-asset's table set) returns no value
            return
        if isinstance(obj, pl.DataFrame):
            path = self.storage.write_table(asset, dataset, obj)
            context.add_output_metadata(table_metadata(obj, path))
            _record_data_version(context, {DATA: path})
        elif isinstance(obj, Tables):
            stored = obj.stored()
            paths = self.storage.write_table_set(asset, dataset, {asset: stored})[asset]
            _record_data_version(context, paths)
            context.add_output_metadata(table_metadata(obj.data, paths[DATA]) | {
                "side_tables": {name: table.height for name, table in stored.items()
                                if name != DATA and isinstance(table, pl.DataFrame)}}
                | ({"carried_tables": sorted(n for n, t in stored.items() if not isinstance(t, pl.DataFrame))}
                   if any(not isinstance(t, pl.DataFrame) for t in stored.values()) else {}))
        elif isinstance(obj, Path):
            context.add_output_metadata(folder_metadata(self.storage.adopt_folder(obj, asset, dataset)))
        else:
            raise TypeError(f"asset {asset!r} returned a {type(obj).__name__}: return a polars DataFrame, Tables or "
                            "the Path of a folder written in `storage.staging_dir()`")

    def load_input(self, context: dg.InputContext):
        if not context.has_asset_key:
            return read_json(self._step_output_path(context.upstream_output))
        asset, dataset = context.asset_key.path[-1], self._partition(context)
        folder = self._pins(context).folder(self.storage.artifact_dir(asset, dataset))
        wanted = _without_none(context.dagster_type.typing_type)
        optional = bool((context.definition_metadata or {}).get("optional"))
        where = f"asset '{asset}'" + (f" for partition '{dataset}'" if dataset else "")
        data = folder / f"{DATA}.parquet"
        present = folder.is_dir() if wanted is Path else data.exists()
        if not present:
            if optional:
                return None
            raise FileNotFoundError(f"{data if wanted is not Path else folder} is missing: materialize {where} first")
        if wanted is Path:
            gone = missing_files(folder)
            if gone:
                raise FileNotFoundError(f"{folder} is incomplete ({', '.join(gone[:5])} deleted): "
                                        f"{rematerialize_hint(asset, dataset)}")
            return folder
        if wanted is Tables:
            return Tables(folder=folder)
        if wanted in (pl.DataFrame, typing.Any, object, None):
            return read_artifact_table(data, rematerialize_hint(asset, dataset))
        raise TypeError(f"input {context.name!r} ({where}) is annotated {wanted}: annotate it pl.DataFrame, Tables "
                        "or Path")


def storage_resources(root: str | Path) -> dict:
    """The storage resource for `root` and the IO manager over it: the two resources every asset needs."""
    storage = StorageResource(root=str(root))
    return {"storage": storage, "io_manager": ArtifactIOManager(storage=storage)}
