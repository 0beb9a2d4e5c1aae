"""Dataset specs: what a dataset folder under `<root>/inputs/<name>/` holds and how to import it.

A dataset folder carries `dataset.json`: the settings of `DatasetSpec` (each field says what it means). They are
checked by pydantic in strict mode, so a hand-written `"tau": "0.8"` or `"exposure_k": 100.5` is refused at
import, by the dataset-folder sensor and on every read, naming the field, not deep in a run.
Click-log drops live in `<root>/inputs/<name>/clicks/` as Parquet or CSV files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .formats import DIRECTIONS, DOCUMENTS_FOR_QUERIES, QUERIES_FOR_DOCUMENTS, DataError, DatasetTables
from .importers import FORMATS, IMPORTERS, detect_formats, importer_for, read_dataset
from .layout import IMPORT_STATE, SPEC_FILE, Layout
from .mapping import DEFAULT_TAU
from .simulation import ClickModel, ClickSimulation
from .storage import TableSetPins, file_digest, read_json, write_json_atomic

IMPORT_SOURCE = "source.json"  # in the dataset's import state: the digest of the raw files its tables came from
Format = Literal[FORMATS]  # the registered importers (lib.importers.IMPORTERS), one source
DevSplit = Literal["ignore", "train", "test"]
PromptStyle = Literal["url-queries", "wiki-categories"]
Generate = Literal[("", *DIRECTIONS)]  # '' = by prompt style; the directions come from lib.formats, one source
CLICKS_FOLDER = "clicks"
TABLE_ASSETS = {"documents": "documents", "queries": "queries", "relevance_labels": "qrels"}  # asset -> attribute


class DatasetSpec(BaseModel):
    """The settings of one dataset (`dataset.json`). Strict: no string is read as a number, no float as a count,
    so a hand-written `"tau": "0.8"` is refused, not coerced; ints are accepted where a float is asked."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, validate_assignment=True)

    format: Format = Field("beir", description="layout of the raw files")
    source: str = Field(".", description="folder with the raw files, absolute or relative to the dataset folder "
                                         "('.' = itself)")
    title_words: int = Field(12, ge=1, description="BEIR: for documents without a title, how many words of the "
                                                  "text become the title")
    dev_split: DevSplit = Field("ignore", description="BEIR: where the dev qrels go")
    simulate_bias: bool = Field(True, description="true: labels are complete, simulate clicks with Algorithm 1; "
                                                  "false: the train labels are clicks")
    exposure_k: int = Field(100, ge=1, description="Algorithm 1's exposure window K")
    click_model: ClickModel = Field("deterministic", description="which shown relevant documents are clicked: "
                                    "'deterministic' every one (Algorithm 1), 'sigmoid' with probability "
                                    "sigmoid(score_scale * score), 'position' with probability (1 / position) ** eta")
    score_scale: float = Field(1.0, gt=0, description="the sigmoid click model's score scale")
    eta: float = Field(1.0, ge=0, description="the position-based click model's examination exponent "
                                              "(Joachims et al., 2017)")
    # B > 0 too: a label never seen in training (count 0) would otherwise get 0^-A, an infinite PSP weight
    propensity_a: float = Field(0.55, gt=0, description="Jain et al. propensity constant A for PSP@k")
    propensity_b: float = Field(1.5, gt=0, description="Jain et al. propensity constant B (Wikipedia-like 0.5/0.4)")
    prompt_style: PromptStyle = Field("url-queries", description="the teacher's prompt")
    generate: Generate = Field("", description="what the teacher and student write; '' = by prompt style "
                                               "(wiki-categories: documents for queries, else queries for documents)")
    query_metadata_field: str = Field("", description="BEIR: the queries.jsonl key ('key' or 'metadata.key') "
                                                      "holding each query's metadata text")
    tau: float = Field(DEFAULT_TAU, ge=0, le=1, description="SKIM's mapping threshold on (1 + cos) / 2")
    seed: int = Field(0, ge=0, description="seed of every sampling step")

    @field_validator("query_metadata_field")
    @classmethod
    def _beir_only(cls, value: str, info: ValidationInfo) -> str:
        fmt = info.data.get("format", "beir")  # the importer registry says which formats read it (only BEIR)
        if value and fmt in IMPORTERS and "query_metadata_field" not in IMPORTERS[fmt].options:
            raise PydanticCustomError("beir_only", "is for BEIR folders (XC raw files carry `content`)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _sigmoid_sampling_was_a_flag(cls, values: Any) -> Any:
        """Read a `dataset.json` written before click models: `sigmoid_sampling: true` is click model 'sigmoid'."""
        if isinstance(values, dict) and "sigmoid_sampling" in values:
            values = dict(values)
            legacy = values.pop("sigmoid_sampling")
            if legacy is True and "click_model" not in values:
                values["click_model"] = "sigmoid"
        return values

    @classmethod
    def parse(cls, values: dict[str, Any]) -> tuple[DatasetSpec | None, list[tuple[str, str]]]:
        """(the spec, []) or (None, [(field, what is wrong), ...]): every setting that cannot mean anything, one
        line each, for `skim import` and `read_spec` to name; never a pydantic traceback."""
        try:
            return cls(**values), []
        except ValidationError as error:
            return None, [(".".join(map(str, e["loc"])) or "settings", _problem(e)) for e in error.errors()]

    def to_json(self) -> dict:
        return self.model_dump()

    @property
    def click_simulation(self) -> ClickSimulation:
        """Algorithm 1's settings: the exposure window, the click model and its seed."""
        return ClickSimulation(self.exposure_k, self.click_model, self.score_scale, self.eta, self.seed)

    @property
    def direction(self) -> str:
        """What the teacher and student write: queries for documents (from document metadata, the paper's
        LF-Orcas setting) or documents for queries (from query metadata, its LF-WikiTitlesHierarchy setting)."""
        if self.generate:
            return self.generate
        return DOCUMENTS_FOR_QUERIES if self.prompt_style == "wiki-categories" else QUERIES_FOR_DOCUMENTS


SPEC_FIELDS = tuple(DatasetSpec.model_fields)


def _problem(error: dict) -> str:
    """One pydantic error as `skim` words it: what the setting must be, then what it got."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    field = DatasetSpec.model_fields.get(str(error["loc"][0])) if error["loc"] else None
    bounds = {type(m).__name__: m for m in (field.metadata if field else [])}
    if kind in ("greater_than_equal", "less_than_equal") and "Ge" in bounds and "Le" in bounds:
        why = f" ({field.description})" if field.description else ""
        return f"must be between {bounds['Ge'].ge:g} and {bounds['Le'].le:g}{why}, got {got!r}"
    wording = {
        "int_type": "must be a whole number",
        "float_type": "must be a number",
        "bool_type": "must be true or false",
        "string_type": "must be text",
        "finite_number": "must be finite",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "greater_than": "must be positive" if ctx.get("gt") == 0 else f"must be greater than {ctx.get('gt')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "extra_forbidden": f"is not a setting (known: {', '.join(SPEC_FIELDS)})",
    }.get(kind)
    if wording is None:  # e.g. our own `beir_only`: its message already says what is wrong
        return error["msg"]
    return f"{wording}, got {got!r}"


def read_spec(folder: str | Path) -> DatasetSpec:
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        raise DataError(path, "no dataset.json: register the dataset with `skim import` first")
    raw = read_json(path, "register the dataset again: `skim import <name> <source> --replace`")
    if not isinstance(raw, dict):
        raise DataError(path, f"must be a JSON object of settings, got {type(raw).__name__}")
    # the demo records its world beside the settings; sigmoid_sampling is read as a click model (an older file)
    unknown = sorted(set(raw) - set(SPEC_FIELDS) - {"demo_world", "sigmoid_sampling"})
    if unknown:
        raise DataError(path, f"unknown key(s) {unknown}; known: {sorted(SPEC_FIELDS)}", field=unknown[0])
    spec, problems = DatasetSpec.parse({k: v for k, v in raw.items() if k in SPEC_FIELDS or k == "sigmoid_sampling"})
    if problems:
        field, problem = problems[0]
        raise DataError(path, f"{field} {problem}", field=field)
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
    try:
        importer = importer_for(spec.format)  # a spec built without validation may name any format
    except ValueError as error:
        raise DataError(Path(folder) / SPEC_FILE, str(error), field="format") from None
    missing = importer.missing(source)
    others = [f for f in detect_formats(source) if f != spec.format] if missing else []
    if len(others) == 1:  # the wrong format: say which one the folder holds rather than only which file is missing
        raise DataError(source, f"not a {spec.format} folder (no {', '.join(missing)}) but a {others[0]} one: "
                                f"import it with format {others[0]} (--format {others[0]})", field="format")
    tables = read_dataset(source, spec.format, **spec.model_dump(include=set(importer.options)))
    if tables.documents.height == 0:  # e.g. empty files, or the wrong folder: nothing to retrieve or learn
        raise DataError(source, f"no documents ({spec.format}): is this the dataset's folder?")
    return tables




def source_digest(folder: str | Path, spec: DatasetSpec) -> str:
    """A digest of the raw files a dataset imports (names and bytes; not its click drops or dataset.json): a
    source edited in place after its import is then seen as changed (`skim materialize --only-missing`)."""
    source = source_folder(folder, spec)
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if relative.parts[0] in (CLICKS_FOLDER, SPEC_FILE) or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative}\0{file_digest(path)}\n".encode("utf-8", "backslashreplace"))
    return digest.hexdigest()


def source_changed_since_import(root: str | Path, name: str) -> bool:
    """Whether a registered dataset's raw files differ from those its current tables were imported from (False
    when it was never imported, or before this was recorded)."""
    layout = Layout(root)
    state, folder = layout.state(IMPORT_STATE, name, IMPORT_SOURCE), layout.inputs(name)
    if not state.exists() or not (folder / SPEC_FILE).exists():
        return False
    try:
        recorded = read_json(state).get("digest")
        return recorded != source_digest(folder, read_spec(folder))
    except (DataError, OSError, AttributeError):
        return True  # unreadable: import again rather than trust it


def input_changes(root: str | Path, name: str, spec: DatasetSpec, tables: DatasetTables) -> list[str]:
    """How importing `spec` (read into `tables`) under `name` differs from what is there now: the settings of its
    `dataset.json` and the rows of its imported tables. Empty for a new dataset or an identical re-import."""
    layout, changes = Layout(root), []
    if (layout.inputs(name) / SPEC_FILE).exists():
        try:
            old = read_spec(layout.inputs(name)).to_json()
        except DataError:
            old = {}
        changes += [f"{key} {old.get(key)!r} -> {value!r}" for key, value in spec.to_json().items()
                    if old.get(key) != value]
    with TableSetPins() as pins:  # the tables of one import, even while it is written again
        for asset, attribute in TABLE_ASSETS.items():
            path = pins.folder(layout.artifact(asset, name)) / "data.parquet"
            if path.exists() and not pl.read_parquet(path).equals(getattr(tables, attribute)):
                changes.append(f"{asset} differ from the source's")
    return changes
