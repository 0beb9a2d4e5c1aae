"""The pieces of the transformers backend's own decoding loop (`backends.TransformersBackend`): attention for
grouped-query models, the output n-gram guard, the prompt's-words constraint, and the rows of a batch being
decoded."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..prompts import END_MARKER
from .settings import SamplingSettings


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


def allowed_token_mask(tokenizer, prompts: list[str], vocab: int, device):
    """[prompts, vocab] bool: the tokens each prompt's output may use (`prompt_token_ids`)."""
    import torch

    allowed = torch.zeros(len(prompts), vocab, dtype=torch.bool, device=device)
    for row, ids_allowed in enumerate(prompt_token_ids(tokenizer, prompts)):
        allowed[row, [i for i in ids_allowed if i < vocab]] = True
    return allowed


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


@dataclass
class DecodingRows:
    """One batch being decoded (left-padded prompts, a preallocated KV cache): the rows still in it, what their next
    step needs, and what every row wrote. Rows that finished leave together (`drop_finished`)."""

    prompt_len: int
    alive: Any  # [rows] original row of each row still in the batch
    mask: Any  # [rows, prompt + new tokens] attention mask over the cache
    last_position: Any  # [rows] position of each row's last token (left padding: counted from its first)
    history: Any  # prompt + output of the rows still in the batch (for the n-gram guard)
    allowed: Any | None  # [rows, vocab] bool: the tokens each row may write (`prompt_words_only`)
    tokens: list[list[int]]  # per original row: the tokens it wrote
    finished: list[bool]  # per row still in the batch

    @classmethod
    def start(cls, ids, prompt_mask, max_new_tokens: int, allowed, device) -> tuple[DecodingRows, Any]:
        """The rows of prompts `ids` (with their `prompt_mask`), and the prompts' position ids."""
        import torch

        rows, prompt_len = ids.shape
        mask = torch.zeros(rows, prompt_len + max_new_tokens, dtype=prompt_mask.dtype, device=device)
        mask[:, :prompt_len] = prompt_mask
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from its first token
        alive = torch.arange(rows, device=device)
        return cls(prompt_len, alive, mask, positions[:, -1], ids, allowed, [[] for _ in range(rows)],
                   [False] * rows), positions

    def constrain(self, logits, guard, step: int, sampling: SamplingSettings, eos: int | None):
        """`logits` with what the rows may not write now ruled out."""
        if guard is not None:
            logits = guard(self.history, logits)
        if self.allowed is not None:
            logits = logits.masked_fill(~self.allowed, -float("inf"))
        if step < sampling.min_new_tokens and eos is not None:
            logits[:, eos] = -float("inf")
        return logits

    def record(self, chosen, step: int, sampling: SamplingSettings, eos: int | None,
               stopped: Callable[[list[int]], bool]) -> None:
        """Append each unfinished row's `chosen` token; a row finishes at end-of-sequence or once `stopped` (its
        tokens) holds, both only past `min_new_tokens`."""
        for position, (row, token) in enumerate(zip(self.alive.tolist(), chosen.tolist())):
            if self.finished[position]:
                continue
            if token == eos and step >= sampling.min_new_tokens:
                self.finished[position] = True
                continue
            self.tokens[row].append(token)
            self.finished[position] = step >= sampling.min_new_tokens and stopped(self.tokens[row])

    def drop_finished(self, chosen, cache, guarded: bool, device):
        """The finished rows leave the batch and its `cache`; the remaining rows' `chosen` tokens."""
        import torch

        keep = torch.tensor([not f for f in self.finished], device=device)
        self.alive, chosen, self.mask, self.last_position = (self.alive[keep], chosen[keep], self.mask[keep],
                                                             self.last_position[keep])
        self.history = self.history[keep] if guarded else self.history
        self.allowed = self.allowed[keep] if self.allowed is not None else None
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[keep], layer.values[keep]
        self.finished = [False] * len(self.alive)
        return chosen

    def advance(self, chosen, step: int, guarded: bool, device) -> dict:
        """Take in the `chosen` tokens of `step`: the model inputs that decode the next one (the cache aside)."""
        import torch

        if guarded:
            self.history = torch.cat([self.history, chosen[:, None]], dim=1)
        self.mask[:, self.prompt_len + step] = 1
        self.last_position = self.last_position + 1
        return dict(input_ids=chosen[:, None], attention_mask=self.mask, position_ids=self.last_position[:, None],
                    cache_position=torch.tensor([self.prompt_len + step], device=device))
