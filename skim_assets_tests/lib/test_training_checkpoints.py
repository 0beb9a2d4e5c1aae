"""Mid-training checkpoints: a LoRA SFT run or a dual encoder killed part way resumes from its last checkpoint and
ends with the weights and loss curve of an uninterrupted run; a checkpoint of other settings or data is discarded;
a checkpoint is never seen half written.

Like the generation step's SIGKILL test (test_operations.py): a process of its own trains a tiny model, is killed
with SIGKILL once its first checkpoint is on disk, and a rerun picks up from there.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from skim_assets.lib.checkpoints import CHECKPOINT_FILE, TrainingCheckpoint
from skim_assets.lib.distillation import LoraSftConfig, train_lora_adapter
from skim_assets.lib.dual_encoder import DualEncoderConfig, train_dual_encoder
from skim_assets.lib.encoders import TextEncoder, default_encoder_path
from skim_assets_tests.lib.test_dual_encoder import DOCUMENTS, PAIRS, QUERIES  # the opaque-title world

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [f"Document: Item {i}\nText: a herbal tea for migraine number {i}.\nQueries:\n" for i in range(20)]
TARGETS = ["herbal tea\nmigraine relief\n<end>"] * 20
# 16 train examples in micro-batches of 4, two per step: 2 steps an epoch, 24 steps; dropout on (torch's generator)
LORA = LoraSftConfig(epochs=12, min_steps=0, patience=0, learning_rate=5e-2, r=8, effective_batch_size=8,
                     micro_batch_size=4, warmup_fraction=0.1, holdout_fraction=0.2, log_every_s=0.0,
                     eval_every_steps=4, precision="fp32", checkpoint_every_steps=3,
                     target_modules=("q_proj", "v_proj", "down_proj"))

SHOWN = pl.DataFrame({"query_id": ["q1", "q1", "q2"], "doc_id": ["b", "c", "d"]})
# 3 steps an epoch, 12 steps; hard negatives mined at epochs 0 and 2, so a resume crosses a re-mining
DUAL = DualEncoderConfig(epochs=4, batch_size=2, learning_rate=1e-3, warmup_fraction=0.2, hard_negatives=2,
                         hard_negative_depth=3, remine_every=2, log_every_s=0.0, precision="float32",
                         checkpoint_every_steps=2)


class Crash(Exception):
    """Raised from the progress callback: the run stops right after a checkpoint, as if killed there."""


def crash_after_checkpoint(step: int):
    def progress(message: str) -> None:
        if f"checkpoint at step {step} " in message:
            raise Crash(message)
    return progress


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT of width 32 (the bundled MiniLM's tokenizer, random weights, dropout 0.1): a step takes
    milliseconds and a checkpoint 12 MB."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_lora(base, out, config=LORA, checkpoint_dir=None, progress=None):
    return train_lora_adapter(str(base), PROMPTS, TARGETS, out, config, progress=progress or (lambda _: None),
                              device="cpu", checkpoint_dir=checkpoint_dir)


def train_dual(bert, config=DUAL, checkpoint_dir=None, progress=None, pairs=PAIRS):
    encoder = TextEncoder(bert, device="cpu")
    # query-side fine-tuning ranks against the documents' pretrained vectors
    vectors = None if config.train_document_tower else encoder.encode(DOCUMENTS["title"].to_list())
    report = train_dual_encoder(encoder, pairs, QUERIES, DOCUMENTS, config, progress=progress or (lambda _: None),
                                shown_not_clicked=SHOWN, checkpoint_dir=checkpoint_dir, document_vectors=vectors)
    return encoder, report


def assert_same_adapter(folder, reference):
    ours, theirs = (load_file(Path(f) / "adapter_model.safetensors") for f in (folder, reference))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], msg=name)


def assert_same_encoder(encoder, reference):
    ours, theirs = encoder.model.state_dict(), reference.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], msg=name)


def assert_same_lora_report(report, reference):
    assert report.steps == reference.steps and report.best_step == reference.best_step
    assert report.loss_steps == reference.loss_steps
    assert report.loss_curve == pytest.approx(reference.loss_curve, rel=1e-5)
    assert [s for s, _ in report.holdout_curve] == [s for s, _ in reference.holdout_curve]
    assert [v for _, v in report.holdout_curve] == pytest.approx([v for _, v in reference.holdout_curve], rel=1e-5)
    assert report.holdout_loss_after == pytest.approx(reference.holdout_loss_after, rel=1e-5)


@pytest.fixture(scope="module")
def lora_reference(tiny_causal_lm, tmp_path_factory):
    """An uninterrupted run (no checkpoints)."""
    out = tmp_path_factory.mktemp("lora-reference") / "adapter"
    return out, train_lora(tiny_causal_lm, out)


@pytest.fixture(scope="module")
def dual_reference(tiny_bert):
    return train_dual(tiny_bert)


# ------------------------------------------------------------------------------------------ killed with SIGKILL

KILLABLE = """
import sys, time
from skim_assets_tests.lib.test_training_checkpoints import train_dual, train_lora
kind, model, checkpoint_dir, out = sys.argv[1:5]

