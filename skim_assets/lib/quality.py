"""How good is what the teacher and the student write, and how many labels does a method repair?

Two families of figures, plain functions over polars frames:

- **Query quality** (teacher demonstrations and every generation asset): the share of queries *grounded* in their
  document (every content word occurs in its title or metadata after light normalisation), the *junk* share (role
  or numbering prefixes such as "A:" / "Text:" / "1.1.2:", code-like strings, one-word fragments, stop-word-only
  text), distinct queries per document, and the agreement of two writers (student vs teacher) on the same
  documents as the mean set F1 of their normalised queries.
- **Label repair** on datasets with simulated bias: the labels a method adds, judged against the *held-back*
  train labels (all train labels minus the clicks), which a simulation knows and a click log never does:
  precision of the added pairs, recall of the held-back labels, and how many documents gained a correct label.

`quality_filter` keeps only grounded, well-formed queries; it is the generation assets' default filter
(switchable for the ablation that shows what it buys).
"""

from __future__ import annotations

import re
from collections import Counter

import polars as pl

from .text import STOP_WORDS, normalise, words

# "A:", "b)", "Text:", "1.1.2:", "Q3." at the start: dialogue roles, numbering, echoed prompt fields.
_PREFIX = re.compile(
    r"^\s*(?:[A-Za-z]\s*[:.)]\s|[A-Za-z]\s*:|\d+(?:\.\d+)*\s*[:.)]|"
    r"(?:text|title|query|queries|answer|output|document|known queries|categories|question|q)\s*\d*\s*:)",
    re.IGNORECASE,
)
JUNK_REASONS = ("prefix", "code_like", "one_word", "no_content")
GROUNDING_PREFIX = 5  # words longer than this match on their first letters (light stemming: "migraines")


def content_words(text: str) -> list[str]:
    """Words of 3+ characters that are not stop words (numbers count: "vitamin d3", "2019 study")."""
    return [w for w in words(text) if len(w) >= 3 and w not in STOP_WORDS]


def junk_reason(query: str) -> str | None:
    """Why `query` is not a query (one of :data:`JUNK_REASONS`), or None when it is well formed."""
    text = (query or "").strip()
    letters = sum(c.isalpha() for c in text)
    if letters < 0.6 * max(len(text.replace(" ", "")), 1):
        return "code_like"
    if _PREFIX.match(text):
        return "prefix"
    if re.search(r"[@#{}<>\\|=_~^]|\w\.\w+\.\w", text):
        return "code_like"
    if len(words(text)) < 2:
        return "one_word"
    if not content_words(text):
        return "no_content"
    return None


def _vocabulary(text: str) -> tuple[set[str], set[str]]:
    vocab = set(words(text))
    return vocab, {w[:GROUNDING_PREFIX] for w in vocab if len(w) >= GROUNDING_PREFIX}


def is_grounded(query: str, vocabulary: tuple[set[str], set[str]]) -> bool:
    """Every content word of `query` occurs in the document (long words on their first letters)."""
    exact, prefixes = vocabulary
    content = content_words(query)
    return bool(content) and all(
        w in exact or (len(w) > GROUNDING_PREFIX and w[:GROUNDING_PREFIX] in prefixes) for w in content
    )


def judge_queries(queries: pl.DataFrame, documents: pl.DataFrame) -> pl.DataFrame:
    """`queries` (doc_id, query, ...) with `grounded` (bool) and `junk` (reason or null) per row."""
    vocab = {d: _vocabulary(f"{t or ''} {m or ''}")
             for d, t, m in documents.select("doc_id", "title", "metadata").iter_rows()}
    empty = (set(), set())
    rows = queries.select("doc_id", "query").iter_rows()
    junk, grounded = [], []
    for doc_id, query in rows:
        reason = junk_reason(query)
        junk.append(reason)
        grounded.append(reason is None and is_grounded(query, vocab.get(doc_id, empty)))
    return queries.with_columns(pl.Series("grounded", grounded, pl.Boolean), pl.Series("junk", junk, pl.String))


def query_quality(queries: pl.DataFrame, documents: pl.DataFrame, documents_asked: int | None = None) -> dict:
    """Grounded share, junk share (and per reason), distinct queries per document, coverage of the documents."""
    return judged_quality(judge_queries(queries, documents),
                          documents_asked if documents_asked is not None else documents.height)


