"""LoRA supervised fine-tuning of the small LM on teacher demonstrations (peft).

Each example is (prompt, target): the compact student prompt of a document and the teacher's parsed queries.
The loss covers the target tokens only. A held-out slice of the demonstrations gives the loss before and after
training, so a run shows whether the student learned the task. Defaults follow the paper's reference
for the adapter (r=8, alpha=16, dropout 0.05, cosine decay with warmup) and are sized for small demonstration
sets on CPU for the optimisation (lr 1e-3, effective batch 16, at least 80 steps, early stopping on the held-out
loss); for ~50K demonstrations on a GPU, the reference lr 3e-4 and effective batch 64 apply.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from pydantic import Field

from .settings import Settings
from .slm import prompt_prefix_ids

if TYPE_CHECKING:
    from .checkpoints import TrainingCheckpoint

log = logging.getLogger(__name__)
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoraSftConfig(Settings):
    """LoRA SFT settings: the paper's reference adapter; the optimisation sized for small demonstration sets."""

    r: int = Field(default=8, description="LoRA rank.")
    alpha: int = Field(default=16, description="LoRA alpha.")
    dropout: float = Field(default=0.05, description="LoRA dropout.")
    # 1e-3 rather than the reference 3e-4: a 135M student on a few hundred demonstrations needs larger steps to
    # learn the output format within minutes; early stopping on the held-out loss guards against overshooting.
    learning_rate: float = Field(default=1e-3, description="Peak learning rate (cosine decay after warmup).")
    warmup_fraction: float = Field(default=0.05, description="Share of the steps spent warming up.")
    epochs: int = Field(default=2, description="Passes over the demonstrations (more when needed to reach "
                        "min_steps).")
    min_steps: int = Field(default=80, description="Optimizer steps at least, however few the demonstrations: a "
                           "few dozen steps is not training.")
    effective_batch_size: int = Field(default=16, description="Examples per optimizer step.")
    micro_batch_size: int = Field(default=8, description="Examples per forward pass (gradient accumulation covers "
                                  "the rest of the effective batch).")
    max_prompt_tokens: int = Field(default=320, description="Prompt tokens kept (its end: the document).")
    max_target_tokens: int = Field(default=96, description="Target tokens kept.")
    holdout_fraction: float = Field(default=0.1, description="Share of the demonstrations held out for the loss "
                                    "that early stopping and the student-teacher agreement use.")
    eval_every_steps: int = Field(default=10, description="Held-out loss every this many steps; the best adapter "
                                  "is the one saved.")
    patience: int = Field(default=3, description="Evaluations without held-out gain before stopping early "
                          "(0 = never).")
    target_modules: list[str] = Field(default=list(LORA_TARGET_MODULES), description="Modules the adapter wraps.")
    precision: str = Field(default="auto", description="'auto' = bf16 autocast where the hardware has bf16 "
                           "(lib.devices.native_bf16), else fp32; or 'bfloat16' / 'float32'.")
    seed: int = Field(default=0, description="Seed of the hold-out split and shuffling.")
    log_every_s: float = Field(default=20.0, description="Seconds between progress lines.")
    # ~1-2 minutes of SFT on 2 CPU cores (a few seconds a step); an adapter's checkpoint is a few MB
    checkpoint_every_steps: int = Field(default=20, ge=0, description="With a checkpoint folder (the lora_adapter "
                                        "assets pass one), save the training state every this many optimizer steps "
                                        "(atomically): a killed, retried or re-run step resumes from the last "
                                        "one and ends as an uninterrupted run would (0 = off).")


@dataclass
class LoraSftReport:
    train_examples: int
    holdout_examples: int
    steps: int
    seconds: float
    examples_per_second: float
    holdout_loss_before: float
    holdout_loss_after: float
    loss_curve: list[float] = field(default_factory=list)  # mean training loss over ~1% of the steps at a time
    loss_steps: list[int] = field(default_factory=list)  # the step each of those windows ended at
    holdout_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    best_step: int = 0
    stopped_early: bool = False
    holdout_keys: list[str] = field(default_factory=list)  # which examples (e.g. doc ids) were held out
    precision: str = "fp32"
    device: str = "cpu"
    config: dict = field(default_factory=dict)
    resumed_from_step: int = 0  # the checkpoint's step a resumed run continued from (0: trained from the start)


