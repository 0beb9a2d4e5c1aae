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
  tau               SKIM mapping threshold on (1 + cos) / 2
  seed              seed of every sampling step
Click-log drops live in `<root>/inputs/<name>/clicks/` as Parquet or CSV files.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .formats import DataError, DatasetTables
from .importers import read_beir, read_xc_bow, read_xc_raw
from .storage import read_json, write_json_atomic

FORMATS = ("beir", "xc-raw", "xc-bow")
SPEC_FILE = "dataset.json"
CLICKS_FOLDER = "clicks"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
    tau: float = 0.8
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def check_dataset_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"dataset name {name!r} must match {NAME_PATTERN.pattern} (it becomes a partition key and a folder)")
    return name


def read_spec(folder: str | Path) -> DatasetSpec:
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        raise DataError(path, "no dataset.json: register the dataset with `skim import` first")
    raw = read_json(path)
    known = {f.name for f in fields(DatasetSpec)}
    unknown = sorted(set(raw) - known - {"demo_world"})
    if unknown:
        raise DataError(path, f"unknown key(s) {unknown}; known: {sorted(known)}", field=unknown[0])
    spec = DatasetSpec(**{k: v for k, v in raw.items() if k in known})
    if spec.format not in FORMATS:
        raise DataError(path, f"format must be one of {FORMATS}, got {spec.format!r}", field="format")
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
        raise DataError(Path(folder) / SPEC_FILE, f"source folder {source} does not exist", field="source")
    if spec.format == "beir":
        return read_beir(source, title_words=spec.title_words, dev_split=spec.dev_split)
    if spec.format == "xc-raw":
        return read_xc_raw(source)
    return read_xc_bow(source)
