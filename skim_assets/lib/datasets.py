"""Dataset specs: what a dataset folder under `<root>/inputs/<name>/` holds and how to import it.

A dataset folder carries `dataset.json`:
  format            'beir' | 'xc-raw' | 'xc-bow'
  source            folder with the raw files, absolute or relative to the dataset folder ('.' = itself)
  title_words       for documents without a title, how many words of the text become the title (BEIR)
  dev_split         BEIR dev qrels: 'ignore' | 'train' | 'test'
  simulate_bias     true: labels are complete, simulate clicks with Algorithm 1; false: train labels are clicks
  exposure_k        Algorithm 1's exposure window K
  sigmoid_sampling  Algorithm 1's optional survival with probability sigmoid(score_scale * score)
  score_scale       see above
  propensity_a/_b   Jain et al. propensity constants for PSP@k (0.55/1.5; Wikipedia-like 0.5/0.4)
  prompt_style      'url-queries' | 'wiki-categories' (teacher prompt)
  generate          'queries_for_documents' | 'documents_for_queries' | '' (= by prompt style: wiki-categories
                    writes documents for queries, url-queries queries for documents)
  query_metadata_field  BEIR: the queries.jsonl key ('key' or 'metadata.key') holding each query's metadata text
  tau               SKIM mapping threshold on (1 + cos) / 2
  seed              seed of every sampling step
Click-log drops live in `<root>/inputs/<name>/clicks/` as Parquet or CSV files.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import polars as pl

from .catalogue import is_artifact_folder
from .formats import DIRECTIONS, DOCUMENTS_FOR_QUERIES, QUERIES_FOR_DOCUMENTS, DataError, DatasetTables
from .importers import read_beir, read_xc_bow, read_xc_raw
from .mapping import DEFAULT_TAU
from .storage import TableSetPins, read_json, write_json_atomic

FORMATS = ("beir", "xc-raw", "xc-bow")
SPEC_FILE = "dataset.json"
CLICKS_FOLDER = "clicks"
TABLE_ASSETS = {"documents": "documents", "queries": "queries", "relevance_labels": "qrels"}  # asset -> attribute
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # matched whole (fullmatch): no trailing newline


@dataclass
class DatasetSpec:
    format: str = "beir"
    source: str = "."
    title_words: int = 12
    dev_split: str = "ignore"
    simulate_bias: bool = True
    exposure_k: int = 100
    sigmoid_sampling: bool = False
    score_scale: float = 1.0
    propensity_a: float = 0.55
    propensity_b: float = 1.5
    prompt_style: str = "url-queries"
    generate: str = ""
    query_metadata_field: str = ""
    tau: float = DEFAULT_TAU
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every setting that cannot mean anything: wrong types (a hand-written
        `"tau": "0.8"`), counts below 1, non-finite or out-of-range numbers. Checked at import and on every read,
        so a bad setting fails at once, naming its field, not deep in a run."""
        found = []
        for field in fields(self):
            value, default = getattr(self, field.name), field.default
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            if isinstance(default, bool) and not isinstance(value, bool):
                found.append((field.name, f"must be true or false, got {value!r}"))
            elif numeric and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or (isinstance(default, int) and not isinstance(value, int))):
                kind = "a whole number" if isinstance(default, int) else "a number"
                found.append((field.name, f"must be {kind}, got {value!r}"))
            elif numeric and not math.isfinite(value):
                found.append((field.name, f"must be finite, got {value!r}"))
            elif isinstance(default, str) and not isinstance(value, str):
                found.append((field.name, f"must be text, got {value!r}"))
        if found:
            return found
        for name in ("title_words", "exposure_k"):
            if getattr(self, name) < 1:
                found.append((name, f"must be at least 1, got {getattr(self, name)}"))
        if self.score_scale <= 0:
            found.append(("score_scale", f"must be positive, got {self.score_scale}"))
        if not 0.0 <= self.tau <= 1.0:
            found.append(("tau", f"is a threshold on (1 + cos) / 2, so between 0 and 1; got {self.tau}"))
        if self.propensity_a <= 0:
            found.append(("propensity_a", f"must be positive, got {self.propensity_a}"))
        if self.seed < 0:
            found.append(("seed", f"must be non-negative, got {self.seed}"))
        return found

    @property
    def direction(self) -> str:
        """What the teacher and student write: queries for documents (from document metadata, the paper's
        LF-Orcas setting) or documents for queries (from query metadata, its LF-WikiTitlesHierarchy setting)."""
        if self.generate:
            return self.generate
        return DOCUMENTS_FOR_QUERIES if self.prompt_style == "wiki-categories" else QUERIES_FOR_DOCUMENTS


class DatasetNameError(ValueError):
    """A dataset name that cannot be a partition key and a folder name."""