def _resolve(config: LoraSftConfig, device: str) -> tuple[torch.device, bool, str]:
    """(device, whether to autocast to bf16, precision name). Weights stay fp32 (the master copy the optimizer
    updates); bf16 autocast runs the matrix products where the hardware has bf16 units."""
    from .devices import resolve_device, resolve_dtype

    device = resolve_device(device)
    bf16 = resolve_dtype(config.precision, device) == torch.bfloat16
    return device, bf16, ("bf16" if bf16 else "fp32")


def tokenize_examples(tokenizer, prompts: list[str], targets: list[str], config: LoraSftConfig) -> list[dict]:
    """Token ids with labels masked (-100) over the prompt; prompt (its end, after the tokenizer's prefix) and target
    capped separately."""
    eos = tokenizer.eos_token or ""
    prefix = prompt_prefix_ids(tokenizer)  # e.g. Gemma's BOS, which generation adds too
    rows = []
    for prompt, target in zip(prompts, targets):
        p = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"][len(prefix) - config.max_prompt_tokens :]
        t = tokenizer(target + eos, add_special_tokens=False)["input_ids"][: config.max_target_tokens]
        rows.append({"input_ids": p + t, "labels": [-100] * len(p) + t})
    return rows


def _collate(rows: list[dict], pad_id: int, device: torch.device) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # right padding for training
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def target_loss(model, batch: dict, bf16: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the target tokens of a collated batch (what `model(**batch).loss` computes). The
    LM head (a fifth of a 135M model's weights) runs on the target positions only: the prompt positions, most of
    each sequence, need no logits."""
    labels = batch["labels"][:, 1:]
    is_target = labels != -100
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, :-1][is_target])
    return torch.nn.functional.cross_entropy(logits.float(), labels[is_target])


@torch.no_grad()
def mean_target_loss(model, rows: list[dict], pad_id: int, device: torch.device, batch_size: int = 8,
                     bf16: bool = False) -> float:
    """Token-weighted mean cross-entropy over the target tokens of `rows`."""
    if not rows:
        return float("nan")
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = _collate(rows[start : start + batch_size], pad_id, device)
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += target_loss(model, batch, bf16).item() * n
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


class HoldoutSplit(NamedTuple):
    holdout: np.ndarray  # example indices held out (a seeded permutation's head)
    train: np.ndarray  # the rest, in that permutation's order


def holdout_split(examples: int, fraction: float, seed: int) -> HoldoutSplit:
    """A seeded `fraction` of `examples` held out: at least one, never all (none of a single example)."""
    order = np.random.default_rng(seed).permutation(examples)
    n_holdout = min(examples - 1, max(1, int(round(fraction * examples)))) if examples > 1 else 0
    return HoldoutSplit(order[:n_holdout], order[n_holdout:])


@dataclass
class EarlyStopping:
    """The best held-out loss so far, the adapter weights that reached it, and evaluations since it improved."""

    patience: int  # evaluations without gain before stopping (0 = never)
    best_loss: float
    best_state: dict[str, torch.Tensor]
    best_step: int = 0
    evals_without_gain: int = 0

    def record(self, step: int, loss: float, trainable: list[tuple[str, torch.Tensor]]) -> None:
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.evals_without_gain = loss, step, 0
            self.best_state = {name: p.detach().clone() for name, p in trainable}
        else:
            self.evals_without_gain += 1

    @property
    def exhausted(self) -> bool:
        return bool(self.patience) and self.evals_without_gain >= self.patience


def _checked_keys(prompts: list[str], targets: list[str], keys: list[str] | None) -> list[str]:
    if len(prompts) != len(targets) or not prompts:
        raise ValueError(f"need equally many prompts and targets, at least one (got {len(prompts)} and {len(targets)})")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(prompts))]
    if len(keys) != len(prompts):
        raise ValueError(f"need one key per example (got {len(keys)} keys for {len(prompts)} examples)")
    return keys


def train_lora_adapter(
    base_path: str | Path,
    prompts: list[str],
    targets: list[str],
    out_dir: str | Path,
    config: LoraSftConfig | None = None,
    progress: Callable[[str], None] | None = None,
    keys: list[str] | None = None,
    device: str = "auto",
    checkpoint_dir: str | Path | None = None,
) -> LoraSftReport:
    """Train a LoRA adapter for the causal LM at `base_path` and save it (peft format) to `out_dir`.

    A seeded `holdout_fraction` of the examples (named by `keys`, e.g. doc ids, in the report) is never trained
    on: its target-token loss is measured every `eval_every_steps` steps, the adapter with the lowest held-out
    loss is the one saved, and training stops after `patience` evaluations without improvement. Small
    demonstration sets are passed over more than `epochs` times so training takes at least `min_steps` steps.

    With `checkpoint_dir`, the training state is saved there every `checkpoint_every_steps` steps
    (`lib.checkpoints`); a later call with the same settings, examples and base model resumes from it and ends with
    the same adapter as an uninterrupted run. The checkpoint is removed once the adapter is saved.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .checkpoints import Digest, TrainingCheckpoint, fingerprint_settings, module_digest

    config = config or LoraSftConfig()
    say = progress or log.info
    keys = _checked_keys(prompts, targets, keys)
    device, bf16, precision = _resolve(config, device)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).to(device)
    rows = tokenize_examples(tokenizer, prompts, targets, config)
    checkpoint = TrainingCheckpoint(checkpoint_dir, "", config.checkpoint_every_steps, say, "LoRA SFT")
    if checkpoint.enabled:  # what this run computes: its settings, its token ids, its base model, its precision
        checkpoint.fingerprint = (Digest("lora_sft").json(fingerprint_settings(config)).json([precision, pad_id])
                                  .arrays(r["input_ids"] for r in rows).arrays(r["labels"] for r in rows)
                                  .texts(keys).json(module_digest(model)).hexdigest())
    model = get_peft_model(model, LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    ))
    split = holdout_split(len(rows), config.holdout_fraction, config.seed)
    run = _LoraRun(model, [rows[i] for i in split.train], [rows[i] for i in split.holdout], config, say, device,
                   bf16, pad_id, checkpoint)
    report = run.train(precision, sorted(keys[i] for i in split.holdout))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    (out_dir / "sft_report.json").write_text(json.dumps(asdict(report), indent=2))
    checkpoint.remove()  # the adapter is the artifact now
    return report


