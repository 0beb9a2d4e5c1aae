"""A Renée-style one-vs-all classifier head: one weight vector (and bias) per document over encoder features.

The second base model of the comparison. Queries are embedded by the frozen pretrained encoder; each document's
classifier starts at its title embedding (Renée's label-embedding initialisation) and is trained with binary
cross-entropy over the query's positives (weighted by pair weight) and, as in Renée's full one-vs-all loss, every
other document as a negative (above `full_loss_max_documents`, a shortlist of hard negatives: the current head's
top-scored non-positives), each query's positives and negatives balanced, and each classifier pulled toward its
initial vector (`anchor`). Scores are q . w_d + b_d.

Above `full_loss_max_documents` the head is trained the way extreme classifiers are at millions of labels: each
step updates only the rows of the documents it scores (sparse gradients, lazy Adam: `torch.optim.SparseAdam`),
so a step costs the batch's shortlist, not the catalogue; the first shortlist comes from a search over the
initial vectors (the head's scores before training are exactly those inner products), which a caller can serve
from a saved ANN index, and later ones from blocked exact top-k of the current head (`remine_every`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from .retrieval import blocked_topk
from .settings import Settings

log = logging.getLogger(__name__)


class OvaHeadConfig(Settings):
    """One-vs-all head training settings."""

    epochs: int = Field(default=30, description="Passes over the training queries.")
    learning_rate: float = Field(default=0.02, description="Adam learning rate of the classifiers.")
    batch_size: int = Field(default=256, description="Queries per step.")
    shortlist: int = Field(default=20, description="Hard negatives per query, re-mined every epoch, on corpora "
                           "larger than full_loss_max_documents.")
    # Renée's full one-vs-all loss: up to this many documents every document is a negative of every query (a
    # [batch, documents] matrix per step, cheap at this size); above it, the hard-negative shortlist stands in.
    full_loss_max_documents: int = Field(default=20_000, description="Up to this many documents, every document "
                                         "is a negative of every query (full loss).")
    scale: float = Field(default=10.0, description="logits = scale * (q . w_d) + b_d, so unit-norm features give "
                         "useful margins.")
    weight_decay: float = Field(default=0.0, description="Adam weight decay.")
    # 0.2, measured on nfcorpus-dev (RESULTS.md): without the pull, a head trained on a missing-at-random sample of
    # the labels fell 4.8 R@100 below the click-trained head (each query's unsampled relevant documents, close to
    # its positives, pull their classifiers away as negatives); with it MAR >= clicks on three seeds, the oracle head
    # gains 1.3 and the clicks' head 2.7. On the demo it costs SKIM's head 4 points of R@10 (82.8 -> 78.6).
    anchor: float = Field(default=0.2, description="L2 pull of each classifier toward its initial vector (the "
                          "label's embedding), per step: keeps documents with few or noisy positives near what the "
                          "pretrained encoder knows of them (0 = off).")
    remine_every: int = Field(default=1, description="Epochs between shortlist re-mining with the current head "
                              "(shortlist mode only; 0 = keep the first shortlist, mined from the initial vectors).")
    seed: int = Field(default=0, description="Shuffling seed.")


@dataclass
class OvaHeadReport:
    queries: int
    pairs: int
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)


def train_ova_head(
    query_vectors: np.ndarray,
    pair_query_index: np.ndarray,
    pair_doc_index: np.ndarray,
    pair_weights: np.ndarray,
    doc_vectors: np.ndarray,
    config: OvaHeadConfig | None = None,
    progress: Callable[[str], None] | None = None,
    initial_search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, OvaHeadReport]:
    """Train per-document classifiers; returns (weights [n_docs, dim], biases [n_docs], report).

    Every query weighs the same, and within a query its positives and its negatives each carry half of its loss
    (weighted mean of the positives' binary cross-entropy, plus mean over the negatives). Without that balance a
    query with 40 positives and a shortlist of 20 negatives mostly raises biases, and documents with many labels
    crowd every ranking: more correct labels then score worse (the oracle below the clicks on NFCorpus).

    `initial_search(query_vectors, k) -> (indices, scores)` searches `doc_vectors` (e.g. a saved hnswlib index,
    `retrieval.DocumentIndex.search`); in shortlist mode it serves the first shortlist, else blocked exact top-k.
    """
    config = config or OvaHeadConfig()
    say = progress or log.info
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_queries, n_docs = query_vectors.shape[0], doc_vectors.shape[0]
    if n_docs > config.full_loss_max_documents:
        return _train_sparse(query_vectors, pair_query_index, pair_doc_index, pair_weights, doc_vectors, config, say,
                             rng, initial_search)
    queries = torch.from_numpy(query_vectors.astype(np.float32))
    initial = torch.from_numpy(doc_vectors.astype(np.float32))
    weights = torch.nn.Parameter(initial.clone())
    biases = torch.nn.Parameter(torch.zeros(n_docs))
    optimizer = torch.optim.Adam([weights, biases], lr=config.learning_rate, weight_decay=config.weight_decay)
    positives = _positives_by_query(n_queries, np.asarray(pair_query_index), np.asarray(pair_doc_index), pair_weights)
    trained = np.array([i for i in range(n_queries) if positives[i]])
    report = OvaHeadReport(queries=len(trained), pairs=len(pair_query_index), seconds=0.0)

    def batch_loss(rows):
        loss = _full_loss(queries, weights, biases, trained[rows], positives, config.scale)
        if config.anchor:
            loss = loss + config.anchor * (weights - initial).pow(2).sum(-1).mean()
        return loss

    _train_epochs(config, rng, len(trained), batch_loss, optimizer, report, say=say)
    say(_summary("full loss", report, n_docs, config))
    return weights.detach().numpy(), biases.detach().numpy(), report


def _train_epochs(config: OvaHeadConfig, rng: np.random.Generator, n_trained: int, batch_loss, optimizer,
                  report: OvaHeadReport, before_epoch: Callable[[int], None] | None = None,
                  say: Callable[[str], None] | None = None) -> None:
    """The epochs of either mode: batches of the trained queries in a fresh random order each epoch; each epoch's
    mean loss per query and the time in `report`, and a progress line per epoch (the oracle's head at 1M documents
    trains for minutes)."""
    started = time.monotonic()
    for epoch in range(config.epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        total = 0.0
        order = rng.permutation(n_trained)
        for start in range(0, n_trained, config.batch_size):
            rows = order[start : start + config.batch_size]
            loss = batch_loss(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        report.epoch_losses.append(total / max(n_trained, 1))
        if say is not None:
            say(f"one-vs-all head: epoch {epoch + 1}/{config.epochs} loss {report.epoch_losses[-1]:.4f} "
                f"({time.monotonic() - started:.0f}s, {n_trained} queries)")
    report.seconds = time.monotonic() - started


def _summary(mode: str, report: OvaHeadReport, n_docs: int, config: OvaHeadConfig) -> str:
    losses = (f"; loss {report.epoch_losses[0]:.4f} -> {report.epoch_losses[-1]:.4f}" if report.epoch_losses else "")
    return (f"one-vs-all head ({mode}): {report.queries} queries, {n_docs} documents, {config.epochs} epochs in "
            f"{report.seconds:.1f}s{losses}")


def _positives_by_query(n_queries: int, pair_query_index, pair_doc_index, pair_weights) -> list[dict[int, float]]:
    """Each query's positives {doc row: max pair weight}."""
    positives: list[dict[int, float]] = [{} for _ in range(n_queries)]
    for q, d, w in zip(pair_query_index.tolist(), pair_doc_index.tolist(), np.asarray(pair_weights).tolist()):
        positives[q][d] = max(float(w), positives[q].get(d, 0.0))
    return positives


def _train_sparse(query_vectors, pair_query_index, pair_doc_index, pair_weights, doc_vectors, config, say, rng,
                  initial_search) -> tuple[np.ndarray, np.ndarray, OvaHeadReport]:
    """Shortlist mode with sparse row updates: memory and time per step grow with the batch's shortlist, not with
    the number of documents. The anchor pulls each updated row toward its initial vector with the same per-row
    gradient as the dense loss (sum over the rows / n_docs); rows no step touches stay at their initial vector."""
    if config.weight_decay:
        raise ValueError("weight_decay is not available in shortlist mode (sparse rows, SparseAdam): set it to 0")
    n_queries, n_docs = query_vectors.shape[0], doc_vectors.shape[0]
    queries = torch.from_numpy(np.ascontiguousarray(query_vectors, dtype=np.float32))
    initial = torch.from_numpy(np.ascontiguousarray(doc_vectors, dtype=np.float32))
    weights = torch.nn.Embedding.from_pretrained(initial.clone(), freeze=False, sparse=True)
    biases = torch.nn.Embedding.from_pretrained(torch.zeros(n_docs, 1), freeze=False, sparse=True)
    optimizer = torch.optim.SparseAdam([weights.weight, biases.weight], lr=config.learning_rate)
    positives = _PositiveLists(n_queries, n_docs, pair_query_index, pair_doc_index, pair_weights)
    trained = np.flatnonzero(positives.counts > 0)
    report = OvaHeadReport(queries=len(trained), pairs=len(pair_query_index), seconds=0.0)
    # a query with thousands of positives would make the shortlist that deep: its negatives are the first
    # non-positives within shortlist + 4 x shortlist places (fewer, rarely, when positives fill them)
    depth = min(n_docs, config.shortlist + min(int(positives.counts.max(initial=0)), 4 * config.shortlist))
    shortlist = None

    def mine(epoch: int) -> None:
        nonlocal shortlist
        if shortlist is None:
            search = initial_search or (lambda vectors, k: blocked_topk(vectors, lambda b: b @ initial.numpy().T,
                                                                        n_docs, k))
            shortlist, _ = search(query_vectors[trained], depth)
        elif config.remine_every and epoch % config.remine_every == 0:
            w, b = weights.weight.detach().numpy(), biases.weight.detach().numpy()[:, 0]
            shortlist, _ = blocked_topk(query_vectors[trained], lambda block: (block @ w.T) * config.scale + b,
                                        n_docs, depth)

    def batch_loss(rows):
        q_t, d_t, target, positive_weight, negative_weight = positives.batch(trained[rows], shortlist[rows],
                                                                             config.shortlist)
        logits = (queries[q_t] * weights(d_t)).sum(-1) * config.scale + biases(d_t)[:, 0]
        loss = _balanced_bce(logits, target, positive_weight, negative_weight) / len(rows)
        if config.anchor:
            touched = torch.unique(d_t)
            loss = loss + config.anchor * (weights(touched) - initial[touched]).pow(2).sum() / n_docs
        return loss

    _train_epochs(config, rng, len(trained), batch_loss, optimizer, report, before_epoch=mine, say=say)
    say(_summary("shortlist loss, sparse rows", report, n_docs, config))
    return weights.weight.detach().numpy(), biases.weight.detach().numpy()[:, 0].copy(), report


class _PositiveLists:
    """Every query's positives as sorted (query, document) keys with their weights normalised per query (CSR
    layout), so a batch's loss entries are gathered with array operations, not Python loops over its queries."""

    def __init__(self, n_queries: int, n_docs: int, pair_query_index, pair_doc_index, pair_weights):
        q = np.asarray(pair_query_index, dtype=np.int64)
        d = np.asarray(pair_doc_index, dtype=np.int64)
        w = np.asarray(pair_weights, dtype=np.float64)
        keys = q * n_docs + d
        order = np.lexsort((-w, keys))  # by key, the highest weight first: a repeated pair keeps its max
        keys, w = keys[order], w[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        self.keys, weights = keys[first], w[first]
        self.n_docs = n_docs
        self.docs = self.keys % n_docs
        owners = self.keys // n_docs
        self.counts = np.bincount(owners, minlength=n_queries)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        totals = np.bincount(owners, weights=weights, minlength=n_queries)
        self.weights = weights / np.where(totals[owners] > 0, totals[owners], 1.0)

    def batch(self, queries: np.ndarray, shortlist: np.ndarray, n_negatives: int):
        """(query rows, document rows, targets, positive weights, negative weights) of a batch: each query's
        positives (weights summing to 1) and its first `n_negatives` non-positive shortlist entries (1 / count
        each)."""
        counts = self.counts[queries]
        at = np.repeat(self.starts[queries] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) \
            + np.arange(counts.sum())
        pos_q, pos_d, pos_w = np.repeat(queries, counts), self.docs[at], self.weights[at]
        candidate_keys = queries[:, None] * self.n_docs + shortlist
        found = np.searchsorted(self.keys, candidate_keys)
        is_positive = self.keys[np.minimum(found, len(self.keys) - 1)] == candidate_keys
        keep = ~is_positive & (np.cumsum(~is_positive, axis=1) <= n_negatives)
        rows, cols = np.nonzero(keep)
        per_row = keep.sum(axis=1)
        neg_q, neg_d = queries[rows], shortlist[rows, cols]
        neg_w = 1.0 / np.maximum(per_row[rows], 1)
        n_pos, n_neg = len(pos_q), len(neg_q)
        return (torch.from_numpy(np.concatenate([pos_q, neg_q])), torch.from_numpy(np.concatenate([pos_d, neg_d])),
                torch.cat([torch.ones(n_pos), torch.zeros(n_neg)]),
                torch.from_numpy(np.concatenate([pos_w, np.zeros(n_neg)]).astype(np.float32)),
                torch.from_numpy(np.concatenate([np.zeros(n_pos), neg_w]).astype(np.float32)))


def _balanced_bce(logits: torch.Tensor, target: torch.Tensor, positive_weight: torch.Tensor,
                  negative_weight: torch.Tensor) -> torch.Tensor:
    """Sum of BCE terms, positives weighted by `positive_weight` and negatives by `negative_weight` (per entry)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * torch.where(target > 0, positive_weight, negative_weight)).sum()


def _full_loss(queries, weights, biases, query_rows, positives, scale) -> torch.Tensor:
    """Every document scored for every query of the batch; per query: weighted mean over positives + mean over
    negatives; averaged over the batch's queries."""
    logits = (queries[torch.from_numpy(query_rows)] @ weights.T) * scale + biases
    target = torch.zeros_like(logits)
    positive_weight = torch.zeros_like(logits)
    negative_weight = torch.empty(logits.shape[0], 1)
    n_docs = logits.shape[1]
    for row, qi in enumerate(query_rows):
        docs = list(positives[qi])
        w = torch.tensor([positives[qi][d] for d in docs])
        target[row, docs] = 1.0
        positive_weight[row, docs] = w / w.sum().clamp_min(1e-12)
        negative_weight[row, 0] = 1.0 / max(n_docs - len(docs), 1)
    return _balanced_bce(logits, target, positive_weight, negative_weight.expand_as(logits)) / len(query_rows)


def ova_topk(query_vectors: np.ndarray, weights: np.ndarray, biases: np.ndarray, k: int, scale: float = 10.0,
             block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-k documents by head score, best first (ties by lower index)."""
    return blocked_topk(query_vectors, lambda block: (block @ weights.T) * scale + biases, weights.shape[0], k,
                        block_size)


def save_head(path: Path, weights: np.ndarray, biases: np.ndarray, doc_ids: list[str]) -> None:
    """A trained head as one `.npz` (weights, biases and the label ids its rows score)."""
    np.savez(path, weights=weights, biases=biases, doc_ids=np.array(doc_ids))


def load_head(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(weights, biases, label ids) of a head saved by `save_head`."""
    with np.load(path) as head:
        return head["weights"], head["biases"], head["doc_ids"].tolist()
