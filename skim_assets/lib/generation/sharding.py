"""Generation at scale: the documents in fixed shards (by sorted doc_id), each written atomically when finished.

A run killed half way resumes without redoing finished shards, and because every shard is sampled from its own
seed (seed + shard index) in a fixed order, the final output equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from ..storage import read_json, write_json_atomic, write_parquet_atomic
from .backends import GenerationBackend
from .settings import SamplingSettings, sample_settings

log = logging.getLogger(__name__)


@dataclass
class ShardReport:
    shards: int
    shards_generated: int
    shards_reused: int
    documents: int
    documents_generated: int  # by this run (reused shards excluded)
    generated_tokens: int
    seconds: float  # generation time of the shards made by this run

    @property
    def docs_per_second(self) -> float:
        return self.documents_generated / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0

    @classmethod
    def total(cls, reports) -> "ShardReport":
        """The reports of several passes (samples, parallel shard groups) summed field by field."""
        return cls(**{f: sum(getattr(r, f) for r in reports) for f in cls.__dataclass_fields__})


# settings about the other outputs of a document (`generate_samples`): they never change this output's text
_ACROSS_OUTPUTS = {"samples", "diversity_temperature", "samples_prompt_words_only"}


def _fingerprint(doc_ids: list[str], prompts: list[str], settings: dict) -> str:
    payload = json.dumps({"doc_ids": doc_ids, "prompts": prompts, "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


SHARD_SCHEMA = {"doc_id": pl.String, "text": pl.String, "generated_tokens": pl.Int64, "shard": pl.Int32}


def shard_count(documents: int, shard_size: int) -> int:
    return max(1, -(-documents // shard_size))


class ShardOutput(NamedTuple):
    frame: pl.DataFrame  # SHARD_SCHEMA
    seconds: float  # generation time


@dataclass
class Shard:
    """One shard's documents, prompts and decoding, and where its output and manifest go."""

    index: int
    doc_ids: list[str]
    prompts: list[str]
    sampling: SamplingSettings  # seeded with seed + index
    fingerprint: str  # doc ids, prompts, decoding and the caller's settings (model and adapter identity)
    data_path: Path
    manifest_path: Path

    @classmethod
    def plan(cls, index: int, doc_ids: list[str], prompts: list[str], sampling: SamplingSettings,
             settings: dict | None, checkpoint_dir: Path, shard_size: int) -> Shard:
        """Shard `index` of the (doc_id-sorted) `doc_ids` and `prompts`."""
        ids = doc_ids[index * shard_size : (index + 1) * shard_size]
        shard_prompts = prompts[index * shard_size : (index + 1) * shard_size]
        shard_sampling = sampling.with_(seed=sampling.seed + index)
        decoding = {k: v for k, v in shard_sampling.as_dict().items() if k not in _ACROSS_OUTPUTS}
        fingerprint = _fingerprint(ids, shard_prompts, {**(settings or {}), **decoding})
        return cls(index, ids, shard_prompts, shard_sampling, fingerprint,
                   checkpoint_dir / f"shard-{index:05d}.parquet", checkpoint_dir / f"shard-{index:05d}.json")

    def finished(self) -> bool:
        """Whether a run wrote this shard, with these inputs, to the end (its manifest is written last)."""
        return (self.data_path.exists() and self.manifest_path.exists()
                and read_json(self.manifest_path).get("fingerprint") == self.fingerprint)

    def generate(self, backend: GenerationBackend) -> ShardOutput:
        """Generate the shard's texts and write them (data first, manifest last: a shard counts only when both
        exist)."""
        started = time.monotonic()
        outputs = backend.generate(self.prompts, self.sampling)
        elapsed = time.monotonic() - started
        frame = pl.DataFrame(
            {"doc_id": self.doc_ids, "text": [o.text for o in outputs],
             "generated_tokens": [o.generated_tokens for o in outputs], "shard": [self.index] * len(self.doc_ids)},
            schema=SHARD_SCHEMA,
        )
        write_parquet_atomic(frame, self.data_path)
        write_json_atomic({"fingerprint": self.fingerprint, "documents": len(self.doc_ids), "seconds": elapsed},
                          self.manifest_path)
        return ShardOutput(frame, elapsed)