def check_dataset_name(name: str) -> str:
    """`name` if it is a safe partition key and folder name (letters, digits and `_.-`, starting with a letter or
    digit: no path separator, no `..`, no trailing newline); else DatasetNameError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DatasetNameError(f"dataset name {name!r} must match {NAME_PATTERN.pattern} "
                               "(it becomes a partition key and a folder)")
    return name


def read_spec(folder: str | Path) -> DatasetSpec:
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        raise DataError(path, "no dataset.json: register the dataset with `skim import` first")
    raw = read_json(path, "register the dataset again: `skim import <name> <source> --replace`")
    if not isinstance(raw, dict):
        raise DataError(path, f"must be a JSON object of settings, got {type(raw).__name__}")
    known = {f.name for f in fields(DatasetSpec)}
    unknown = sorted(set(raw) - known - {"demo_world"})
    if unknown:
        raise DataError(path, f"unknown key(s) {unknown}; known: {sorted(known)}", field=unknown[0])
    spec = DatasetSpec(**{k: v for k, v in raw.items() if k in known})
    problems = spec.problems()
    if problems:
        field, problem = problems[0]
        raise DataError(path, f"{field} {problem}", field=field)
    if spec.format not in FORMATS:
        raise DataError(path, f"format must be one of {FORMATS}, got {spec.format!r}", field="format")
    if spec.generate not in ("", *DIRECTIONS):
        raise DataError(path, f"generate must be one of {DIRECTIONS} (or empty), got {spec.generate!r}",
                        field="generate")
    if spec.query_metadata_field and spec.format != "beir":
        raise DataError(path, "query_metadata_field is for BEIR folders (XC raw files carry `content`)",
                        field="query_metadata_field")
    return spec


def write_spec(folder: str | Path, spec: DatasetSpec) -> Path:
    return write_json_atomic(spec.to_json(), Path(folder) / SPEC_FILE)


def source_folder(folder: str | Path, spec: DatasetSpec) -> Path:
    source = Path(spec.source)
    return source if source.is_absolute() else (Path(folder) / source).resolve()


def import_tables(folder: str | Path, spec: DatasetSpec | None = None) -> DatasetTables:
    """Read and validate a registered dataset's raw files (writes nothing)."""
    spec = spec or read_spec(folder)
    source = source_folder(folder, spec)
    if not source.is_dir():
        problem = "is not a folder" if source.exists() else "does not exist"
        raise DataError(Path(folder) / SPEC_FILE, f"source folder {source} {problem}", field="source")
    if spec.format == "beir":
        tables = read_beir(source, title_words=spec.title_words, dev_split=spec.dev_split,
                           query_metadata_field=spec.query_metadata_field)
    elif spec.format == "xc-raw":
        tables = read_xc_raw(source)
    else:
        tables = read_xc_bow(source)
    if tables.documents.height == 0:  # e.g. empty files, or the wrong folder: nothing to retrieve or learn
        raise DataError(source, f"no documents ({spec.format}): is this the dataset's folder?")
    return tables


IMPORT_STATE = "import_state"  # <root>/import_state/<dataset>/source.json: the source the tables were imported from


def source_digest(folder: str | Path, spec: DatasetSpec) -> str:
    """A digest of the raw files a dataset imports (names and bytes; not its click drops or dataset.json): a
    source edited in place after its import is then seen as changed (`skim materialize --only-missing`)."""
    source = source_folder(folder, spec)
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if relative.parts[0] in (CLICKS_FOLDER, SPEC_FILE) or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative).encode("utf-8", "backslashreplace") + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def source_changed_since_import(root: str | Path, name: str) -> bool:
    """Whether a registered dataset's raw files differ from those its current tables were imported from (False
    when it was never imported, or before this was recorded)."""
    root = Path(root)
    state = root / IMPORT_STATE / check_dataset_name(name) / "source.json"
    folder = root / "inputs" / name
    if not state.exists() or not (folder / SPEC_FILE).exists():
        return False
    try:
        recorded = read_json(state).get("digest")
        return recorded != source_digest(folder, read_spec(folder))
    except (DataError, OSError, AttributeError):
        return True  # unreadable: import again rather than trust it


def existing_artifacts(root: str | Path, name: str) -> list[str]:
    """The assets that have an artifact for dataset `name` under the storage root `root`, sorted."""
    return sorted(path.parent.name for path in Path(root).glob(f"*/{check_dataset_name(name)}")
                  if is_artifact_folder(path.parent.name) and path.exists())


def input_changes(root: str | Path, name: str, spec: DatasetSpec, tables: DatasetTables) -> list[str]:
    """How importing `spec` (read into `tables`) under `name` differs from what is there now: the settings of its
    `dataset.json` and the rows of its imported tables. Empty for a new dataset or an identical re-import."""
    root, changes = Path(root), []
    if (root / "inputs" / name / SPEC_FILE).exists():
        try:
            old = read_spec(root / "inputs" / name).to_json()
        except DataError:
            old = {}
        changes += [f"{key} {old.get(key)!r} -> {value!r}" for key, value in spec.to_json().items()
                    if old.get(key) != value]
    with TableSetPins() as pins:  # the tables of one import, even while it is written again
        for asset, attribute in TABLE_ASSETS.items():
            path = pins.folder(root / asset / name) / "data.parquet"
            if path.exists() and not pl.read_parquet(path).equals(getattr(tables, attribute)):
                changes.append(f"{asset} differ from the source's")
    return changes
