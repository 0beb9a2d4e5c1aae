"""Read external dataset formats into canonical, validated tables.

Every function here only reads: it returns validated frames or raises `DataError` naming the file, the 1-based
line (or data row) and the field, so the caller writes nothing unless the whole input is sound.

Formats: BEIR (`read_beir`), Extreme Classification "LF raw" JSON lines (`read_xc_raw`), XC text plus sparse
label matrix (`read_xc_bow`), and click-log drops as CSV or Parquet (`read_click_log`). The dataset formats are
registered in `IMPORTERS` (name -> `Importer`): the one list that `FORMATS`, the dataset spec, the CLI and
`detect_formats` read; `read_dataset(folder, format, **options)` reads by name and refuses an unknown one.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from .formats import (
    CLICKS_SCHEMA,
    DOCUMENTS_SCHEMA,
    QRELS_SCHEMA,
    QUERIES_SCHEMA,
    QUERY_METADATA_SCHEMA,
    SPLITS,
    DataError,
    DatasetTables,
    Source,
    require_columns,
    require_known,
    require_nonempty_strings,
)

DEV_SPLITS = ("ignore", *SPLITS)

# ----------------------------------------------------------------------------------------------------------- lines


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path, field: str | None = None,
               locate: Callable[[bytes, int], str | None] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its ending) from a plain or .gz file, decoding strictly as UTF-8.

    Lines split on b"\\n" only, so U+2028 and friends inside a text stay in their line.
    `field` names the field the whole line holds (for one-value-per-line files), used in UTF-8 errors;
    `locate(raw line, offset of the bad byte)` names it for lines holding several fields (JSON lines).
    """
    path = Path(path)
    line_no = 0
    try:
        with _open_binary(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    where = field if locate is None else locate(raw, e.start)
                    raise DataError(path, f"invalid UTF-8 at byte {e.start} of the line", row=line_no,
                                    field=where) from None
                if line_no == 1:
                    text = text.removeprefix("\ufeff")
                yield line_no, text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:  # unreadable, corrupt or truncated gzip
        raise DataError(path, f"cannot read file: {e}", row=line_no + 1, field=field) from None


def _json_field_at(raw: bytes, offset: int) -> str | None:
    """The top-level key of a JSON-lines record whose value holds the invalid UTF-8 byte at `offset`, if any."""
    try:
        record = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    bad = chr(0xDC00 + raw[offset])  # how surrogateescape spells the byte

    def holds(value) -> bool:
        if isinstance(value, str):
            return bad in value
        if isinstance(value, dict):
            return any(holds(k) or holds(v) for k, v in value.items())
        return isinstance(value, list) and any(holds(v) for v in value)

    return next((key for key, value in record.items() if holds(value) or holds(key)), None)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, record) for each non-blank line of a JSON-lines file (plain or .gz)."""
    for line_no, text in read_lines(path, locate=_json_field_at):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"invalid JSON: {e.msg} at column {e.colno}", row=line_no) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, got {type(record).__name__}", row=line_no)
        yield line_no, record


def _find(folder: Path, name: str, *, required: bool = True) -> Path | None:
    """`folder/name` or `folder/name.gz` (exactly one of them)."""
    found = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
    if len(found) > 1:
        raise DataError(folder / name, "both the plain and the .gz file exist; keep one")
    if not found and required:
        raise DataError(folder / name, "file not found (looked for it and its .gz)")
    return found[0] if found else None


def _id(record: dict, key: str, path: Path, line: int) -> str:
    value = record.get(key)
    # Integer ids are accepted and kept as strings; bool is an int subclass but never an id.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(path, f"missing or empty {key!r} (got {value!r})", row=line, field=key)
    return str(value)


def _text(record: dict, key: str, path: Path, line: int, *, required: bool = False, nonempty: bool = False) -> str:
    if key not in record and required:
        raise DataError(path, f"missing key {key!r}", row=line, field=key)
    value = record.get(key)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise DataError(path, f"{key!r} must be a string, got {type(value).__name__}", row=line, field=key)
    if nonempty and not value.strip():
        raise DataError(path, f"empty {key!r}", row=line, field=key)
    return value


def _tables(documents: list[tuple], queries: list[tuple], qrels: list[tuple], notes: dict,
            source: Path) -> DatasetTables:
    """Queries are (id, text, split) or (id, text, split, metadata or None); the metadata column is kept when any
    query has non-empty metadata (XC files often carry an empty `content` for every query)."""
    query_schema = QUERIES_SCHEMA
    if any(len(q) > 3 and q[3] and q[3].strip() for q in queries):
        query_schema = QUERIES_SCHEMA | QUERY_METADATA_SCHEMA
        queries = [(*q[:3], q[3] if len(q) > 3 and q[3] is not None else "") for q in queries]
    else:
        queries = [q[:3] for q in queries]
    frames = [pl.DataFrame(rows, schema=schema, orient="row")
              for rows, schema in ((documents, DOCUMENTS_SCHEMA), (queries, query_schema), (qrels, QRELS_SCHEMA))]
    # The checks above already name file lines; validate() is the final guarantee of the canonical schemas.
    return DatasetTables(*frames, notes=notes).validate(source)


# ------------------------------------------------------------------------------------------------------------ BEIR


QRELS_COLUMNS = ("query-id", "corpus-id", "score")


def _is_qrels_header(parts: list[str]) -> bool:
    """BEIR's header line: its three column names (any case, `-` or `_`); anything else on line 1 is data."""
    return [p.lower().replace("_", "-") for p in parts] == list(QRELS_COLUMNS)


