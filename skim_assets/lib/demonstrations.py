"""SKIM's data steps around the language models: teacher demonstrations, student examples, parsed generations.

Plain functions over polars frames; the models themselves sit behind `teachers` and `generation`.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from .formats import DOCUMENTS_FOR_QUERIES
from .parsing import parse_generated_queries, parse_rate
from .prompts import MAX_KNOWN_QUERIES, student_prompt, student_target, teacher_messages
from .text import normalise, normalised

QUERIES_SCHEMA = {"doc_id": pl.String, "query": pl.String, "rank": pl.Int32}


def known_queries_by_doc(pairs: pl.DataFrame, queries: pl.DataFrame, limit: int = MAX_KNOWN_QUERIES) -> dict:
    """doc_id -> up to `limit` texts of its known (clicked) train queries, highest weight first."""
    return _known_texts(pairs, queries.select("query_id", "text"), of="doc_id", limit=limit)


def known_documents_by_query(pairs: pl.DataFrame, documents: pl.DataFrame, limit: int = MAX_KNOWN_QUERIES) -> dict:
    """query_id -> up to `limit` titles of its known (clicked) documents, highest weight first."""
    return _known_texts(pairs, documents.select("doc_id", "title"), of="query_id", limit=limit)


def _known_texts(pairs: pl.DataFrame, texts: pl.DataFrame, of: str, limit: int) -> dict:
    """`of` id -> the texts (`texts`: other id, text) it is paired with, highest weight first, then by text."""
    other, text = texts.columns
    known = (
        pairs.join(texts, on=other)
        .sort([of, "weight", text], descending=[False, True, False])
        .group_by(of, maintain_order=True)
        .agg(pl.col(text).head(limit))
    )
    return dict(zip(known[of].to_list(), known[text].to_list()))


def generation_sources(direction: str, documents: pl.DataFrame, queries: pl.DataFrame,
                       train_pairs: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """What the teacher and the student write for, shaped like the documents table (doc_id, title, metadata), and
    each source's known outputs (what the prompts show).

    - queries_for_documents: the documents; known outputs are their clicked train queries.
    - documents_for_queries: the train queries with metadata, as rows whose `doc_id` is the query id and whose
      `title` is the query text; known outputs are the titles of their clicked documents. Test queries are never
      sources: their labels are what the evaluation holds back.
    In either direction the generation tables key their rows by the source's id in `doc_id`.
    """
    if direction != DOCUMENTS_FOR_QUERIES:
        return documents, known_queries_by_doc(train_pairs, queries)
    if "metadata" not in queries.columns:
        raise ValueError("generate: documents_for_queries needs query metadata, and no query of this dataset has "
                         "any (XC raw `content`, or BEIR's `query_metadata_field` in dataset.json)")
    sources = (queries.filter((pl.col("split") == "train") & (pl.col("metadata").fill_null("").str.strip_chars() != ""))
               .select(pl.col("query_id").alias("doc_id"), pl.col("text").alias("title"), "metadata")
               .unique("doc_id", keep="first").sort("doc_id"))
    return sources, known_documents_by_query(train_pairs, documents)


def teacher_reference_texts(direction: str, documents: pl.DataFrame, queries: pl.DataFrame) -> list[str]:
    """What an offline teacher's phrases should read like: the dataset's train queries, or for
    documents_for_queries its documents' titles."""
    if direction == DOCUMENTS_FOR_QUERIES:
        return documents["title"].to_list()
    return queries.filter(pl.col("split") == "train")["text"].to_list()


def seeded_subset(items: list, max_items: int, seed: int) -> list:
    """At most `max_items` of `items`, a seeded sample in their original order (all of them below the cap)."""
    if len(items) <= max_items:
        return items
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=max_items, replace=False))
    return [items[i] for i in chosen]


def sample_documents(documents: pl.DataFrame, max_documents: int, seed: int) -> pl.DataFrame:
    """A seeded sample of at most `max_documents` documents with non-empty metadata, in doc_id order."""
    candidates = documents.filter(pl.col("metadata").str.strip_chars().str.len_chars() > 0).sort("doc_id")
    if candidates.height <= max_documents:
        return candidates
    chosen = np.sort(np.random.default_rng(seed).choice(candidates.height, size=max_documents, replace=False))
    return candidates[chosen]