class _LoraRun:
    """One SFT run of a peft model: its optimizer, schedule, position, history and early stopping."""

    def __init__(self, model, train: list[dict], holdout: list[dict], config: LoraSftConfig, say: Callable[[str], None],
                 device: torch.device, bf16: bool, pad_id: int, checkpoint: TrainingCheckpoint):
        from transformers import get_cosine_schedule_with_warmup

        self.model, self.train_rows, self.holdout, self.config, self.say = model, train, holdout, config, say
        self.device, self.bf16, self.pad_id, self.checkpoint = device, bf16, pad_id, checkpoint
        self.trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.accumulation = max(1, config.effective_batch_size // config.micro_batch_size)
        steps_per_epoch = max(1, math.ceil(len(train) / (config.micro_batch_size * self.accumulation)))
        self.steps = max(steps_per_epoch * config.epochs, config.min_steps)
        self.epochs = math.ceil(self.steps / steps_per_epoch)  # the last pass may stop part way, at `steps`
        self.optimizer = torch.optim.AdamW([p for _, p in self.trainable], lr=config.learning_rate)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, int(config.warmup_fraction * self.steps),
                                                         self.steps)
        self.rng = np.random.default_rng(config.seed + 1)
        self.step, self.window, self.examples_seen = 0, [], 0
        self.started = self.last_log = 0.0
        self.report: LoraSftReport | None = None
        self.stopping: EarlyStopping | None = None

    def _held_out_loss(self) -> float:
        return mean_target_loss(self.model, self.holdout, self.pad_id, self.device, bf16=self.bf16)

    def train(self, precision: str, holdout_keys: list[str]) -> LoraSftReport:
        """Train to the end (or an early stop) and restore the best adapter; the report."""
        config, say = self.config, self.say
        saved = self.checkpoint.load() if self.checkpoint.enabled else None
        report = self.report = LoraSftReport(
            train_examples=len(self.train_rows), holdout_examples=len(self.holdout), steps=self.steps, seconds=0.0,
            examples_per_second=0.0,
            holdout_loss_before=saved["report"]["holdout_loss_before"] if saved else self._held_out_loss(),
            holdout_loss_after=float("nan"), precision=precision, device=str(self.device), config=config.as_dict(),
            holdout_keys=holdout_keys)
        say(f"LoRA SFT: {len(self.train_rows)} train / {len(self.holdout)} held-out examples, up to {self.steps} "
            f"optimizer steps ({self.epochs} epochs), {precision} on {self.device}; held-out loss before "
            f"{report.holdout_loss_before:.4f}")
        # the untrained adapter is the baseline to beat: training that never helps the held-out loss saves it
        self.stopping = EarlyStopping(config.patience, report.holdout_loss_before,
                                      {name: p.detach().clone() for name, p in self.trainable})
        start_epoch, first_start, seconds_before = self._resume(saved) if saved else (0, 0, 0.0)
        self.started = self.last_log = time.monotonic() - seconds_before  # seconds of training, across resumed runs
        self.model.train()
        for epoch in range(start_epoch, self.epochs):
            resuming = saved is not None and epoch == start_epoch
            self._train_epoch(epoch, saved if resuming else None, first_start if resuming else 0)
            if report.stopped_early:
                say(f"LoRA SFT: stopped early at step {self.step}: no held-out gain in {config.patience} evaluations")
                break
        self._finish()
        return report

    def _resume(self, saved: dict) -> tuple[int, int, float]:
        """Take up a checkpoint's state: (its epoch, the epoch's next micro-batch, its seconds of training)."""
        with torch.no_grad():
            for name, p in self.trainable:
                p.copy_(saved["weights"][name])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        stopping, report = self.stopping, self.report
        stopping.best_state = {name: t.to(self.device) for name, t in saved["best_weights"].items()}
        stopping.best_loss, stopping.evals_without_gain = saved["best_loss"], saved["evals_without_gain"]
        for name in ("loss_curve", "loss_steps", "holdout_curve", "best_step"):
            setattr(report, name, saved["report"][name])
        report.holdout_curve = [tuple(point) for point in report.holdout_curve]
        stopping.best_step = report.best_step
        self.step, self.window, self.examples_seen = saved["step"], saved["window"], saved["examples_seen"]
        report.resumed_from_step = self.step
        self.say(f"LoRA SFT: resumed from step {self.step}/{self.steps} (epoch {saved['epoch'] + 1}/{self.epochs}, "
                 f"checkpoint {self.checkpoint.path})")
        return saved["epoch"], saved["next_start"], saved["seconds"]

    def _micro_batches(self) -> list[list[int]]:
        """One epoch's micro-batches: length-sorted (less padding), in a shuffled order."""
        rng, size = self.rng, self.config.micro_batch_size
        by_length = sorted(rng.permutation(len(self.train_rows)), key=lambda i: len(self.train_rows[i]["input_ids"]))
        micro = [by_length[i : i + size] for i in range(0, len(by_length), size)]
        return [micro[i] for i in rng.permutation(len(micro))]

    def _train_epoch(self, epoch: int, saved: dict | None, first_start: int) -> None:
        from .checkpoints import restore_rng_states

        rng, accumulation = self.rng, self.accumulation
        if saved is not None:
            rng.bit_generator.state = saved["epoch_rng"]
        epoch_rng = rng.bit_generator.state  # the epoch's batch order is drawn again from here on resuming
        micro = self._micro_batches()
        if saved is not None:
            rng.bit_generator.state = saved["rng_loop"]
            restore_rng_states(saved["rng"])  # LoRA dropout draws from torch's generator
        for start in range(first_start, len(micro), accumulation):
            if self.step == self.steps:
                break
            step_loss = self._train_step(micro[start : start + accumulation])
            self._log_progress(epoch, step_loss)
            if self.holdout and (self.step % self.config.eval_every_steps == 0 or self.step == self.steps):
                self._evaluate()
                if self.report.stopped_early:
                    break
            if self.step < self.steps and self.checkpoint.due(self.step):
                self._save_checkpoint(epoch, start + accumulation, epoch_rng)

    def _train_step(self, group: list[list[int]]) -> float:
        """One optimizer step over the micro-batches `group` (gradients accumulated): its token-weighted loss."""
        train = self.train_rows
        n_tokens = sum(sum(1 for t in train[i]["labels"][1:] if t != -100) for mb in group for i in mb)
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for mb in group:
            batch = _collate([train[i] for i in mb], self.pad_id, self.device)
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            loss = target_loss(self.model, batch, self.bf16) * tokens / max(n_tokens, 1)  # token-weighted over the step
            loss.backward()
            step_loss += loss.item()
            self.examples_seen += len(mb)
        torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return step_loss

    def _log_progress(self, epoch: int, step_loss: float) -> None:
        report, step, steps = self.report, self.step, self.steps
        self.window.append(step_loss)
        if len(self.window) >= max(1, steps // 100) or step == steps:  # the curve: at most ~100 points
            report.loss_curve.append(float(np.mean(self.window)))
            report.loss_steps.append(step)
            self.window = []
        now = time.monotonic()
        if now - self.last_log > self.config.log_every_s or step == steps:
            self.last_log = now
            loss_now = report.loss_curve[-1] if report.loss_curve else step_loss
            self.say(f"LoRA SFT: epoch {epoch + 1}/{self.epochs} step {step}/{steps} loss {loss_now:.4f} "
                     f"({self.examples_seen / (now - self.started):.1f} examples/s)")

    def _evaluate(self) -> None:
        """The held-out loss now: onto the curve, into early stopping (which may stop the run)."""
        report, stopping, step = self.report, self.stopping, self.step
        loss_now = self._held_out_loss()
        report.holdout_curve.append((step, loss_now))
        stopping.record(step, loss_now, self.trainable)
        report.best_step = stopping.best_step
        self.say(f"LoRA SFT: step {step} held-out loss {loss_now:.4f} (best {stopping.best_loss:.4f} at step "
                 f"{report.best_step})")
        if stopping.exhausted:
            report.stopped_early = True

    def _save_checkpoint(self, epoch: int, next_start: int, epoch_rng: dict) -> None:
        report, stopping = self.report, self.stopping
        self.checkpoint.save({
            "step": self.step, "epoch": epoch, "next_start": next_start, "epoch_rng": epoch_rng,
            "rng_loop": self.rng.bit_generator.state, "examples_seen": self.examples_seen,
            "seconds": time.monotonic() - self.started, "window": self.window,
            "weights": {name: p.detach().cpu() for name, p in self.trainable},
            "best_weights": {name: t.cpu() for name, t in stopping.best_state.items()},
            "best_loss": stopping.best_loss, "evals_without_gain": stopping.evals_without_gain,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "report": {"holdout_loss_before": report.holdout_loss_before, "loss_curve": report.loss_curve,
                       "loss_steps": report.loss_steps, "holdout_curve": report.holdout_curve,
                       "best_step": report.best_step},
        })

    def _finish(self) -> None:
        """The best adapter restored (the one that generalised best, not the last one); the report completed."""
        report, stopping = self.report, self.stopping
        report.steps = self.step
        if self.holdout:
            with torch.no_grad():
                for name, p in self.trainable:
                    p.copy_(stopping.best_state[name])
        report.seconds = time.monotonic() - self.started
        report.examples_per_second = self.examples_seen / max(report.seconds, 1e-9)
        # the restored adapter's held-out loss was measured when it was best (or before training: the baseline)
        report.holdout_loss_after = stopping.best_loss if self.holdout else float("nan")
        self.say(f"LoRA SFT done in {report.seconds:.0f}s ({self.step} steps); held-out loss "
                 f"{report.holdout_loss_before:.4f} -> {report.holdout_loss_after:.4f} (best step {report.best_step})")