def progress(message):  # slowed down: the test must find a checkpoint on disk before training ends
    print(message, file=sys.stderr, flush=True)
    time.sleep(0.25)

if kind == "lora":
    train_lora(model, out, checkpoint_dir=checkpoint_dir, progress=progress)
else:
    train_dual(model, checkpoint_dir=checkpoint_dir, progress=progress)
print("finished", file=sys.stderr, flush=True)
"""


def kill_after_first_checkpoint(kind: str, model: Path, checkpoint_dir: Path, tmp_path: Path) -> dict:
    """Train in a process of its own, SIGKILL it as soon as a checkpoint is on disk; the checkpoint's state."""
    log = tmp_path / f"{kind}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-c", KILLABLE, kind, str(model), str(checkpoint_dir),
                                    str(tmp_path / "killed")], stdout=handle, stderr=handle, cwd=REPO)
    checkpoint, started = checkpoint_dir / CHECKPOINT_FILE, time.monotonic()
    try:
        while time.monotonic() - started < 120 and process.poll() is None and not checkpoint.exists():
            time.sleep(0.01)
        if checkpoint.exists():
            os.kill(process.pid, signal.SIGKILL)  # no cleanup code runs
    finally:
        if process.poll() is None and not checkpoint.exists():
            process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL, f"not killed at a checkpoint: {log.read_text()[-2000:]}"
    # the file on disk is whole: it loads, and its step is past the start
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["step"] > 0
    return state


@pytest.mark.slow
def test_a_lora_sft_killed_with_sigkill_resumes_from_its_checkpoint_to_the_same_adapter(
        tiny_causal_lm, lora_reference, tmp_path):
    checkpoint_dir = tmp_path / "lora_checkpoints" / "tiny" / "lora_adapter"
    state = kill_after_first_checkpoint("lora", tiny_causal_lm, checkpoint_dir, tmp_path)
    assert state["step"] % LORA.checkpoint_every_steps == 0 and state["step"] < lora_reference[1].steps

    messages = []
    report = train_lora(tiny_causal_lm, tmp_path / "resumed", checkpoint_dir=checkpoint_dir,
                        progress=messages.append)
    assert report.resumed_from_step == state["step"] > 0
    assert any(f"resumed from step {state['step']}/" in m for m in messages)
    assert_same_adapter(tmp_path / "resumed", lora_reference[0])
    assert_same_lora_report(report, lora_reference[1])
    assert not checkpoint_dir.exists()  # finished: the adapter is the artifact, the checkpoint is gone


