"""Where everything lives under the storage root: the one owner of the layout.

    <root>/inputs/<dataset>/              a registered dataset: dataset.json, its raw files, clicks/ drops
    <root>/<asset>/<dataset>/             an asset's artifact: tables as <table>.parquet, or a model folder
    <root>/<asset>/                       an artifact shared by every dataset (base_slm)
    <root>/<state>/<dataset>/...          a step's own working state: caches, checkpoints, shards (STEP_STATE)
    <root>/<store>/...                    state shared by every dataset: the teacher's answers, bundled students
    <root>/figures/<dataset>/             the plots table assets draw
    <root>/.staging/, <root>/.step_outputs/, <root>/.table_sets/   folders being written, op outputs, table sets
    <root>/skim.duckdb                    the DuckDB catalogue

Every other module asks a `Layout` (the storage resource owns one) for a place by name; a step's working state
must be of a kind named here, so what is *not* an artifact (the catalogue's views, `skim import --replace`'s
stale list) is derived from this module and cannot fall behind a new kind of state.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

INPUTS = "inputs"
SPEC_FILE = "dataset.json"  # in a registered dataset's input folder: its settings
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # matched whole (fullmatch): no trailing newline
FIGURES = "figures"
STAGING = ".staging"  # folders steps write before the IO manager moves them into place
STEP_OUTPUTS = ".step_outputs"  # JSON values passed between the ops of a graph asset, per run
CATALOGUE_FILE = "skim.duckdb"

# A step's own working state, per dataset (`Layout.state`): never an artifact, never catalogued.
EMBEDDING_CACHE = "embedding_cache"  # vectors by text hash, per encoder
DOCUMENT_INDEX = "document_index"  # the pretrained space's search index over the documents
MAPPING_STATE = "mapping_state"  # the mapping's candidates and searched targets, for incremental refreshes
CLICK_LOG_CACHE = "click_log_cache"  # click-log drops read once
IMPORT_STATE = "import_state"  # the digest of the raw files the tables were imported from
LORA_CHECKPOINTS = "lora_checkpoints"  # a LoRA step still training
DUAL_ENCODER_CHECKPOINTS = "dual_encoder_checkpoints"  # a dual encoder still training
SLM_SIZE_STUDENTS = "slm_size_students"  # the student-size sweep's adapters and shards, per student
SHARDS_SUFFIX = "_shards"  # `<asset>_shards`: a generation's checkpointed shards
STEP_STATE = frozenset({EMBEDDING_CACHE, DOCUMENT_INDEX, MAPPING_STATE, CLICK_LOG_CACHE, IMPORT_STATE,
                        LORA_CHECKPOINTS, DUAL_ENCODER_CHECKPOINTS, SLM_SIZE_STUDENTS})

# State shared by every dataset (`Layout.store`).
TEACHER_CACHE = "teacher_cache"  # the teacher's answers by prompt hash, and batch mode's state
STUDENT_MODELS = "student_models"  # bundled small LMs exported once
STORES = frozenset({TEACHER_CACHE, STUDENT_MODELS})

NOT_ARTIFACTS = frozenset({INPUTS, FIGURES}) | STEP_STATE | STORES


class DatasetNameError(ValueError):
    """A dataset name that cannot be a partition key and a folder name."""


def check_dataset_name(name: str) -> str:
    """`name` if it is a safe partition key and folder name (letters, digits and `_.-`, starting with a letter or
    digit: no path separator, no `..`, no trailing newline); else DatasetNameError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DatasetNameError(f"dataset name {name!r} must match {NAME_PATTERN.pattern} "
                               "(it becomes a partition key and a folder)")
    return name


def shards_state(asset: str) -> str:
    """The state kind holding a generation asset's checkpointed shards."""
    return f"{asset}{SHARDS_SUFFIX}"


def is_artifact_folder(name: str) -> bool:
    """Whether a top-level folder of the storage root holds an asset's artifacts (one folder per dataset)."""
    return not (name.startswith(".") or name in NOT_ARTIFACTS or name.endswith(SHARDS_SUFFIX))


