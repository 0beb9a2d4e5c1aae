"""Canonical tables of a dataset, their schemas, and validation with errors that name file, row and field.

Tables (one set per dataset partition):
  documents  doc_id, title (the short text the retriever sees), metadata (long unstructured text)
  queries    query_id, text, split ('train' / 'test')
  qrels      query_id, doc_id, relevance        (all known labels of train and test queries)
  pairs      query_id, doc_id, weight, source   (training pairs: 'click', 'skim', 'mar', ...)
  clicks     query, doc_id, clicks, impressions, position, timestamp   (one click-log drop, before aggregation;
             impressions and position null where the drop does not record them)
  impressions  query_id, doc_id, position, impressions, clicks  (what the engine showed for train queries, per
             position; null position = not recorded)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

DOCUMENTS_SCHEMA = {"doc_id": pl.String, "title": pl.String, "metadata": pl.String}
QUERIES_SCHEMA = {"query_id": pl.String, "text": pl.String, "split": pl.String}
# Query-side metadata (the paper's second setting: a Wikipedia title's article text), kept beside the query text
# when the source has it; queries without it have "".
QUERY_METADATA_SCHEMA = {"metadata": pl.String}
QRELS_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "relevance": pl.Float64}
PAIRS_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "weight": pl.Float64, "source": pl.String}
CLICKS_SCHEMA = {"query": pl.String, "doc_id": pl.String, "clicks": pl.Int64, "impressions": pl.Int64,
                 "position": pl.Int64, "timestamp": pl.Datetime("us")}
IMPRESSIONS_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "position": pl.Int64, "impressions": pl.Int64,
                      "clicks": pl.Int64}
SPLITS = ("train", "test")
# The side tables every training artifact carries from `train_pairs` down (the training view): the documents, every
# query (the dataset's and those only the click logs name), the click-log training pairs and their impressions.
TRAINING_VIEW_TABLES = ("documents", "queries", "click_pairs", "impressions")
# what SKIM's models write: queries for documents (from document metadata) or documents for queries (from query
# metadata); a dataset's `generate` setting
QUERIES_FOR_DOCUMENTS, DOCUMENTS_FOR_QUERIES = "queries_for_documents", "documents_for_queries"
DIRECTIONS = (QUERIES_FOR_DOCUMENTS, DOCUMENTS_FOR_QUERIES)


class DataError(ValueError):
    """Bad input data. The message names the file, the row (1-based line or record number) and the field."""

    def __init__(self, path: str | Path, message: str, *, row: int | None = None, field: str | None = None):
        self.path, self.row, self.field = str(path), row, field
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Source:
    """Where a frame came from, so errors can point at the file line of a frame row."""

    path: str | Path
    first_row: int = 1  # file row number of frame row 0 (e.g. 2 for a TSV with a header line)
    lines: tuple[int, ...] | None = None  # the file line of each frame row, where rows may span lines (CSV)

    def row(self, index: int) -> int:
        if self.lines is not None:
            return self.lines[index]
        return self.first_row + index


def require_columns(frame: pl.DataFrame, columns: list[str] | dict, source: Source) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(source.path, f"missing column(s) {missing}; found {frame.columns}", field=missing[0])


def _first_index(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def require_nonempty_strings(frame: pl.DataFrame, column: str, source: Source) -> None:
    values = frame[column]
    bad = values.is_null() | (values.str.strip_chars().str.len_chars() == 0)
    if bad.any():
        i = _first_index(bad)
        raise DataError(source.path, f"empty {column} ({int(bad.sum())} such rows)", row=source.row(i), field=column)


def require_unique(frame: pl.DataFrame, columns: list[str], source: Source) -> None:
    duplicated = frame.select(columns).is_duplicated()
    if duplicated.any():
        i = _first_index(duplicated)
        key = ", ".join(f"{c}={frame[c][i]!r}" for c in columns)
        raise DataError(source.path, f"duplicate {key}", row=source.row(i), field=columns[-1])


def require_known(frame: pl.DataFrame, column: str, known: pl.Series, source: Source, what: str) -> None:
    unknown = ~frame[column].is_in(known.implode())
    if unknown.any():
        i = _first_index(unknown)
        raise DataError(
            source.path, f"unknown {what} {frame[column][i]!r} ({int(unknown.sum())} such rows)",
            row=source.row(i), field=column,
        )


def validate_documents(documents: pl.DataFrame, source: Source) -> pl.DataFrame:
    require_columns(documents, DOCUMENTS_SCHEMA, source)
    documents = documents.select(pl.col(c).cast(t) for c, t in DOCUMENTS_SCHEMA.items())
    require_nonempty_strings(documents, "doc_id", source)
    require_unique(documents, ["doc_id"], source)
    require_nonempty_strings(documents, "title", source)
    documents = documents.with_columns(pl.col("metadata").fill_null(""))
    return documents


def queries_schema(queries: pl.DataFrame) -> dict:
    """The canonical columns of this queries table: the query-metadata column when it has one."""
    return QUERIES_SCHEMA | (QUERY_METADATA_SCHEMA if "metadata" in queries.columns else {})


def validate_queries(queries: pl.DataFrame, source: Source) -> pl.DataFrame:
    require_columns(queries, QUERIES_SCHEMA, source)
    queries = queries.select(pl.col(c).cast(t) for c, t in queries_schema(queries).items())
    if "metadata" in queries.columns:
        queries = queries.with_columns(pl.col("metadata").fill_null(""))
    require_nonempty_strings(queries, "query_id", source)
    require_unique(queries, ["query_id"], source)
    require_nonempty_strings(queries, "text", source)
    bad_split = ~queries["split"].is_in(list(SPLITS))
    if bad_split.any():
        i = _first_index(bad_split)
        raise DataError(source.path, f"split must be one of {SPLITS}, got {queries['split'][i]!r}",
                        row=source.row(i), field="split")
    return queries


def validate_qrels(qrels: pl.DataFrame, documents: pl.DataFrame, queries: pl.DataFrame, source: Source) -> pl.DataFrame:
    require_columns(qrels, QRELS_SCHEMA, source)
    qrels = qrels.select(pl.col(c).cast(t) for c, t in QRELS_SCHEMA.items())
    require_known(qrels, "query_id", queries["query_id"], source, "query id")
    require_known(qrels, "doc_id", documents["doc_id"], source, "doc id")
    require_unique(qrels, ["query_id", "doc_id"], source)
    return qrels


def union_pairs(*frames: pl.DataFrame) -> pl.DataFrame:
    """Pair tables stacked in order; a (query, doc) pair present in several keeps its first row."""
    return pl.concat([f.cast(PAIRS_SCHEMA) for f in frames]).unique(["query_id", "doc_id"], keep="first",
                                                                     maintain_order=True)


def union_impressions(*frames: pl.DataFrame) -> pl.DataFrame:
    """Impression logs added up per (query, document, position)."""
    frames = [f.cast(IMPRESSIONS_SCHEMA) for f in frames] or [pl.DataFrame(schema=IMPRESSIONS_SCHEMA)]
    return (pl.concat(frames).group_by("query_id", "doc_id", "position", maintain_order=True)
            .agg(pl.col("impressions").sum(), pl.col("clicks").sum()).cast(IMPRESSIONS_SCHEMA))


@dataclass
class DatasetTables:
    """The canonical tables of one dataset, validated and ready to write."""

    documents: pl.DataFrame
    queries: pl.DataFrame
    qrels: pl.DataFrame
    notes: dict | None = None  # importer remarks shown in asset metadata (dropped rows, derived titles, ...)

    def warnings(self) -> list[str]:
        """What imports fine but leaves part of the pipeline with nothing to do (shown by `skim import` and the
        import asset's log)."""
        counts = dict(self.queries.group_by("split").len().iter_rows())
        consequence = {"train": "no clicks to train on and no known queries for the prompts",
                       "test": "nothing to evaluate on: every metric will be empty"}
        return [f"no {split} queries: {consequence[split]}" for split in SPLITS if not counts.get(split)]

    def validate(self, source: str | Path = "<dataset>") -> DatasetTables:
        src = Source(source)
        self.documents = validate_documents(self.documents, src)
        self.queries = validate_queries(self.queries, src)
        self.qrels = validate_qrels(self.qrels, self.documents, self.queries, src)
        return self