@pytest.mark.slow
def test_a_dual_encoder_killed_with_sigkill_resumes_from_its_checkpoint_to_the_same_weights(
        tiny_bert, dual_reference, tmp_path):
    checkpoint_dir = tmp_path / "retriever_checkpoints" / "tiny" / "skim_retriever"
    state = kill_after_first_checkpoint("dual", tiny_bert, checkpoint_dir, tmp_path)

    messages = []
    encoder, report = train_dual(tiny_bert, checkpoint_dir=checkpoint_dir, progress=messages.append)
    assert report.resumed_from_step == state["step"] > 0
    assert any(f"resumed from step {state['step']}/" in m for m in messages)
    reference_encoder, reference = dual_reference
    assert_same_encoder(encoder, reference_encoder)
    assert report.loss_curve == pytest.approx(reference.loss_curve, rel=1e-5)
    assert report.epoch_losses == pytest.approx(reference.epoch_losses, rel=1e-5)
    assert not checkpoint_dir.exists()


# --------------------------------------------------------------------------- resumed from any point, exactly

@pytest.mark.parametrize("crash_step", [6, 12])  # mid-epoch before an evaluation; at an evaluation, end of epoch
def test_lora_sft_resumed_at_a_checkpoint_ends_as_an_uninterrupted_run(tiny_causal_lm, lora_reference, tmp_path,
                                                                       crash_step):
    with pytest.raises(Crash):
        train_lora(tiny_causal_lm, tmp_path / "crashed", checkpoint_dir=tmp_path / "ck",
                   progress=crash_after_checkpoint(crash_step))
    report = train_lora(tiny_causal_lm, tmp_path / "resumed", checkpoint_dir=tmp_path / "ck")
    assert report.resumed_from_step == crash_step
    assert_same_adapter(tmp_path / "resumed", lora_reference[0])
    assert_same_lora_report(report, lora_reference[1])


def test_lora_sft_resumed_keeps_its_early_stopping_state(tiny_causal_lm, tmp_path):
    # a learning rate far too large: the held-out loss worsens and training stops early; the best adapter is kept
    wild = LORA.with_(learning_rate=20.0, eval_every_steps=1, patience=6, checkpoint_every_steps=2)
    reference = train_lora(tiny_causal_lm, tmp_path / "reference", wild)
    assert reference.stopped_early and reference.steps > 4
    with pytest.raises(Crash):
        train_lora(tiny_causal_lm, tmp_path / "crashed", wild, tmp_path / "ck", crash_after_checkpoint(4))
    report = train_lora(tiny_causal_lm, tmp_path / "resumed", wild, tmp_path / "ck")
    assert report.resumed_from_step == 4 and report.stopped_early
    assert_same_adapter(tmp_path / "resumed", tmp_path / "reference")
    assert_same_lora_report(report, reference)


@pytest.mark.parametrize(("variant", "crash_step"), [
    ({}, 6),  # the end of an epoch, before the re-mining epoch
    ({"cached_negatives": True}, 8),  # mid-epoch after a re-mining: the epoch's negatives come from the checkpoint
    ({"shown_negatives": 1, "length_buckets": False}, 4),
    ({"train_document_tower": False, "hard_negatives": 0}, 10),
], ids=["epoch-end", "cached-negatives", "shown-negatives", "query-side"])
def test_a_dual_encoder_resumed_at_a_checkpoint_ends_as_an_uninterrupted_run(tiny_bert, tmp_path, variant,
                                                                             crash_step):
    config = DUAL.with_(**variant)
    reference_encoder, reference = train_dual(tiny_bert, config)
    with pytest.raises(Crash):
        train_dual(tiny_bert, config, tmp_path / "ck", crash_after_checkpoint(crash_step))
    encoder, report = train_dual(tiny_bert, config, tmp_path / "ck")
    assert report.resumed_from_step == crash_step
    assert_same_encoder(encoder, reference_encoder)
    assert report.loss_curve == pytest.approx(reference.loss_curve, rel=1e-5)
    assert report.epoch_losses == pytest.approx(reference.epoch_losses, rel=1e-5)


# ----------------------------------------------------------------------------------------- stale checkpoints

