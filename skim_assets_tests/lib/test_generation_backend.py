"""The transformers backend's own decoding loop: the same tokens as `model.generate`, batch-invariant, seeded."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from skim_assets.lib.devices import native_bf16, resolve_dtype
from skim_assets.lib.distillation import train_lora_adapter
from skim_assets.lib.generation import (
    GROUPED_ATTENTION,
    SamplingSettings,
    TransformersBackend,
    _register_grouped_attention,
)
from skim_assets.lib.prompts import END_MARKER
from skim_assets_tests.lib.test_distillation_generation import FAST, TARGETS  # noqa: E402
from skim_assets_tests.lib.test_distillation_generation import PROMPTS as TRAINED

# prompts the adapter never saw, of varied lengths: some rows stop at the marker, others run to the cap
OTHERS = ["Document: x\nQueries:\n", "Text: zinc face cream by Nordwind Labs, Oslo, against insomnia.\nQueries:\n",
          "Queries:\n", "Document: Lavender 12 from Lyon for sleep and stress and migraine\nText: tea\nQueries:\n"]
PROMPTS = TRAINED[:6] + OTHERS


@pytest.fixture(scope="module")
def student(tiny_causal_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "adapter"
    train_lora_adapter(tiny_causal_lm, TRAINED, TARGETS, out, FAST)
    return out


def test_grouped_attention_equals_eager_attention(tiny_causal_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    tokenizer.padding_side = "left"
    batch = tokenizer(OTHERS, return_tensors="pt", padding=True, add_special_tokens=False)
    _register_grouped_attention()
    eager = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, attn_implementation="eager").eval()
    grouped = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, attn_implementation=GROUPED_ATTENTION).eval()
    assert grouped.config.num_key_value_heads < grouped.config.num_attention_heads  # the case it exists for
    with torch.inference_mode():
        expected, got = eager(**batch).logits, grouped(**batch).logits
    real = batch["attention_mask"].bool()
    assert torch.allclose(expected[real], got[real], atol=1e-5)


def test_greedy_decoding_matches_generate_and_stops_at_the_marker(tiny_causal_lm, student):
    backend = TransformersBackend(tiny_causal_lm, student, device="cpu", dtype="float32", batch_size=4)
    outputs = backend.generate(PROMPTS, SamplingSettings(max_new_tokens=20))
    tokenizer = backend.tokenizer
    for prompt, output in zip(PROMPTS, outputs):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            reference = backend.model.generate(**ids, do_sample=False, max_new_tokens=20, stop_strings=[END_MARKER],
                                               tokenizer=tokenizer, pad_token_id=tokenizer.eos_token_id)
        new = [t for t in reference[0, ids["input_ids"].shape[1]:].tolist() if t != tokenizer.eos_token_id]
        assert output.text == tokenizer.decode(new, skip_special_tokens=True)
        assert output.generated_tokens == len(new)
    stopped = [o.text.endswith(END_MARKER) for o in outputs]
    assert sum(stopped[:6]) >= 3 and all("migraine relief" in o.text for o, s in zip(outputs[:6], stopped) if s)
    assert not all(stopped) and len({o.generated_tokens for o in outputs}) > 2  # rows left the batch at different steps


def test_outputs_do_not_depend_on_the_batch(tiny_causal_lm, student):
    one = TransformersBackend(tiny_causal_lm, student, device="cpu", dtype="float32", batch_size=1)
    many = TransformersBackend(tiny_causal_lm, student, device="cpu", dtype="float32", batch_size=len(PROMPTS))
    greedy = SamplingSettings(max_new_tokens=16)
    assert [o.text for o in one.generate(PROMPTS, greedy)] == [o.text for o in many.generate(PROMPTS, greedy)]


def test_sampling_is_seeded_and_min_new_tokens_forces_the_length(tiny_causal_lm):
    backend = TransformersBackend(tiny_causal_lm, None, device="cpu", dtype="float32", batch_size=4)
    sampled = SamplingSettings(temperature=1.0, top_k=50, max_new_tokens=10, min_new_tokens=10, seed=3)
    first, again = backend.generate(OTHERS, sampled), backend.generate(OTHERS, sampled)
    other = backend.generate(OTHERS, SamplingSettings(**{**sampled.__dict__, "seed": 4}))
    assert [o.text for o in first] == [o.text for o in again]
    assert [o.text for o in first] != [o.text for o in other]
    assert all(o.generated_tokens == 10 for o in first)


def test_bf16_backend_writes_what_fp32_writes(tiny_causal_lm, student):
    greedy = SamplingSettings(max_new_tokens=20)
    bf16 = TransformersBackend(tiny_causal_lm, student, device="cpu", dtype="bfloat16", batch_size=8)
    fp32 = TransformersBackend(tiny_causal_lm, student, device="cpu", dtype="float32", batch_size=8)
    assert bf16.model.dtype == torch.bfloat16
    written = [o.text for o in bf16.generate(TRAINED[:6], greedy)]
    assert written == [o.text for o in fp32.generate(TRAINED[:6], greedy)]
    assert sum(END_MARKER in text for text in written) >= 3


def test_dtype_choice():
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32 and resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int4", cpu)


def test_extra_samples_are_checkpointed_apart_and_merged_into_one_list(tiny_causal_lm, student, tmp_path):
    import polars as pl

    from skim_assets.lib.demonstrations import merge_samples
    from skim_assets.lib.generation import generate_samples

    calls = []

    def factory():
        calls.append(1)
        return TransformersBackend(tiny_causal_lm, student, device="cpu", dtype="float32", batch_size=8)

    doc_ids = [f"d{i}" for i in range(len(PROMPTS))]
    sampling = SamplingSettings(max_new_tokens=12, samples=3, diversity_temperature=1.5, seed=1)
    raw, report = generate_samples(doc_ids, PROMPTS, factory, sampling, tmp_path / "ck", shard_size=4)
    assert len(calls) == 1  # one backend for every sample
    assert raw.height == 3 * len(PROMPTS) and raw["sample"].unique().sort().to_list() == [0, 1, 2]
    assert report.documents_generated == 3 * len(PROMPTS) and report.shards == 9
    assert ((tmp_path / "ck" / "shard-00000.parquet").exists()
            and (tmp_path / "ck" / "sample-2" / "shard-00000.parquet").exists())
    greedy = raw.filter(pl.col("sample") == 0)["text"].to_list()
    one, _ = generate_samples(doc_ids, PROMPTS, factory, SamplingSettings(max_new_tokens=12, seed=1, samples=1),
                              tmp_path / "one", shard_size=4)
    assert one["text"].to_list() == greedy  # sample 0 is the one-sample run
    assert raw.filter(pl.col("sample") == 1)["text"].to_list() != greedy  # the others are sampled
    again, reused = generate_samples(doc_ids, PROMPTS, factory, sampling, tmp_path / "ck", shard_size=4)
    assert again.equals(raw) and reused.shards_reused == 9  # resumable and reproducible
    hotter = SamplingSettings(**{**sampling.__dict__, "diversity_temperature": 2.0})
    _, partly = generate_samples(doc_ids, PROMPTS, factory, hotter, tmp_path / "ck", shard_size=4)
    assert partly.shards_reused == 3  # the greedy output does not depend on the other samples' temperature

    rows = pl.DataFrame({"doc_id": ["a", "a", "b", "a", "a", "b"], "query": ["zinc cream", "Zinc  Cream!", "tea",
                                                                              "for sleep", "zinc cream", "tea bags"],
                         "rank": [1, 2, 1, 1, 2, 1]},
                        schema={"doc_id": pl.String, "query": pl.String, "rank": pl.Int32})
    merged = merge_samples(rows, max_queries=5)
    assert merged.rows() == [("a", "zinc cream", 1), ("a", "for sleep", 2), ("b", "tea", 1), ("b", "tea bags", 2)]
    assert merge_samples(rows, max_queries=1)["query"].to_list() == ["zinc cream", "tea"]


def test_prompt_words_only_writes_nothing_but_the_prompts_words(tiny_causal_lm, monkeypatch):
    """A random tiny LM, sampled hot, writes any token; constrained, only tokens that spell the prompt's words
    (as written, lowercased, after a space or not), line breaks and the end marker."""
    from skim_assets.lib.generation import prompt_token_ids

    backend = TransformersBackend(tiny_causal_lm, None, device="cpu", dtype="float32", batch_size=1)
    allowed = prompt_token_ids(backend.tokenizer, OTHERS)
    lavender = backend.tokenizer("lavender", add_special_tokens=False)["input_ids"]
    assert set(lavender) <= set(allowed[3]) and not set(lavender) <= set(allowed[0])
    picked: list[int] = []  # every token the decoder chose (one prompt per batch: one row)
    pick = TransformersBackend._pick
    monkeypatch.setattr(TransformersBackend, "_pick",
                        staticmethod(lambda *args: picked.extend(pick(*args).tolist()) or torch.tensor(picked[-1:])))
    hot = SamplingSettings(temperature=1.5, top_k=0, max_new_tokens=24, seed=1)
    outside = []
    for prompt, ids in zip(OTHERS, allowed):
        picked.clear()
        backend.generate([prompt], hot)
        outside.append(set(picked) - set(ids))
        picked.clear()
        backend.generate([prompt], hot.with_(prompt_words_only=True))
        assert picked and set(picked) <= set(ids), prompt
    assert any(outside)  # unconstrained, the same decoding leaves the prompt's words