def teacher_requests(documents: pl.DataFrame, known: dict, style: str, request_type: type) -> list:
    return [
        request_type(key=row["doc_id"],
                     messages=teacher_messages(row["title"], row["metadata"], known.get(row["doc_id"], []), style),
                     title=row["title"], metadata=row["metadata"], style=style)
        for row in documents.iter_rows(named=True)
    ]


def parse_outputs(
    doc_ids: list[str], texts: list[str | None], documents: pl.DataFrame, known: dict, style: str, max_queries: int
) -> tuple[pl.DataFrame, dict]:
    """Parse raw model outputs into (doc_id, query, rank) rows; returns the rows and parse statistics."""
    title_of = dict(zip(documents["doc_id"].to_list(), documents["title"].to_list()))
    rows, results, rejected = [], [], Counter()
    for doc_id, text in zip(doc_ids, texts):
        result = parse_generated_queries(text or "", title=title_of.get(doc_id, ""),
                                         known_queries=known.get(doc_id, []), max_queries=max_queries, style=style)
        results.append(result)
        rejected.update(result.rejected)
        rows.extend((doc_id, q, rank) for rank, q in enumerate(result.queries, start=1))
    frame = pl.DataFrame(rows, schema=QUERIES_SCHEMA, orient="row")
    stats = {
        "outputs": len(texts),
        "parse_rate": parse_rate(results) if results else 0.0,
        "queries": frame.height,
        "queries_per_document": frame.height / max(len(texts), 1),
        "rejected": dict(sorted(rejected.items())),
    }
    return frame, stats


def merge_samples(queries: pl.DataFrame, max_queries: int) -> pl.DataFrame:
    """One query list per document from several sampled outputs: rows in (sample, rank) order, a query already
    written for the document (after normalisation) dropped, at most `max_queries` kept, ranks renumbered."""

    if queries.height == 0:
        return queries.select(QUERIES_SCHEMA.keys())
    key = pl.col("query").map_elements(normalise, return_dtype=pl.String)
    merged = (queries.with_row_index("_order").with_columns(_key=key)
              .unique(["doc_id", "_key"], keep="first", maintain_order=True)
              .sort("doc_id", "_order")
              .with_columns(rank=pl.int_range(1, pl.len() + 1).over("doc_id").cast(pl.Int32))
              .filter(pl.col("rank") <= max_queries))
    return merged.select(QUERIES_SCHEMA.keys())


def student_examples(
    demonstrations: pl.DataFrame, documents: pl.DataFrame, known: dict, style: str, use_metadata: bool = True
) -> tuple[list[str], list[str], list[str]]:
    """(prompts, targets, doc_ids) for LoRA SFT: the compact student prompt and the teacher's queries, per document."""
    grouped = demonstrations.sort("doc_id", "rank").group_by("doc_id", maintain_order=True).agg("query")
    docs = documents.join(grouped, on="doc_id").sort("doc_id")
    prompts = student_prompts(docs, known, style, use_metadata)
    targets = [student_target(queries) for queries in docs["query"].to_list()]
    return prompts, targets, docs["doc_id"].to_list()


def student_prompts(documents: pl.DataFrame, known: dict, style: str, use_metadata: bool = True) -> list[str]:
    return [
        student_prompt(row["title"], row["metadata"] if use_metadata else "", known.get(row["doc_id"], []), style)
        for row in documents.iter_rows(named=True)
    ]


def _normalised_queries(queries: pl.DataFrame) -> pl.DataFrame:
    return queries.select("doc_id", normalised(pl.col("query")))


def duplicate_rate(queries: pl.DataFrame) -> float:
    """Fraction of generated queries that repeat a query of the same document (normalised text, samples merged):
    redundant outputs. The same text for several documents is not counted: documents that share a maker or a
    place are rightly asked for with one query (`top_query_document_share` catches a collapsed generator)."""
    if queries.height == 0:
        return 0.0
    return 1.0 - _normalised_queries(queries).unique().height / queries.height


def top_query_document_share(queries: pl.DataFrame) -> float:
    """The share of documents for which the single most widely written text was written: near 1 when a generator
    collapsed to one output for everything."""
    if queries.height == 0:
        return 0.0
    pairs = _normalised_queries(queries).unique()
    return pairs.group_by("query").len()["len"].max() / queries["doc_id"].n_unique()
