"""The dual encoder's negatives: hard negatives mined with the current encoder, documents shown and never clicked,
and the documents of one batch (its pairs' own documents plus negatives sampled for each pair)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
import torch

from .encoders import TextEncoder
from .retrieval import exact_topk


class MinedNegatives(NamedTuple):
    negatives: list[np.ndarray]  # per query: its top-ranked non-positive document indices, best first
    document_embeddings: np.ndarray  # the mining pass's document embeddings (unit norm, rows of the documents)


class BatchDocuments(NamedTuple):
    documents: list[int]  # document indices, each once: the pairs' own documents first, then sampled negatives
    live: int  # how many of them are the pairs' own documents (always encoded with gradients)


def mine_hard_negatives(
    encoder: TextEncoder,
    query_texts: list[str],
    doc_texts: list[str],
    positives: list[set[int]],
    depth: int,
    max_lengths: tuple[int, int],
    bf16: bool = False,
) -> MinedNegatives:
    """Each query's `depth` top-ranked documents that are not among its positives, by the encoder as it is."""
    # mining only ranks: bf16 where the hardware has it (the loss and the evaluation stay fp32)
    with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=bf16):
        q = encoder.encode(query_texts, batch_size=128, max_length=max_lengths[0], role="query")
        d = encoder.encode(doc_texts, batch_size=128, max_length=max_lengths[1], role="document")
    max_pos = max((len(p) for p in positives), default=0)
    top, _ = exact_topk(q, d, depth + max_pos)
    return MinedNegatives([np.array([j for j in row if j not in pos][:depth], dtype=np.int64)
                           for row, pos in zip(top, positives)], d)


def shown_negative_pools(shown_not_clicked: pl.DataFrame, query_index: dict[str, int], doc_index: dict[str, int],
                         positives: list[set[int]]) -> list[np.ndarray]:
    """Per query (rows of `positives`): the sorted indices of documents shown for it and never clicked, its positives
    left out; ids of unknown queries or documents are ignored."""
    pools: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in positives]
    for qid, dids in shown_not_clicked.group_by("query_id").agg("doc_id").iter_rows():
        if qid in query_index:
            qi = query_index[qid]
            pools[qi] = np.array(sorted({doc_index[d] for d in dids if d in doc_index} - positives[qi]),
                                 dtype=np.int64)
    return pools


def batch_documents(pair_queries: np.ndarray, pair_documents: np.ndarray,
                    negatives: Iterable[tuple[Sequence[np.ndarray] | None, int]],
                    rng: np.random.Generator) -> BatchDocuments:
    """The documents a batch's softmax runs over: its pairs' own documents, then, for each (pools, per_pair) of
    `negatives` in turn and each pair, up to `per_pair` documents drawn without replacement from its query's pool
    (skipped where the pools are None or `per_pair` is 0)."""
    documents = list(dict.fromkeys(pair_documents.tolist()))
    live = len(documents)
    for pools, per_pair in negatives:
        if pools is None or not per_pair:
            continue
        for qi in pair_queries:
            pool = pools[qi]
            if len(pool):
                documents.extend(rng.choice(pool, size=min(per_pair, len(pool)), replace=False).tolist())
    return BatchDocuments(list(dict.fromkeys(documents)), live)