def _read_qrels_tsv(path: Path) -> Iterator[tuple[int, str, str, float]]:
    """Yield (line, query-id, corpus-id, score); line 1 is skipped when it is BEIR's header (by column names)."""
    columns = QRELS_COLUMNS
    for line, text in read_lines(path):
        if not text.strip():
            continue
        parts = [p.strip() for p in text.split("\t")]
        if line == 1 and _is_qrels_header(parts):
            continue
        if len(parts) != 3:
            field = columns[len(parts)] if len(parts) < 3 else "score"
            raise DataError(path, f"expected 3 tab-separated columns {columns}, found {len(parts)}",
                            row=line, field=field)
        try:
            score = float(parts[2])
        except ValueError:
            raise DataError(path, f"score {parts[2]!r} is not a number", row=line, field="score") from None
        if not math.isfinite(score):
            raise DataError(path, f"score {parts[2]!r} is not finite", row=line, field="score")
        yield line, parts[0], parts[1], score


def read_beir(folder: str | Path, *, title_words: int = 12, dev_split: str = "ignore",
              query_metadata_field: str = "") -> DatasetTables:
    """Import a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/{train,test[,dev]}.tsv; each may be .gz).

    A query's split is the qrels file it appears in; dev qrels are ignored or counted as `dev_split`.
    Queries without (positive) labels and qrels with score <= 0 are dropped and counted in `notes`.
    `query_metadata_field` names the key of a queries.jsonl record whose string is the query's metadata (query-side
    text, e.g. an article for a title): a top-level key, or `metadata.<key>` inside BEIR's `metadata` object.
    """
    if dev_split not in DEV_SPLITS:
        raise ValueError(f"dev_split must be one of {DEV_SPLITS}, got {dev_split!r}")
    if title_words < 1:
        raise ValueError(f"title_words must be at least 1, got {title_words}")
    folder = Path(folder)
    corpus_path, queries_path = _find(folder, "corpus.jsonl"), _find(folder, "queries.jsonl")
    qrels_paths = {name: _find(folder / "qrels", f"{name}.tsv", required=name != "dev")
                   for name in ("train", "test", "dev")}
    notes = dict.fromkeys(["derived_titles", "dropped_unlabeled_queries", "dropped_nonpositive_qrels",
                           "ignored_dev_qrels"], 0)
    documents = _read_beir_corpus(corpus_path, title_words, notes)
    query_text, query_metadata = _read_beir_queries(queries_path, query_metadata_field)
    qrels, split_of = _read_beir_qrels(qrels_paths, dev_split, query_text, {d for d, _, _ in documents}, notes)
    labelled = {q for q, _, _ in qrels}
    queries = [(q, text, split_of[q], *([query_metadata[q]] if query_metadata_field else []))
               for q, text in query_text.items() if q in labelled]
    notes["dropped_unlabeled_queries"] = len(query_text) - len(queries)
    return _tables(documents, queries, qrels, notes, folder)