class _LazyBackend:
    """The backend, created on first use: a fully checkpointed run loads no model."""

    def __init__(self, factory: Callable[[], GenerationBackend], say: Callable[[str], None]):
        self.factory, self.say, self.backend = factory, say, None

    def get(self) -> GenerationBackend:
        if self.backend is None:
            started = time.monotonic()
            self.backend = self.factory()
            self.say(f"generation backend {self.backend.name} ready in {time.monotonic() - started:.1f}s")
        return self.backend


def generate_sharded(
    doc_ids: list[str],
    prompts: list[str],
    backend_factory: Callable[[], GenerationBackend],
    sampling: SamplingSettings,
    checkpoint_dir: str | Path,
    shard_size: int = 256,
    settings: dict | None = None,
    progress: Callable[[str], None] | None = None,
    on_shard_done: Callable[[int], None] | None = None,
    shards: Collection[int] | None = None,
) -> tuple[pl.DataFrame, ShardReport]:
    """Generate one text per document, shard by shard, reusing finished shards found in `checkpoint_dir`.

    Returns (doc_id, text, generated_tokens, shard) in doc_id order. A shard is reused only when its manifest
    fingerprint (doc ids, prompts, sampling and `settings` such as model and adapter identity) matches, so a
    change of inputs regenerates it. The backend is created lazily: a fully checkpointed run loads no model.
    `shards` (indices) restricts the work to those shards, e.g. one parallel worker's share: a shard's documents
    and seed depend only on its index, so workers that split the shards write what one run would.
    """
    say = progress or log.info
    order = np.argsort(doc_ids, kind="stable")
    doc_ids = [doc_ids[i] for i in order]
    prompts = [prompts[i] for i in order]
    n_shards = shard_count(len(doc_ids), shard_size)
    backend = _LazyBackend(backend_factory, say)
    selected = range(n_shards) if shards is None else sorted(set(shards) & set(range(n_shards)))
    report = ShardReport(shards=len(selected), shards_generated=0, shards_reused=0, documents=0,
                         documents_generated=0, generated_tokens=0, seconds=0.0)
    frames = []
    for index in selected:
        shard = Shard.plan(index, doc_ids, prompts, sampling, settings, Path(checkpoint_dir), shard_size)
        if shard.finished():
            frames.append(pl.read_parquet(shard.data_path))
            report.shards_reused += 1
            continue
        frame, elapsed = shard.generate(backend.get())
        frames.append(frame)
        report.shards_generated += 1
        report.documents_generated += len(shard.doc_ids)
        report.generated_tokens += int(frame["generated_tokens"].sum())
        report.seconds += elapsed
        say(f"shard {index + 1}/{n_shards}: {len(shard.doc_ids)} docs in {elapsed:.1f}s "
            f"({len(shard.doc_ids) / max(elapsed, 1e-9):.2f} docs/s, "
            f"{frame['generated_tokens'].sum() / max(elapsed, 1e-9):.1f} tokens/s)")
        if on_shard_done:
            on_shard_done(index)
    report.documents = sum(f.height for f in frames)
    return (pl.concat(frames) if frames else pl.DataFrame(schema=SHARD_SCHEMA)), report


def generate_samples(
    doc_ids: list[str],
    prompts: list[str],
    backend_factory: Callable[[], GenerationBackend],
    sampling: SamplingSettings,
    checkpoint_dir: str | Path,
    **shard_options,
) -> tuple[pl.DataFrame, ShardReport]:
    """`sampling.samples` outputs per document (`generate_sharded` once per sample, one backend for all): sample 0
    checkpoints in `checkpoint_dir` itself (as a one-sample run), sample s in `checkpoint_dir/sample-s`. Returns
    (doc_id, text, generated_tokens, shard, sample) rows, sample by sample, and the summed report."""
    backend: list[GenerationBackend] = []

    def shared_backend() -> GenerationBackend:
        if not backend:
            backend.append(backend_factory())
        return backend[0]

    frames, reports = [], []
    for sample in range(max(1, sampling.samples)):
        folder = Path(checkpoint_dir) / (f"sample-{sample}" if sample else "")
        frame, report = generate_sharded(doc_ids, prompts, shared_backend, sample_settings(sampling, sample), folder,
                                         **shard_options)
        frames.append(frame.with_columns(sample=pl.lit(sample, dtype=pl.Int32)))
        reports.append(report)
    total = ShardReport.total(reports)
    return pl.concat(frames), total