class Layout:
    """The places under one storage root. Names that end up in a path (datasets, assets, parts) are refused when
    they would leave the root."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def inside(self, *parts: str) -> Path:
        """`<root>/<parts...>`, refused (ValueError) unless it stays inside the root: the last line of defence
        against a partition key or name that would write elsewhere (`../x`, `/abs`)."""
        path = Path(os.path.normpath(self.root.joinpath(*parts)))
        if path == self.root or self.root not in path.parents or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"{'/'.join(parts)!r} resolves outside the storage root {self.root}")
        return path

    def inputs(self, dataset: str) -> Path:
        """A registered dataset's folder: its dataset.json, raw files and click-log drops."""
        return self.inside(INPUTS, check_dataset_name(dataset))

    def datasets(self) -> list[str]:
        """The datasets registered under the root (an `inputs/<name>/dataset.json` with a valid name), sorted."""
        names = []
        for spec in sorted((self.root / INPUTS).glob(f"*/{SPEC_FILE}")):
            try:
                names.append(check_dataset_name(spec.parent.name))
            except ValueError:
                continue
        return names

    def artifact(self, asset: str, dataset: str | None) -> Path:
        """`<root>/<asset>/<dataset>`, or `<root>/<asset>` for an asset shared by every dataset (dataset None)."""
        path = self.inside(asset, check_dataset_name(dataset)) if dataset is not None else self.inside(asset)
        if not is_artifact_folder(asset):
            raise ValueError(f"{asset!r} names step state, not an asset")
        return path

    def table(self, asset: str, dataset: str | None, table: str = "data") -> Path:
        return self.artifact(asset, dataset) / f"{table}.parquet"

    def artifacts_of(self, dataset: str) -> list[str]:
        """The assets that have an artifact for `dataset`, sorted."""
        return sorted(path.parent.name for path in self.root.glob(f"*/{check_dataset_name(dataset)}")
                      if is_artifact_folder(path.parent.name) and path.exists())

    def artifact_tables(self) -> list[tuple[str, str]]:
        """(asset, table) of every stored artifact table, over all datasets, sorted."""
        return sorted({(path.parts[-3], path.stem) for path in self.root.glob("*/*/*.parquet")
                       if is_artifact_folder(path.parts[-3])})

    def table_pattern(self, asset: str, table: str) -> str:
        """A glob of table `table` of `asset` across every dataset."""
        return str(self.root / asset / "*" / f"{table}.parquet")

    def state(self, kind: str, dataset: str, *parts: str) -> Path:
        """A step's own working state of a kind named in `STEP_STATE` (or a generation's shards):
        `<root>/<kind>/<dataset>/<parts...>`."""
        if kind not in STEP_STATE and not kind.endswith(SHARDS_SUFFIX):
            raise ValueError(f"{kind!r} is no kind of step state the layout knows: add it to lib/layout.py")
        return self.inside(kind, check_dataset_name(dataset), *parts)

    def store(self, kind: str, *parts: str) -> Path:
        """State shared by every dataset, of a kind named in `STORES`: `<root>/<kind>/<parts...>`."""
        if kind not in STORES:
            raise ValueError(f"{kind!r} is no shared store the layout knows: add it to lib/layout.py")
        return self.inside(kind, *parts)

    def figure(self, asset: str, dataset: str, name: str) -> Path:
        """Where a table asset's plot is saved (`<root>/figures/<dataset>/<asset>-<name>`); folder artifacts keep
        their plots inside the folder."""
        return self.inside(FIGURES, check_dataset_name(dataset), f"{asset}-{name}")

    def figures(self, dataset: str) -> list[Path]:
        """Every plot drawn for a dataset: table assets' (`figures/<dataset>/`) and the ones folder artifacts keep
        (`<asset>/<dataset>/*.png`, e.g. loss curves), by path."""
        return sorted(set(self.root.glob(f"*/{check_dataset_name(dataset)}/*.png")))

    @property
    def staging(self) -> Path:
        return self.root / STAGING

    def step_output(self, run_id: str, step: str, name: str) -> Path:
        """A JSON value passed between two ops of a graph asset in run `run_id`."""
        return self.inside(STEP_OUTPUTS, run_id, step, name)

    @property
    def catalogue(self) -> Path:
        return self.root / CATALOGUE_FILE