def _read_beir_corpus(path: Path, title_words: int, notes: dict) -> list[tuple[str, str, str]]:
    """(doc_id, title, text) per corpus record; a record without a title takes its text's first `title_words`
    words (counted in `notes["derived_titles"]`)."""
    documents, doc_ids = [], set()
    for line, record in read_jsonl(path):
        doc_id = _id(record, "_id", path, line)
        if doc_id in doc_ids:
            raise DataError(path, f"duplicate _id {doc_id!r}", row=line, field="_id")
        doc_ids.add(doc_id)
        title, text = _text(record, "title", path, line), _text(record, "text", path, line)
        if not title.strip():  # e.g. NFCorpus: the retriever needs a short title, so take the text's first words
            title = " ".join(text.split()[:title_words])
            if not title:
                raise DataError(path, "title and text are both empty", row=line, field="title")
            notes["derived_titles"] += 1
        documents.append((doc_id, title, text))
    return documents


def _read_beir_queries(path: Path, metadata_field: str) -> tuple[dict[str, str], dict[str, str]]:
    """({query id: text}, {query id: metadata}) in file order; the metadata only where `metadata_field` is set.

    BEIR's own `metadata` of a query is not query-side text by default: SciFact's holds the evidence sentences of
    its labels, which would leak test labels into training. Only the field the spec names is imported."""
    query_text: dict[str, str] = {}
    query_metadata: dict[str, str] = {}
    for line, record in read_jsonl(path):
        query_id = _id(record, "_id", path, line)
        if query_id in query_text:
            raise DataError(path, f"duplicate _id {query_id!r}", row=line, field="_id")
        query_text[query_id] = _text(record, "text", path, line, required=True, nonempty=True)
        if metadata_field:
            query_metadata[query_id] = _nested_text(record, metadata_field, path, line)
    return query_text, query_metadata


def _read_beir_qrels(paths: dict[str, Path | None], dev_split: str, query_text: dict[str, str], doc_ids: set[str],
                     notes: dict) -> tuple[list[tuple[str, str, float]], dict[str, str]]:
    """(positive labels, {query id: its split}): a query's split is the qrels file naming it (dev as `dev_split`);
    every row is checked, ignored dev rows and labels with score <= 0 are counted in `notes`."""
    split_of: dict[str, tuple[str, str, int]] = {}  # query -> (split, file name, line) where first labelled
    pairs: set[tuple[str, str]] = set()
    qrels = []
    for name, path in paths.items():
        if path is None:
            continue
        split = dev_split if name == "dev" else name
        for line, query_id, doc_id, score in _read_qrels_tsv(path):
            # Ignored dev rows are still checked: a broken file is reported even where its rows are unused.
            if query_id not in query_text:
                raise DataError(path, f"unknown query id {query_id!r}", row=line, field="query-id")
            if doc_id not in doc_ids:
                raise DataError(path, f"unknown corpus id {doc_id!r}", row=line, field="corpus-id")
            if split == "ignore":
                notes["ignored_dev_qrels"] += 1
                continue
            first = split_of.setdefault(query_id, (split, path.name, line))
            if first[0] != split:
                raise DataError(path, f"query {query_id!r} is labelled for {split} here but for {first[0]} in "
                                f"{first[1]} line {first[2]}", row=line, field="query-id")
            if (query_id, doc_id) in pairs:
                raise DataError(path, f"duplicate label ({query_id!r}, {doc_id!r})", row=line, field="corpus-id")
            pairs.add((query_id, doc_id))
            if score <= 0:
                notes["dropped_nonpositive_qrels"] += 1
                continue
            qrels.append((query_id, doc_id, score))
    return qrels, {query: split for query, (split, _, _) in split_of.items()}


def _nested_text(record: dict, field: str, path: Path, line: int) -> str:
    """The string at `field` ("key" or "metadata.key") of a JSON record; a missing key reads as empty."""
    *parents, key = field.split(".")
    for parent in parents:
        record = record.get(parent) or {}
        if not isinstance(record, dict):
            raise DataError(path, f"{parent!r} must be an object to hold {field!r}", row=line, field=field)
    return _text(record, key, path, line)


# ---------------------------------------------------------------------------------------------------- XC (LF raw)


def _count_unlabelled(queries: list[tuple], qrels: list[tuple], notes: dict) -> dict:
    # XC queries keep their split without labels (unlike BEIR), so they are kept and only counted.
    labelled = {q for q, _, _ in qrels}
    return notes | {"queries_without_labels": sum(q[0] not in labelled for q in queries)}