def judged_quality(judged: pl.DataFrame, documents_asked: int) -> dict:
    """`query_quality` of rows already judged by `judge_queries`."""
    n = judged.height
    distinct = (judged.group_by("doc_id").agg(pl.col("query").map_elements(normalise, return_dtype=pl.String)
                                               .n_unique().alias("n")) if n else pl.DataFrame({"n": []}))
    reasons = Counter(r for r in judged["junk"].to_list() if r)
    return {
        "queries": n,
        "grounded_share": float(judged["grounded"].mean()) if n else 0.0,
        "junk_share": sum(reasons.values()) / n if n else 0.0,
        "junk_by_reason": {r: reasons.get(r, 0) for r in JUNK_REASONS},
        "distinct_queries_per_document": float(distinct["n"].sum() or 0) / max(documents_asked, 1),
        "document_coverage": distinct.height / max(documents_asked, 1),
    }


def keep_grounded(judged: pl.DataFrame, columns: list[str]) -> tuple[pl.DataFrame, dict]:
    """The grounded, well-formed rows of a table judged by `judge_queries` (the generation's quality filter): the
    kept rows' `columns`, and how many were dropped for what."""
    dropped = Counter(r for r in judged["junk"].to_list() if r)
    dropped["ungrounded"] = int((judged["junk"].is_null() & ~judged["grounded"]).sum())
    kept = judged.filter(pl.col("grounded")).select(columns)
    return kept, {reason: dropped.get(reason, 0) for reason in (*JUNK_REASONS, "ungrounded")}


def set_agreement(student: pl.DataFrame, teacher: pl.DataFrame, doc_ids: list[str]) -> dict:
    """Mean per-document precision, recall and F1 of the student's normalised query set against the teacher's,
    over `doc_ids` (documents both were asked about; a document the student wrote nothing for scores 0)."""
    def sets(frame):
        grouped = frame.filter(pl.col("doc_id").is_in(doc_ids)).group_by("doc_id").agg("query")
        return {d: {normalise(q) for q in qs} for d, qs in grouped.iter_rows()}

    s, t = sets(student), sets(teacher)
    scores = []
    for doc_id in doc_ids:
        a, b = s.get(doc_id, set()), t.get(doc_id, set())
        hit = len(a & b)
        p = hit / len(a) if a else 0.0
        r = hit / len(b) if b else 0.0
        scores.append((p, r, 2 * p * r / (p + r) if p + r else 0.0))
    n = max(len(scores), 1)
    return {"documents": len(scores), "precision": sum(x[0] for x in scores) / n,
            "recall": sum(x[1] for x in scores) / n, "f1": sum(x[2] for x in scores) / n}


def pairs_beyond(pairs: pl.DataFrame, clicks: pl.DataFrame) -> pl.DataFrame:
    """The distinct (query_id, doc_id) of `pairs` that are not clicks."""
    return pairs.select("query_id", "doc_id").unique().join(clicks.select("query_id", "doc_id").unique(),
                                                           on=["query_id", "doc_id"], how="anti")


def held_back_labels(oracle: pl.DataFrame, clicks: pl.DataFrame) -> pl.DataFrame:
    """Train labels the clicks missed: (query_id, doc_id)."""
    return pairs_beyond(oracle, clicks)


def label_repair(added: pl.DataFrame, clicks: pl.DataFrame, oracle: pl.DataFrame,
                 documents: pl.DataFrame | None = None) -> dict:
    """Judge the pairs a method adds against the held-back train labels.

    `added` is every pair the method trains on beyond the clicks (clicks inside it are ignored). Pairs whose query
    is not a real train query (e.g. Gandalf's label-text points) cannot be judged and are counted apart. With
    `documents` (doc_id), only those documents' pairs and held-back labels count: e.g. the documents a sampled
    generation wrote for, whose labels are all SKIM could repair.
    """
    held_back = held_back_labels(oracle, clicks)
    if documents is not None:
        held_back = held_back.join(documents.select("doc_id").unique(), on="doc_id", how="semi")
        added = added.join(documents.select("doc_id").unique(), on="doc_id", how="semi")
    train_queries = oracle.select("query_id").unique()
    new = pairs_beyond(added, clicks)
    judged = new.join(train_queries, on="query_id", how="semi")
    correct = judged.join(held_back, on=["query_id", "doc_id"], how="semi")
    return {
        "pairs_added": new.height,
        "pairs_judged": judged.height,
        "pairs_correct": correct.height,
        "precision": correct.height / judged.height if judged.height else 0.0,
        "held_back_labels": held_back.height,
        "recall": correct.height / held_back.height if held_back.height else 0.0,
        "documents_repaired": correct["doc_id"].n_unique(),
        "documents_missing_labels": held_back["doc_id"].n_unique(),
    }
