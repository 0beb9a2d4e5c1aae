"""LoRA SFT on a tiny causal LM, and sharded generation that resumes to the same output."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from skim_assets.lib.distillation import LoraSftConfig, train_lora_adapter
from skim_assets.lib.generation import SamplingSettings, TransformersBackend, generate_sharded, make_backend

PROMPTS = [f"Document: Item {i}\nText: a herbal tea for migraine number {i}.\nQueries:\n" for i in range(20)]
TARGETS = ["herbal tea\nmigraine relief\n<end>"] * 20
# a random tiny model needs every linear layer adapted and a big learning rate to learn in seconds
FAST = LoraSftConfig(epochs=12, min_steps=0, patience=0, learning_rate=5e-2, r=16, effective_batch_size=8,
                     micro_batch_size=8, warmup_fraction=0.0, holdout_fraction=0.2, log_every_s=0.0, eval_every_steps=4,
                     precision="fp32",
                     target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))


@pytest.fixture(scope="module")
def adapter(tiny_causal_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    report = train_lora_adapter(tiny_causal_lm, PROMPTS, TARGETS, out, FAST, keys=[f"d{i:02d}" for i in range(20)])
    return out, report


def test_lora_sft_lowers_held_out_loss_and_saves_a_peft_adapter(adapter):
    path, report = adapter
    assert report.train_examples == 16 and report.holdout_examples == 4
    assert report.holdout_loss_after < report.holdout_loss_before / 2
    assert (path / "adapter_config.json").exists() and (path / "adapter_model.safetensors").exists()
    assert report.loss_curve and report.precision == "fp32"


def test_target_loss_is_the_models_loss_on_target_tokens(tiny_causal_lm):
    from skim_assets.lib.distillation import _collate, target_loss, tokenize_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    rows = tokenize_examples(tokenizer, PROMPTS[:3] + ["Document: x\nQueries:\n"], TARGETS[:4], FAST)
    batch = _collate(rows, tokenizer.eos_token_id, torch.device("cpu"))  # right-padded, prompts of two lengths
    with torch.no_grad():
        assert target_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
        assert target_loss(model, batch, bf16=True).item() == pytest.approx(model(**batch).loss.item(), rel=0.05)


def test_lora_sft_learns_under_bf16_autocast(tiny_causal_lm, tmp_path):
    report = train_lora_adapter(tiny_causal_lm, PROMPTS, TARGETS, tmp_path / "a",
                                LoraSftConfig(**{**FAST.__dict__, "precision": "bf16"}))
    assert report.precision == "bf16" and report.holdout_loss_after < report.holdout_loss_before / 2


def test_lora_sft_reports_its_held_out_documents_and_curve(adapter):
    _, report = adapter
    assert len(report.holdout_keys) == 4 and set(report.holdout_keys) <= {f"d{i:02d}" for i in range(20)}
    assert [step for step, _ in report.holdout_curve] == [4, 8, 12, 16, 20, 24]
    best = min(loss for _, loss in report.holdout_curve)
    assert report.holdout_loss_after == pytest.approx(best, rel=1e-4)  # the best adapter is the one saved
    assert report.steps == 24 and not report.stopped_early


def test_lora_sft_stops_early_and_keeps_the_best_adapter(tiny_causal_lm, tmp_path):
    # a learning rate far too large: the held-out loss gets worse, training stops, and what is saved is never
    # worse than the untrained adapter
    wild = LoraSftConfig(**{**FAST.__dict__, "learning_rate": 50.0, "eval_every_steps": 1, "patience": 2, "epochs": 20})
    report = train_lora_adapter(tiny_causal_lm, PROMPTS, TARGETS, tmp_path / "a", wild)
    assert report.stopped_early and report.steps < 40
    assert report.holdout_loss_after <= report.holdout_loss_before + 1e-6
    assert report.holdout_loss_after == pytest.approx(min([report.holdout_loss_before,
                                                           *(v for _, v in report.holdout_curve)]), rel=1e-4)


def test_small_demonstration_sets_get_min_steps(tiny_causal_lm, tmp_path):
    config = LoraSftConfig(**{**FAST.__dict__, "epochs": 1, "min_steps": 9, "eval_every_steps": 100})
    report = train_lora_adapter(tiny_causal_lm, PROMPTS, TARGETS, tmp_path / "a", config)
    assert report.steps == 9  # 2 steps per epoch: a fifth pass stops half way, at 9


def test_output_ngram_guard_leaves_the_prompt_free():
    from skim_assets.lib.generation import output_ngram_guard

    prompt = [5, 6, 7, 5, 6]  # the prompt repeats (5, 6): copying from it stays allowed
    generated = [1, 2, 3, 1, 2]  # the output already has (1, 2, 3): a 3 after (1, 2) is banned
    ids = torch.tensor([prompt + generated])
    scores = torch.zeros(1, 10)
    out = output_ngram_guard(len(prompt), 3)(ids, scores.clone())
    assert out[0, 3] == -float("inf") and torch.isfinite(out[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]]).all()
    ids = torch.tensor([prompt + [5, 6]])  # (5, 6) only occurs in the prompt: nothing banned
    assert torch.isfinite(output_ngram_guard(len(prompt), 3)(ids, scores.clone())).all()


def test_adapter_changes_the_models_outputs(tiny_causal_lm, adapter):
    path, _ = adapter
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    ids = tokenizer(PROMPTS[0], return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    greedy = dict(do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.eos_token_id)
    with torch.inference_mode():
        before = base.generate(**ids, **greedy)[0, ids["input_ids"].shape[1]:]
    tuned = TransformersBackend(tiny_causal_lm, path, device="cpu")
    with torch.inference_mode():
        after = tuned.model.generate(**ids, **greedy)[0, ids["input_ids"].shape[1]:]
    assert before.tolist() != after.tolist()
    assert "migraine relief" in tokenizer.decode(after)  # it learned to write the demonstrations


def test_bad_examples_are_rejected(tiny_causal_lm, tmp_path):
    with pytest.raises(ValueError, match="equally many"):
        train_lora_adapter(tiny_causal_lm, PROMPTS, TARGETS[:3], tmp_path / "a", FAST)


class CountingFactory:
    def __init__(self, base, adapter):
        self.base, self.adapter, self.calls, self.prompts = base, adapter, 0, 0

    def __call__(self):
        self.calls += 1
        backend = TransformersBackend(self.base, self.adapter, device="cpu", batch_size=4)
        original = backend.generate

        def counted(prompts, sampling):
            self.prompts += len(prompts)
            return original(prompts, sampling)

        backend.generate = counted
        return backend


def test_killed_generation_resumes_without_redoing_shards_and_matches_a_clean_run(tiny_causal_lm, adapter, tmp_path):
    path, _ = adapter
    doc_ids = [f"d{i:02d}" for i in range(10)]
    prompts = PROMPTS[:10]
    sampling = SamplingSettings(max_new_tokens=6, seed=7)

    clean, clean_report = generate_sharded(doc_ids, prompts, CountingFactory(tiny_causal_lm, path), sampling,
                                           tmp_path / "clean", shard_size=4)
    assert clean_report.shards == 3 and clean_report.shards_generated == 3

    def crash_after_first_shard(shard):
        if shard == 0:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        generate_sharded(doc_ids, prompts, CountingFactory(tiny_causal_lm, path), sampling, tmp_path / "resumed",
                         shard_size=4, on_shard_done=crash_after_first_shard)
    factory = CountingFactory(tiny_causal_lm, path)
    resumed, report = generate_sharded(doc_ids, prompts, factory, sampling, tmp_path / "resumed", shard_size=4)
    assert report.shards_reused == 1 and report.shards_generated == 2
    assert factory.prompts == 6  # only the 6 documents of the unfinished shards were generated again
    assert resumed.equals(clean)
    assert clean["text"].str.len_chars().sum() > 0

    # fully checkpointed: no model is even loaded; changed settings regenerate
    idle = CountingFactory(tiny_causal_lm, path)
    again, _ = generate_sharded(doc_ids, prompts, idle, sampling, tmp_path / "resumed", shard_size=4)
    assert idle.calls == 0 and again.equals(clean)
    changed = CountingFactory(tiny_causal_lm, path)
    generate_sharded(doc_ids, prompts, changed, SamplingSettings(max_new_tokens=6, seed=8), tmp_path / "resumed",
                     shard_size=4)
    assert changed.prompts == 10


def test_unknown_backend_is_refused(tiny_causal_lm):
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_backend("llama.cpp", tiny_causal_lm)


def test_auto_backend_is_transformers_without_vllm(tiny_causal_lm, adapter):
    pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    backend = make_backend("auto", tiny_causal_lm, adapter[0], device="cpu")
    assert backend.name == "transformers"
    out = backend.generate(PROMPTS[:2], SamplingSettings(max_new_tokens=4))
    assert len(out) == 2 and all(o.generated_tokens <= 4 for o in out)