def _label_list(record: dict, key: str, path: Path, line: int, kind: type | tuple) -> list | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, kind) for v in value):
        what = "integers" if kind is int else "numbers"
        raise DataError(path, f"{key!r} must be a list of {what}", row=line, field=key)
    return value


def read_xc_raw(folder: str | Path) -> DatasetTables:
    """Import an XC-repository "LF raw" folder: lbl.json.gz (documents), trn/tst.json.gz (queries and labels).

    `target_ind` indexes the records of lbl.json.gz in file order; `target_rel` defaults to 1.0.
    Labels with relevance <= 0 are dropped and counted; queries without labels are kept and counted.
    """
    folder = Path(folder)
    lbl_path = _find(folder, "lbl.json")
    documents, doc_ids = [], set()
    for line, record in read_jsonl(lbl_path):
        uid = _id(record, "uid", lbl_path, line)
        if uid in doc_ids:
            raise DataError(lbl_path, f"duplicate uid {uid!r}", row=line, field="uid")
        doc_ids.add(uid)
        title = _text(record, "title", lbl_path, line, required=True, nonempty=True)
        documents.append((uid, title, _text(record, "content", lbl_path, line)))

    notes = {"dropped_nonpositive_qrels": 0, "queries_without_labels": 0}
    queries, qrels, first_seen = [], [], {}
    for split, stem in (("train", "trn"), ("test", "tst")):
        path = _find(folder, f"{stem}.json")
        for line, record in read_jsonl(path):
            uid = _id(record, "uid", path, line)
            if uid in first_seen:
                raise DataError(path, f"duplicate uid {uid!r} (first in {first_seen[uid]})", row=line, field="uid")
            first_seen[uid] = f"{path.name} line {line}"
            # the query's `content` (e.g. a Wikipedia title's article text) is its query-side metadata
            queries.append((uid, _text(record, "title", path, line, required=True, nonempty=True), split,
                            _text(record, "content", path, line)))
            if "target_ind" not in record:
                raise DataError(path, "missing key 'target_ind'", row=line, field="target_ind")
            indices = _label_list(record, "target_ind", path, line, int) or []
            relevances = _label_list(record, "target_rel", path, line, (int, float))
            relevances = [1.0] * len(indices) if relevances is None else relevances
            if len(relevances) != len(indices):
                raise DataError(path, f"target_rel has {len(relevances)} values but target_ind has {len(indices)}",
                                row=line, field="target_rel")
            seen = set()
            for index, relevance in zip(indices, relevances):
                if not 0 <= index < len(documents):
                    raise DataError(path, f"label index {index} is outside lbl.json ({len(documents)} labels)",
                                    row=line, field="target_ind")
                if index in seen:
                    raise DataError(path, f"label index {index} repeated", row=line, field="target_ind")
                seen.add(index)
                if not math.isfinite(relevance):
                    raise DataError(path, f"relevance {relevance!r} is not finite", row=line, field="target_rel")
                if relevance <= 0:
                    notes["dropped_nonpositive_qrels"] += 1
                    continue
                qrels.append((uid, documents[index][0], float(relevance)))
    return _tables(documents, queries, qrels, _count_unlabelled(queries, qrels, notes), folder)


# ---------------------------------------------------------------------------------------------- XC (text + sparse)


def _nonempty_lines(path: Path, field: str) -> list[str]:
    texts = []
    for line, text in read_lines(path, field):
        if not text.strip():
            raise DataError(path, f"empty {field}", row=line, field=field)
        texts.append(text)
    return texts


