"""A DEXML-style dual encoder for retrieval / extreme classification.

One shared encoder embeds queries and document titles. Each training pair (q, d+, w) gets a softmax over the
batch's documents (in-batch positives of other pairs plus mined hard negatives) in which q's *other* positives are
removed from the denominator ("decoupled softmax", Gupta et al., DEXML, ICLR 2024), and its loss is weighted by w
(1 for clicks, the mapping score for SKIM pairs). Hard negatives are the current encoder's top-ranked
non-positive documents, re-mined every `remine_every` epochs.

The loss is `dual_encoder_loss`, the negatives (mined, shown, and a batch's documents) `dual_encoder_negatives`;
this module holds the settings and the training loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from pydantic import Field
from transformers import get_linear_schedule_with_warmup

from .checkpoints import (
    Digest,
    TrainingCheckpoint,
    fingerprint_settings,
    module_digest,
    ragged_to_tensors,
    restore_rng_states,
    tensors_to_ragged,
)
from .devices import resolve_dtype
from .dual_encoder_loss import decoupled_softmax_loss
from .dual_encoder_negatives import BatchDocuments, batch_documents, mine_hard_negatives, shown_negative_pools
from .encoders import TextEncoder
from .retrieval import exact_topk, hnsw_topk, topk_frame, vectors_fingerprint
from .settings import Settings

log = logging.getLogger(__name__)


class DualEncoderConfig(Settings):
    """Training settings. Defaults were chosen on SciFact train -> test (see BENCHMARKS.md / RESULTS.md)."""

    epochs: int = Field(default=5, description="Passes over the training pairs.")
    batch_size: int = Field(default=64, description="Pairs per step (in-batch negatives).")
    learning_rate: float = Field(default=5e-5, description="AdamW peak learning rate (linear warmup/decay).")
    weight_decay: float = Field(default=0.01, description="AdamW weight decay.")
    warmup_fraction: float = Field(default=0.1, description="Share of the steps spent warming the learning rate up.")
    temperature: float = Field(default=0.05, description="Softmax temperature over cosine scores (scale 20, as "
                               "sentence-transformers' MultipleNegativesRankingLoss).")
    hard_negatives: int = Field(default=2, description="Mined hard negatives per pair (0 = in-batch only).")
    hard_negative_depth: int = Field(default=20, description="Negatives come from this many top non-positives.")
    # 2, not 1: mining is a third of an epoch's time; on SciFact's oracle row (5 epochs, 2 seeds) re-mining every
    # other epoch trains 2.29x the previous path's pairs/s at R@10 +0.44 / R@100 -0.70 (BENCHMARKS.md)
    remine_every: int = Field(default=2, description="Epochs between negative re-mining (0 = mine once with the "
                              "initial encoder).")
    precision: str = Field(default="auto", description="'auto' = bf16 autocast where the hardware has bf16 (CUDA, "
                           "AVX512-BF16/AMX CPUs; lib.devices.native_bf16), else fp32; or 'bfloat16' / 'float32'.")
    length_buckets: bool = Field(default=True, description="Batch pairs of similar text length (less padding); the "
                                 "batch order stays random.")
    cached_negatives: bool = Field(default=False, description="Hard negatives use the document embeddings of the "
                                   "mining pass (no gradient through them): fewer documents encoded per step.")
    shown_negatives: int = Field(default=0, ge=0, description="Documents shown for a pair's query and never "
                                 "clicked (the impressions' evidence), added to its batch as negatives, per pair "
                                 "(0 = off; no effect without impressions).")
    shown_negatives_positions: int = Field(default=10, ge=1, description="Only documents shown at or above this "
                                           "position count as seen and passed over.")
    max_pairs: int = Field(default=0, description="Train on a seeded uniform sample of at most this many pairs "
                           "(0 = every pair): what a 2-core machine affords of a million-document dataset.")
    train_document_tower: bool = Field(default=True, description="False = query-side fine-tuning: documents keep "
                                       "their pretrained embeddings (one embedding and one index of the catalogue, "
                                       "shared by every such model), only the query tower learns.")
    seed: int = Field(default=0, description="Seed for shuffling and negative sampling.")
    log_every_s: float = Field(default=20.0, description="Seconds between progress lines.")
    # ~5 minutes of MiniLM training on 2 CPU cores (~3 s a step), under a minute on a GPU; a checkpoint holds the
    # encoder and AdamW's two moments: ~270 MB for MiniLM
    checkpoint_every_steps: int = Field(default=100, ge=0, description="With a checkpoint folder "
                                        "(`train_dual_encoder(checkpoint_dir=...)`), save the training state every "
                                        "this many optimizer steps (atomically): a killed, retried or re-run step "
                                        "resumes from the last one and ends as an uninterrupted run would (0 = off).")


BUCKET_SPAN = 50  # batches per length-sorted chunk: sorting within ~50 batches keeps the batch order random


def batch_order(rng: np.random.Generator, lengths: np.ndarray, batch_size: int, buckets: bool) -> list[np.ndarray]:
    """One epoch's batches of pair indices. Shuffled; with `buckets`, each chunk of `BUCKET_SPAN` batches is sorted
    by text length before it is cut, so a batch pads to a length close to its texts' own, and the batches are then
    shuffled again."""
    order = rng.permutation(len(lengths))
    if not buckets:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    span = batch_size * BUCKET_SPAN
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class TrainingReport:
    pairs: int
    queries: int
    steps: int
    seconds: float
    pairs_per_second: float
    loss_curve: list[float] = field(default_factory=list)  # mean loss per logging window
    epoch_losses: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    resumed_from_step: int = 0  # the checkpoint's step a resumed run continued from (0: trained from the start)


def _documents_by_query(pairs: pl.DataFrame) -> dict[str, set[str]]:
    return {qid: set(docs) for qid, docs in pairs.group_by("query_id").agg("doc_id").iter_rows()}


def in_batch_false_negative_share(pairs: pl.DataFrame, relevant: pl.DataFrame, batch_size: int = 64,
                                  batches: int = 200, seed: int = 0) -> float:
    """The share of in-batch negatives that are in fact relevant: over `batches` random batches of `batch_size`
    training pairs, each pair's query against the batch's other documents that are not among its training
    positives (the decoupled softmax's negatives), judged by `relevant` (query_id, doc_id; e.g. every train label,
    for a simulation that held some back). A sample that misses a query's labels at random turns more of its
    relevant documents into negatives than one that misses them outside an exposure window."""
    if pairs.height < 2:
        return 0.0
    known, truth = _documents_by_query(pairs), _documents_by_query(relevant)
    query_ids, doc_ids = pairs["query_id"].to_list(), pairs["doc_id"].to_list()
    rng = np.random.default_rng(seed)
    negatives = false = 0
    for _ in range(batches):
        batch = rng.choice(len(query_ids), size=min(batch_size, len(query_ids)), replace=False)
        batch_docs = {doc_ids[i] for i in batch}
        for i in batch:
            for did in batch_docs - known[query_ids[i]]:
                negatives += 1
                false += did in truth.get(query_ids[i], ())
    return false / negatives if negatives else 0.0


@dataclass
class TrainingPairs:
    """Training pairs as the loop sees them: indices into the training queries' and the documents' texts."""

    query_texts: list[str]  # the queries with training pairs, in order of first appearance
    doc_texts: list[str]  # every document's title (rows of `documents`)
    pair_q: np.ndarray  # per pair: its query's index
    pair_d: np.ndarray  # per pair: its document's index
    pair_w: np.ndarray  # per pair: its weight (float32)
    positives: list[set[int]]  # per query: its pairs' documents and its known positives, never its negatives
    shown_pools: list[np.ndarray]  # per query: documents shown and never clicked (empty unless shown_negatives)
    lengths: np.ndarray  # per pair: characters of query and document text (length buckets)


def index_training_pairs(pairs: pl.DataFrame, queries: pl.DataFrame, documents: pl.DataFrame,
                         known_positives: pl.DataFrame | None = None, shown_not_clicked: pl.DataFrame | None = None,
                         shown_negatives: bool = False) -> TrainingPairs:
    """`pairs` (query_id, doc_id, weight) as indices; see `train_dual_encoder` for the other frames."""
    train_query_ids = pairs["query_id"].unique(maintain_order=True)
    query_index = {qid: i for i, qid in enumerate(train_query_ids.to_list())}
    text_of = dict(zip(queries["query_id"].to_list(), queries["text"].to_list()))
    query_texts = [text_of[qid] for qid in train_query_ids.to_list()]
    doc_index = {d: i for i, d in enumerate(documents["doc_id"].to_list())}
    doc_texts = documents["title"].to_list()

    pair_q = np.array([query_index[q] for q in pairs["query_id"].to_list()], dtype=np.int64)
    pair_d = np.array([doc_index[d] for d in pairs["doc_id"].to_list()], dtype=np.int64)
    pair_w = pairs["weight"].to_numpy().astype(np.float32)
    positives: list[set[int]] = [set() for _ in query_texts]
    for qi, di in zip(pair_q, pair_d):
        positives[qi].add(int(di))
    if known_positives is not None:
        for qid, did in known_positives.select("query_id", "doc_id").iter_rows():
            if qid in query_index and did in doc_index:
                positives[query_index[qid]].add(doc_index[did])

    shown_pools: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in query_texts]
    if shown_negatives and shown_not_clicked is not None:
        shown_pools = shown_negative_pools(shown_not_clicked, query_index, doc_index, positives)
    lengths = np.array([len(query_texts[q]) + len(doc_texts[d]) for q, d in zip(pair_q, pair_d)])
    return TrainingPairs(query_texts, doc_texts, pair_q, pair_d, pair_w, positives, shown_pools, lengths)


def _checked_pairs(pairs: pl.DataFrame, config: DualEncoderConfig, document_vectors: np.ndarray | None,
                   say: Callable[[str], None]) -> pl.DataFrame:
    """The pairs to train on (a seeded sample of at most `max_pairs`), once the settings are known to fit."""
    if pairs.height == 0:
        raise ValueError("no training pairs")
    frozen = not config.train_document_tower
    if frozen and document_vectors is None:
        raise ValueError("train_document_tower=False needs the documents' pretrained vectors (document_vectors)")
    if frozen and config.hard_negatives:
        raise ValueError("train_document_tower=False trains with in-batch negatives only: set hard_negatives to 0")
    if config.max_pairs and pairs.height > config.max_pairs:
        pairs = pairs.sample(config.max_pairs, seed=config.seed)
        say(f"dual encoder: training on a seeded sample of {config.max_pairs} pairs (max_pairs)")
    return pairs


def train_dual_encoder(
    encoder: TextEncoder,
    pairs: pl.DataFrame,
    queries: pl.DataFrame,
    documents: pl.DataFrame,
    config: DualEncoderConfig | None = None,
    progress: Callable[[str], None] | None = None,
    query_max_length: int = 32,
    doc_max_length: int = 32,
    known_positives: pl.DataFrame | None = None,
    document_vectors: np.ndarray | None = None,
    shown_not_clicked: pl.DataFrame | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainingReport:
    """Fine-tune `encoder` in place on weighted (query_id, doc_id, weight) pairs.

    `queries` has query_id, text; `documents` has doc_id, title. Pairs must reference known ids. Texts are cut to
    the encoder's max lengths (tokens) and get its model's query / document prompts, if any. `known_positives`
    (query_id, doc_id) are further relevant pairs that are not trained on but never serve as a query's negatives,
    as its own pairs' documents do (the decoupled softmax); rows for queries without training pairs are ignored.
    `benchmarks/dual_encoder_labels.py` uses it to measure what unlabelled positives among the negatives cost.
    `document_vectors` (rows of `documents`, unit norm) are the fixed document embeddings of query-side
    fine-tuning (`train_document_tower=False`).
    `shown_not_clicked` (query_id, doc_id): documents shown for a query and never clicked, from which
    `config.shown_negatives` per pair join its batch as negatives (never one of the query's positives).
    `checkpoint_dir` (a step's own folder, e.g. `storage.step_dir("retriever_checkpoints", dataset, asset)`): the
    training state is saved there every `config.checkpoint_every_steps` optimizer steps (`lib.checkpoints`); a
    later call with the same settings, pairs, texts and starting encoder resumes from it (the report's
    `resumed_from_step`) and ends with the same weights as an uninterrupted run. It is removed when training ends;
    the caller saves the trained encoder.
    """
    config = config or DualEncoderConfig()
    say = progress or log.info
    pairs = _checked_pairs(pairs, config, document_vectors, say)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    data = index_training_pairs(pairs, queries, documents, known_positives, shown_not_clicked,
                                bool(config.shown_negatives))
    run = _DualEncoderRun(encoder, data, config, rng, say, (query_max_length, doc_max_length), document_vectors,
                          checkpoint_dir)
    return run.train()


class _DualEncoderRun:
    """One training run: the optimizer, the loop's position and history, and its checkpoint."""

    def __init__(self, encoder: TextEncoder, data: TrainingPairs, config: DualEncoderConfig, rng: np.random.Generator,
                 say: Callable[[str], None], max_lengths: tuple[int, int], document_vectors: np.ndarray | None,
                 checkpoint_dir: str | Path | None):
        self.encoder, self.data, self.config, self.rng, self.say = encoder, data, config, rng, say
        self.max_lengths, self.document_vectors = max_lengths, document_vectors
        self.frozen = not config.train_document_tower
        self.bf16 = resolve_dtype(config.precision, encoder.device) == torch.bfloat16
        self.total_steps = math.ceil(len(data.pair_q) / config.batch_size) * config.epochs
        self.checkpoint = TrainingCheckpoint(checkpoint_dir, "", config.checkpoint_every_steps, say, "dual encoder")
        if self.checkpoint.enabled:
            self.checkpoint.fingerprint = self._fingerprint()
        self.optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(config.warmup_fraction * self.total_steps),
                                                         self.total_steps)
        self.use_negatives = config.hard_negatives > 0 and len(data.doc_texts) > 1
        self.report = TrainingReport(pairs=len(data.pair_q), queries=len(data.query_texts), steps=self.total_steps,
                                     seconds=0.0, pairs_per_second=0.0, config=config.as_dict())
        self.window: list[float] = []  # losses since the last progress line
        self.negatives: list[np.ndarray] = []  # mined hard negatives per query
        self.negative_cache: torch.Tensor | None = None  # the mining pass's document embeddings (cached_negatives)
        self.step = 0
        self.started = self.last_log = 0.0

    def _fingerprint(self) -> str:
        """What this run computes: settings, texts and pairs as trained, the starting encoder."""
        data, encoder = self.data, self.encoder
        return (
            Digest("dual_encoder").json(fingerprint_settings(self.config))
            .json([self.bf16, *self.max_lengths, encoder.prompt("query"), encoder.prompt("document")])
            .texts(data.query_texts).texts(data.doc_texts).array(data.pair_q).array(data.pair_d).array(data.pair_w)
            .arrays(sorted(p) for p in data.positives).arrays(data.shown_pools)
            .json(None if self.document_vectors is None else vectors_fingerprint(self.document_vectors))
            .json(module_digest(encoder.model)).hexdigest())

    def train(self) -> TrainingReport:
        saved = self.checkpoint.load() if self.checkpoint.enabled else None
        start_epoch, seconds_before = self._resume(saved) if saved else (0, 0.0)
        self.started = self.last_log = time.monotonic() - seconds_before  # seconds of training, across resumed runs
        for epoch in range(start_epoch, self.config.epochs):
            # a resumed run's first epoch: its negatives, batch order and position come from the checkpoint
            self._train_epoch(epoch, saved if saved is not None and epoch == start_epoch else None)
        self.encoder.model.eval()
        report = self.report
        report.seconds = time.monotonic() - self.started
        report.pairs_per_second = len(self.data.pair_q) * self.config.epochs / max(report.seconds, 1e-9)
        self.checkpoint.remove()  # the caller saves the trained encoder: the artifact
        return report

    def _resume(self, saved: dict) -> tuple[int, float]:
        """Take up a checkpoint's state: (the epoch it was in, its seconds of training)."""
        self.encoder.model.load_state_dict(saved["weights"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.negatives = tensors_to_ragged(saved["negatives"])
        cache = saved["negative_cache"]
        self.negative_cache = cache.to(self.encoder.device) if cache is not None else None
        self.report.loss_curve, self.report.epoch_losses = saved["loss_curve"], saved["epoch_losses"]
        self.step, self.window = saved["step"], saved["window"]
        self.report.resumed_from_step = self.step
        self.say(f"dual encoder: resumed from step {self.step}/{self.total_steps} (epoch {saved['epoch'] + 1}/"
                 f"{self.config.epochs}, checkpoint {self.checkpoint.path})")
        return saved["epoch"], saved["seconds"]

    def _train_epoch(self, epoch: int, saved: dict | None) -> None:
        config, rng = self.config, self.rng
        remine = epoch == 0 or (config.remine_every and epoch % config.remine_every == 0)
        if self.use_negatives and remine and saved is None:
            self._mine()
        self.encoder.model.train()
        if saved is not None:
            rng.bit_generator.state = saved["epoch_rng"]
        epoch_rng = rng.bit_generator.state  # the epoch's batch order is drawn again from here on resuming
        batches = batch_order(rng, self.data.lengths, config.batch_size, config.length_buckets)
        epoch_loss, first = 0.0, 0
        if saved is not None:
            rng.bit_generator.state = saved["rng_loop"]
            restore_rng_states(saved["rng"])  # dropout draws from torch's generator
            epoch_loss, first = saved["epoch_loss"], saved["next_batch"]
        for index in range(first, len(batches)):
            loss = self._train_step(batches[index])
            self.step += 1
            self.window.append(loss)
            epoch_loss += loss * len(batches[index])
            self._log_progress(epoch)
            if self.step < self.total_steps and self.checkpoint.due(self.step):
                self._save_checkpoint(epoch, index + 1, epoch_rng, epoch_loss)
        self.report.epoch_losses.append(epoch_loss / len(self.data.pair_q))

    def _mine(self) -> None:
        mined = mine_hard_negatives(self.encoder, self.data.query_texts, self.data.doc_texts, self.data.positives,
                                    self.config.hard_negative_depth, self.max_lengths, self.bf16)
        self.negatives = mined.negatives
        self.negative_cache = (torch.from_numpy(mined.document_embeddings).to(self.encoder.device)
                               if self.config.cached_negatives else None)

    def _train_step(self, batch: np.ndarray) -> float:
        """One optimizer step on the pairs `batch`: its loss."""
        data, config = self.data, self.config
        bq, bd, bw = data.pair_q[batch], data.pair_d[batch], data.pair_w[batch]
        documents = batch_documents(bq, bd, ((self.negatives if self.use_negatives else None, config.hard_negatives),
                                             (data.shown_pools, config.shown_negatives)), self.rng)
        q_emb, d_emb = self._embed(bq, documents)
        loss = decoupled_softmax_loss(q_emb, d_emb, documents.documents, bq, bd, bw, data.positives,
                                      config.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.encoder.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def _embed(self, pair_queries: np.ndarray, documents: BatchDocuments) -> tuple[torch.Tensor, torch.Tensor]:
        """(one query embedding per pair, one document embedding per batch document)."""
        encoder, data, (query_max_length, doc_max_length) = self.encoder, self.data, self.max_lengths
        batch_docs, n_live = documents
        # a query with several positives can appear more than once in a batch: encode it once
        unique_queries, query_rows = np.unique(pair_queries, return_inverse=True)
        with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            q_emb = encoder.embed([data.query_texts[i] for i in unique_queries], query_max_length,
                                  role="query")[query_rows]
            live = batch_docs if self.negative_cache is None else batch_docs[:n_live]
            d_emb = (torch.from_numpy(self.document_vectors[live]).to(encoder.device) if self.frozen
                     else encoder.embed([data.doc_texts[j] for j in live], doc_max_length, role="document"))
        if self.negative_cache is not None and len(batch_docs) > n_live:
            d_emb = torch.cat([d_emb.float(), self.negative_cache[batch_docs[n_live:]]])
        return q_emb, d_emb

    def _log_progress(self, epoch: int) -> None:
        now = time.monotonic()
        if now - self.last_log > self.config.log_every_s or self.step == self.total_steps:
            self.report.loss_curve.append(float(np.mean(self.window)))
            self.window = []
            self.last_log = now
            self.say(f"dual encoder: epoch {epoch + 1}/{self.config.epochs} step {self.step}/{self.total_steps} "
                     f"loss {self.report.loss_curve[-1]:.4f} "
                     f"({self.step * self.config.batch_size / (now - self.started):.1f} pairs/s)")

    def _save_checkpoint(self, epoch: int, next_batch: int, epoch_rng: dict, epoch_loss: float) -> None:
        self.checkpoint.save({
            "step": self.step, "epoch": epoch, "next_batch": next_batch, "epoch_rng": epoch_rng,
            "rng_loop": self.rng.bit_generator.state, "epoch_loss": epoch_loss, "window": self.window,
            "loss_curve": self.report.loss_curve, "epoch_losses": self.report.epoch_losses,
            "seconds": time.monotonic() - self.started,
            "weights": {k: v.detach().cpu() for k, v in self.encoder.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "negatives": ragged_to_tensors(self.negatives),
            "negative_cache": self.negative_cache.cpu() if self.negative_cache is not None else None,
        })


def rank_documents(
    encoder: TextEncoder,
    queries: pl.DataFrame,
    documents: pl.DataFrame,
    k: int = 100,
    use_hnsw: bool = False,
    query_max_length: int = 32,
    doc_max_length: int = 32,
) -> pl.DataFrame:
    """Top-k documents (by title embedding) for each query: query_id, doc_id, score, rank."""
    q = encoder.encode(queries["text"].to_list(), max_length=query_max_length, role="query")
    d = encoder.encode(documents["title"].to_list(), max_length=doc_max_length, role="document")
    search = hnsw_topk if use_hnsw else exact_topk
    indices, scores = search(q, d, k)
    return topk_frame(queries["query_id"], documents["doc_id"], indices, scores)