def test_a_lora_checkpoint_of_other_settings_is_discarded(tiny_causal_lm, tmp_path):
    with pytest.raises(Crash):
        train_lora(tiny_causal_lm, tmp_path / "crashed", checkpoint_dir=tmp_path / "ck",
                   progress=crash_after_checkpoint(3))
    messages = []
    report = train_lora(tiny_causal_lm, tmp_path / "other", LORA.with_(learning_rate=1e-2, epochs=2),
                        tmp_path / "ck", messages.append)
    assert report.resumed_from_step == 0 and any("discarded a stale checkpoint" in m for m in messages)
    assert not any("resumed" in m for m in messages)
    assert not (tmp_path / "ck").exists()


def test_a_dual_encoder_checkpoint_of_other_pairs_is_discarded_and_neutral_settings_keep_it(tiny_bert, tmp_path):
    with pytest.raises(Crash):
        train_dual(tiny_bert, checkpoint_dir=tmp_path / "ck", progress=crash_after_checkpoint(4))
    # how often to checkpoint or log changes nothing the run computes: the checkpoint is still this run's
    messages = []
    with pytest.raises(Crash):
        train_dual(tiny_bert, DUAL.with_(checkpoint_every_steps=3, log_every_s=5.0), tmp_path / "ck",
                   lambda m: (messages.append(m), crash_after_checkpoint(6)(m)))
    assert any("resumed from step 4/" in m for m in messages)
    # other training data (one weight changed) is another run: its checkpoint is discarded
    messages = []
    other = PAIRS.with_columns(weight=pl.when(pl.col("query_id") == "q3").then(2.0).otherwise(pl.col("weight")))
    _, report = train_dual(tiny_bert, checkpoint_dir=tmp_path / "ck", progress=messages.append, pairs=other)
    assert report.resumed_from_step == 0 and any("discarded a stale checkpoint" in m for m in messages)
    assert not (tmp_path / "ck").exists()


def test_checkpoints_off_write_nothing(tiny_bert, tmp_path):
    train_dual(tiny_bert, DUAL.with_(epochs=1, checkpoint_every_steps=0), tmp_path / "ck",
               crash_after_checkpoint(2))  # would raise had it checkpointed
    assert not (tmp_path / "ck").exists()


# ------------------------------------------------------------------------------------------- atomic writes

def test_a_checkpoint_write_goes_through_a_temporary_name_and_a_failed_write_keeps_the_previous_one(
        tmp_path, monkeypatch):
    checkpoint = TrainingCheckpoint(tmp_path / "ck", "run-1", 1, lambda _: None, "test")
    checkpoint.save({"step": 1, "weights": {"w": torch.ones(3)}})
    written = []
    real_save = torch.save

    def torn_save(obj, path):  # writes part of the file, then the process "dies"
        written.append(Path(path))
        real_save(obj, path)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"step": 2, "weights": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    # torch.save wrote a hidden sibling, never the checkpoint's own name; the torn file is gone
    assert written[0].parent == checkpoint.path.parent and written[0].name.startswith(f".{CHECKPOINT_FILE}.")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CHECKPOINT_FILE]
    state = checkpoint.load()
    assert state["step"] == 1 and torch.equal(state["weights"]["w"], torch.ones(3))
    # another run's fingerprint: the file is stale, discarded
    messages = []
    assert TrainingCheckpoint(tmp_path / "ck", "run-2", 1, messages.append, "test").load() is None
    assert "discarded a stale checkpoint" in messages[0] and not checkpoint.path.exists()


def test_checkpoint_folders_are_not_artifacts():
    from skim_assets.lib.layout import DUAL_ENCODER_CHECKPOINTS, LORA_CHECKPOINTS, is_artifact_folder

    assert not is_artifact_folder(LORA_CHECKPOINTS) and not is_artifact_folder(DUAL_ENCODER_CHECKPOINTS)
    assert is_artifact_folder("lora_adapter")


def test_the_weights_digest_reads_tensors_larger_than_float32_can_index():
    """SmolLM2's embedding has 28,311,552 values: positions computed in float32 overshot its last index."""
    import torch

    from skim_assets.lib.checkpoints import module_digest

    module = torch.nn.Module()
    module.register_buffer("embedding", torch.zeros(2**24 + 5))
    first = module_digest(module)
    module.embedding[-1] = 1.0  # the last value is one of those read
    assert module_digest(module) != first