def read_xc_bow(folder: str | Path) -> DatasetTables:
    """Import XC text + sparse labels: Y.txt [+ Y_metadata.txt], {trn,tst}_X.txt and {trn,tst}_X_Y.txt.

    query_id is `trn-<row>` / `tst-<row>` and doc_id the label's row in Y.txt (both 0-based).
    Labels with value <= 0 are dropped and counted; queries without labels are kept and counted.
    """
    folder = Path(folder)
    y_path = _find(folder, "Y.txt")
    titles = _nonempty_lines(y_path, "title")
    meta_path = _find(folder, "Y_metadata.txt", required=False)
    metadata = [text for _, text in read_lines(meta_path, "metadata")] if meta_path else [""] * len(titles)
    if len(metadata) != len(titles):
        raise DataError(meta_path, f"{len(metadata)} lines but {y_path.name} has {len(titles)}",
                        row=min(len(metadata), len(titles)) + 1, field="metadata")
    documents = [(str(i), title, meta) for i, (title, meta) in enumerate(zip(titles, metadata))]

    notes = {"dropped_nonpositive_qrels": 0, "queries_without_labels": 0}
    queries, qrels = [], []
    for split, stem in (("train", "trn"), ("test", "tst")):
        x_path, xy_path = _find(folder, f"{stem}_X.txt"), _find(folder, f"{stem}_X_Y.txt")
        texts = _nonempty_lines(x_path, "text")
        queries += [(f"{stem}-{row}", text, split) for row, text in enumerate(texts)]
        lines = read_lines(xy_path, "labels")
        header = next(lines, (1, ""))[1].split()
        if len(header) != 2 or not all(h.isascii() and h.isdigit() for h in header):
            raise DataError(xy_path, f"header must be 'rows labels', got {' '.join(header)!r}", row=1, field="header")
        n_rows, n_labels = map(int, header)
        if n_labels != len(titles):
            raise DataError(xy_path, f"header says {n_labels} labels but {y_path.name} has {len(titles)} lines",
                            row=1, field="labels")
        if n_rows != len(texts):
            raise DataError(xy_path, f"header says {n_rows} rows but {x_path.name} has {len(texts)} lines",
                            row=1, field="rows")
        n_lines = 0
        for line, text in lines:
            n_lines += 1
            query_id, seen = f"{stem}-{line - 2}", set()
            for token in text.split():
                label, colon, value = token.partition(":")
                try:
                    index, weight = int(label), float(value)
                    if not colon or not math.isfinite(weight):
                        raise ValueError
                except ValueError:
                    raise DataError(xy_path, f"malformed label:value token {token!r}", row=line,
                                    field="label:value") from None
                if not 0 <= index < n_labels or index in seen:
                    problem = "repeated" if index in seen else f"outside Y.txt ({n_labels} labels)"
                    raise DataError(xy_path, f"label index {index} {problem}", row=line, field="label")
                seen.add(index)
                if weight <= 0:
                    notes["dropped_nonpositive_qrels"] += 1
                    continue
                qrels.append((query_id, str(index), weight))
        if n_lines != n_rows:
            raise DataError(xy_path, f"header says {n_rows} rows but {n_lines} lines follow", row=1, field="rows")
    return _tables(documents, queries, qrels, _count_unlabelled(queries, qrels, notes), folder)


# -------------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Importer:
    """One dataset format: how it is read and how a folder of it is told.

    `read(folder, **options)` returns the validated tables; `options` names the dataset settings (fields of
    `lib.datasets.DatasetSpec`) it takes as keyword arguments. `expects` are the files (each may be .gz, paths
    relative to the folder) that a folder of this format holds: what `detect_formats` looks for.
    """

    name: str
    read: Callable[..., DatasetTables]
    description: str
    expects: tuple[str, ...]
    options: tuple[str, ...] = ()

    def missing(self, folder: str | Path) -> list[str]:
        """The files this format expects that `folder` lacks (neither plain nor .gz)."""
        folder = Path(folder)
        return [name for name in self.expects
                if not (folder / name).is_file() and not (folder / f"{name}.gz").is_file()]

    def matches(self, folder: str | Path) -> bool:
        """Whether `folder` holds every file this format expects."""
        return not self.missing(folder)


# The one list of formats: `FORMATS`, `DatasetSpec.format`, the CLI's `--format` and `detect_formats` derive from it.
IMPORTERS: dict[str, Importer] = {importer.name: importer for importer in (
    Importer("beir", read_beir, "a BEIR folder: corpus.jsonl, queries.jsonl, qrels/{train,test[,dev]}.tsv",
             expects=("corpus.jsonl", "queries.jsonl"), options=("title_words", "dev_split", "query_metadata_field")),
    Importer("xc-raw", read_xc_raw, "XC repository 'LF raw' JSON lines: lbl.json, trn.json, tst.json",
             expects=("lbl.json", "trn.json", "tst.json")),
    Importer("xc-bow", read_xc_bow, "XC text + sparse labels: Y.txt [+ Y_metadata.txt], {trn,tst}_X.txt, "
             "{trn,tst}_X_Y.txt", expects=("Y.txt", "trn_X.txt", "trn_X_Y.txt", "tst_X.txt", "tst_X_Y.txt")),
)}
FORMATS = tuple(IMPORTERS)


class UnknownFormat(ValueError):
    """A format name no importer is registered for."""

    def __init__(self, name: object):
        self.format = name
        super().__init__(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")


def importer_for(name: str) -> Importer:
    """The registered importer of format `name`; UnknownFormat (naming it and the known ones) otherwise."""
    try:
        return IMPORTERS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value is no format either
        raise UnknownFormat(name) from None


def read_dataset(folder: str | Path, format: str, **options) -> DatasetTables:
    """Read `folder` as `format`, passing on the `options` that format takes (the others are not its business:
    `title_words` means nothing to XC files). An unknown format is refused, never read as another one."""
    importer = importer_for(format)
    return importer.read(folder, **{k: v for k, v in options.items() if k in importer.options})


def detect_formats(folder: str | Path) -> list[str]:
    """The formats whose expected files `folder` holds, in registry order (usually none or one)."""
    return [name for name, importer in IMPORTERS.items() if importer.matches(folder)]


# ------------------------------------------------------------------------------------------------------ click logs

# ISO 8601 shapes accepted for string timestamps; anything else is an error, never a silent null.
_NAIVE_FORMATS = [f"%Y-%m-%d{sep}{time}" for sep in ("T", " ") for time in ("%H:%M:%S%.f", "%H:%M")]
_ZONED_FORMATS = [f"{fmt}%#z" for fmt in _NAIVE_FORMATS]


def _read_csv_strings(path: Path) -> tuple[pl.DataFrame, tuple[int, ...]]:
    """Every value as a string (parsed strictly later; an empty value is null) and the file line each record starts
    on: a quoted value may span lines, so record numbers are not line numbers."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        prefix = data[line_start:e.start]
        header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
        # Name the column when the line is simple enough to count commas (no quoting before the bad byte).
        column = prefix.count(b",")
        field = header[column] if b'"' not in prefix and column < len(header) else None
        raise DataError(path, "invalid UTF-8", row=data.count(b"\n", 0, e.start) + 1, field=field) from None
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    rows, lines = [], []
    try:
        header = next(reader, [])
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise DataError(path, f"column {repeated[0]!r} appears more than once in the header", row=1,
                            field=repeated[0])
        start = reader.line_num + 1
        for record in reader:
            if len(record) > len(header):
                raise DataError(path, f"{len(record)} values but the header names {len(header)} columns", row=start)
            rows.append([value or None for value in record] + [None] * (len(header) - len(record)))
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(path, f"cannot parse: {e}", row=reader.line_num) from None
    return pl.DataFrame(rows, schema=dict.fromkeys(header, pl.String), orient="row"), tuple(lines)


def click_log_source(path: str | Path) -> Source:
    """How rows of a drop map to the file: data rows for Parquet, the record's first line for CSV."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return Source(path, lines=_read_csv_strings(path)[1])
    return Source(path)


def _parse_clicks(values: pl.Series) -> pl.Series:
    if values.dtype.is_integer():
        return values.cast(pl.Int64, strict=False)
    if values.dtype.is_float():  # 3.0 is an integer count; 2.5 is not
        return pl.select(pl.when(values == values.round()).then(values).cast(pl.Int64, strict=False)).to_series()
    if values.dtype == pl.String:  # "3" and "3.0" (as Parquet's 3.0) are counts; exact past 2**53 as integers
        text = values.str.strip_chars()
        as_float = text.cast(pl.Float64, strict=False)
        integral = pl.when(as_float == as_float.round()).then(as_float).cast(pl.Int64, strict=False)
        return pl.select(text.cast(pl.Int64, strict=False).fill_null(integral)).to_series()
    return pl.Series(values.name, [None] * len(values), pl.Int64)


def _parse_timestamps(values: pl.Series) -> pl.Series:
    if isinstance(values.dtype, pl.Datetime):
        if values.dtype.time_zone is not None:  # store instants as naive UTC
            values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return values.cast(pl.Datetime("us"))
    if values.dtype == pl.Date:
        return values.cast(pl.Datetime("us"))
    if values.dtype != pl.String:
        return pl.Series(values.name, [None] * len(values), pl.Datetime("us"))
    text = pl.col(values.name).str.strip_chars()
    parsed = [text.str.to_datetime(f, time_unit="us", strict=False) for f in _NAIVE_FORMATS]
    parsed += [text.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone(None) for f in _ZONED_FORMATS]
    parsed.append(text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")))
    return values.to_frame().select(pl.coalesce(parsed)).to_series()


def _reject_first(bad: pl.Series, original: pl.Series, source: Source, message: str) -> None:
    if bad.any():
        i = int(bad.arg_true()[0])
        raise DataError(source.path, f"{message}, got {original[i]!r} ({int(bad.sum())} such rows)",
                        row=source.row(i), field=original.name)


# required in every click log, plus `clicks` (aggregated rows) or `clicked` (one per impression)
CLICK_LOG_REQUIRED = ("query", "doc_id", "timestamp")


def _parse_counts(frame: pl.DataFrame, column: str, source: Source, minimum: int, what: str) -> pl.Series:
    counts = _parse_clicks(frame[column])
    _reject_first(counts.is_null() | (counts < minimum), frame[column], source, what)
    return counts


def read_click_log(path: str | Path, known_doc_ids: pl.Series | None = None) -> pl.DataFrame:
    """Read one click-log drop (.parquet or .csv) into CLICKS_SCHEMA: query, doc_id, clicks, impressions, position,
    timestamp.

    Two shapes: aggregated rows with `clicks` (a positive count; with an `impressions` column, a count from 0 up to
    the row's impressions, so shown-not-clicked rows can be logged), or one row per impression with `clicked` (0/1;
    impressions 1 each). An optional `position` (1-based rank at which the document was shown) goes with either.
    A drop without impressions has them null: "unknown", not "never shown".
    Rows are 1-based data rows for Parquet and file lines for CSV (header = line 1; a record spanning lines is
    named by its first). Timestamps are datetimes or ISO 8601 strings; zoned values are converted to naive UTC.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise DataError(path, f"unsupported click-log format {suffix!r}; expected .parquet or .csv")
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        if suffix == ".csv":
            frame, lines = _read_csv_strings(path)
            source = Source(path, lines=lines)
        else:
            frame, source = pl.read_parquet(path), Source(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(path, f"cannot parse: {e}") from None
    # a column left entirely empty is "not recorded" (e.g. our own CLICKS_SCHEMA written back without impressions)
    frame = frame.drop([c for c in ("impressions", "position") if c in frame.columns
                        and frame[c].null_count() == frame.height and frame.height])
    per_impression = "clicked" in frame.columns
    if per_impression and ("clicks" in frame.columns or "impressions" in frame.columns):
        extra = "clicks" if "clicks" in frame.columns else "impressions"
        raise DataError(path, f"both `clicked` (one row per impression) and `{extra}` (aggregated rows): use one "
                        "shape per drop", field=extra)
    require_columns(frame, [*CLICK_LOG_REQUIRED[:2], "clicked" if per_impression else "clicks",
                            CLICK_LOG_REQUIRED[2]], source)
    frame = frame.with_columns(pl.col("query", "doc_id").cast(pl.String))
    require_nonempty_strings(frame, "query", source)
    require_nonempty_strings(frame, "doc_id", source)
    if per_impression:
        clicks = _parse_counts(frame, "clicked", source, 0, "clicked must be 0 or 1")
        _reject_first(clicks > 1, frame["clicked"], source, "clicked must be 0 or 1")
        impressions = pl.Series("impressions", [1] * frame.height, pl.Int64)
    elif "impressions" in frame.columns:
        impressions = _parse_counts(frame, "impressions", source, 1, "impressions must be a positive integer")
        clicks = _parse_counts(frame, "clicks", source, 0, "clicks must be a whole number >= 0")
        _reject_first(clicks > impressions, frame["clicks"], source,
                      "clicks must not exceed the row's impressions")
    else:
        clicks = _parse_counts(frame, "clicks", source, 1, "clicks must be a positive integer")
        impressions = pl.Series("impressions", [None] * frame.height, pl.Int64)
    position = (_parse_counts(frame, "position", source, 1, "position must be a positive integer (1 = top)")
                if "position" in frame.columns else pl.Series("position", [None] * frame.height, pl.Int64))
    timestamps = _parse_timestamps(frame["timestamp"])
    _reject_first(timestamps.is_null(), frame["timestamp"], source, "timestamp must be a datetime or ISO 8601 string")
    if known_doc_ids is not None:
        require_known(frame, "doc_id", known_doc_ids.cast(pl.String), source, "doc id")
    return frame.select("query", "doc_id").with_columns(
        clicks=clicks, impressions=impressions, position=position, timestamp=timestamps
    ).select(pl.col(c).cast(t) for c, t in CLICKS_SCHEMA.items())
