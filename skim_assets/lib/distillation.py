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

import numpy as np
import torch
from pydantic import Field

from .settings import Settings
from .slm import prompt_prefix_ids

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
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
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
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    from .checkpoints import Digest, TrainingCheckpoint, fingerprint_settings, module_digest, restore_rng_states

    config = config or LoraSftConfig()
    say = progress or log.info
    if len(prompts) != len(targets) or not prompts:
        raise ValueError(f"need equally many prompts and targets, at least one (got {len(prompts)} and {len(targets)})")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(prompts))]
    if len(keys) != len(prompts):
        raise ValueError(f"need one key per example (got {len(keys)} keys for {len(prompts)} examples)")
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
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    order = np.random.default_rng(config.seed).permutation(len(rows))
    n_holdout = min(len(rows) - 1, max(1, int(round(config.holdout_fraction * len(rows))))) if len(rows) > 1 else 0
    holdout = [rows[i] for i in order[:n_holdout]]
    train = [rows[i] for i in order[n_holdout:]]
    accumulation = max(1, config.effective_batch_size // config.micro_batch_size)
    steps_per_epoch = max(1, math.ceil(len(train) / (config.micro_batch_size * accumulation)))
    steps = max(steps_per_epoch * config.epochs, config.min_steps)
    epochs = math.ceil(steps / steps_per_epoch)  # the last pass may stop part way, at `steps`
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=config.learning_rate)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_fraction * steps), steps)

    saved = checkpoint.load() if checkpoint.enabled else None
    report = LoraSftReport(train_examples=len(train), holdout_examples=len(holdout), steps=steps, seconds=0.0,
                           examples_per_second=0.0,
                           holdout_loss_before=(saved["report"]["holdout_loss_before"] if saved else
                                                mean_target_loss(model, holdout, pad_id, device, bf16=bf16)),
                           holdout_loss_after=float("nan"), precision=precision, device=str(device),
                           config=config.as_dict(),
                           holdout_keys=sorted(keys[i] for i in order[:n_holdout]))
    say(f"LoRA SFT: {len(train)} train / {len(holdout)} held-out examples, up to {steps} optimizer steps "
        f"({epochs} epochs), {precision} on {device}; held-out loss before {report.holdout_loss_before:.4f}")
    # the untrained adapter is the baseline to beat: training that never helps the held-out loss saves it
    best_loss, evals_without_gain = report.holdout_loss_before, 0
    best_state = {name: p.detach().clone() for name, p in trainable}
    rng = np.random.default_rng(config.seed + 1)
    step, window, examples_seen, seconds_before = 0, [], 0, 0.0
    start_epoch, first_start = 0, 0
    if saved:
        with torch.no_grad():
            for name, p in trainable:
                p.copy_(saved["weights"][name])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best_state = {name: t.to(device) for name, t in saved["best_weights"].items()}
        best_loss, evals_without_gain = saved["best_loss"], saved["evals_without_gain"]
        for name in ("loss_curve", "loss_steps", "holdout_curve", "best_step"):
            setattr(report, name, saved["report"][name])
        report.holdout_curve = [tuple(point) for point in report.holdout_curve]
        step, window, examples_seen, seconds_before = (saved["step"], saved["window"], saved["examples_seen"],
                                                       saved["seconds"])
        start_epoch, first_start = saved["epoch"], saved["next_start"]
        report.resumed_from_step = step
        say(f"LoRA SFT: resumed from step {step}/{steps} (epoch {start_epoch + 1}/{epochs}, checkpoint "
            f"{checkpoint.path})")
    started = last_log = time.monotonic() - seconds_before  # seconds of training, across resumed runs
    model.train()
    for epoch in range(start_epoch, epochs):
        resuming = saved is not None and epoch == start_epoch
        if resuming:
            rng.bit_generator.state = saved["epoch_rng"]
        epoch_rng = rng.bit_generator.state  # the epoch's batch order is drawn again from here on resuming
        # length-sorted micro-batches waste less padding; shuffle the batch order
        by_length = sorted(rng.permutation(len(train)), key=lambda i: len(train[i]["input_ids"]))
        micro = [by_length[i : i + config.micro_batch_size] for i in range(0, len(by_length), config.micro_batch_size)]
        micro = [micro[i] for i in rng.permutation(len(micro))]
        if resuming:
            rng.bit_generator.state = saved["rng_loop"]
            restore_rng_states(saved["rng"])  # LoRA dropout draws from torch's generator
        for start in range(first_start if resuming else 0, len(micro), accumulation):
            if step == steps:
                break
            group = micro[start : start + accumulation]
            n_tokens = sum(sum(1 for t in train[i]["labels"][1:] if t != -100) for mb in group for i in mb)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for mb in group:
                batch = _collate([train[i] for i in mb], pad_id, device)
                tokens = int((batch["labels"][:, 1:] != -100).sum())
                loss = target_loss(model, batch, bf16) * tokens / max(n_tokens, 1)  # token-weighted over the step
                loss.backward()
                step_loss += loss.item()
                examples_seen += len(mb)
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            window.append(step_loss)
            if len(window) >= max(1, steps // 100) or step == steps:  # the curve: at most ~100 points
                report.loss_curve.append(float(np.mean(window)))
                report.loss_steps.append(step)
                window = []
            now = time.monotonic()
            if now - last_log > config.log_every_s or step == steps:
                last_log = now
                loss_now = report.loss_curve[-1] if report.loss_curve else step_loss
                say(f"LoRA SFT: epoch {epoch + 1}/{epochs} step {step}/{steps} loss {loss_now:.4f} "
                    f"({examples_seen / (now - started):.1f} examples/s)")
            if holdout and (step % config.eval_every_steps == 0 or step == steps):
                loss_now = mean_target_loss(model, holdout, pad_id, device, bf16=bf16)
                report.holdout_curve.append((step, loss_now))
                if loss_now < best_loss:
                    best_loss, report.best_step, evals_without_gain = loss_now, step, 0
                    best_state = {name: p.detach().clone() for name, p in trainable}
                else:
                    evals_without_gain += 1
                say(f"LoRA SFT: step {step} held-out loss {loss_now:.4f} (best {best_loss:.4f} at step {report.best_step})")
                if config.patience and evals_without_gain >= config.patience:
                    report.stopped_early = True
                    break
            if step < steps and checkpoint.due(step):
                checkpoint.save({
                    "step": step, "epoch": epoch, "next_start": start + accumulation, "epoch_rng": epoch_rng,
                    "rng_loop": rng.bit_generator.state, "examples_seen": examples_seen,
                    "seconds": time.monotonic() - started, "window": window,
                    "weights": {name: p.detach().cpu() for name, p in trainable},
                    "best_weights": {name: t.cpu() for name, t in best_state.items()},
                    "best_loss": best_loss, "evals_without_gain": evals_without_gain,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "report": {"holdout_loss_before": report.holdout_loss_before, "loss_curve": report.loss_curve,
                               "loss_steps": report.loss_steps, "holdout_curve": report.holdout_curve,
                               "best_step": report.best_step},
                })
        if report.stopped_early:
            say(f"LoRA SFT: stopped early at step {step}: no held-out gain in {config.patience} evaluations")
            break
    report.steps = step
    if holdout:  # the adapter that generalised best, not the last one
        with torch.no_grad():
            for name, p in trainable:
                p.copy_(best_state[name])
    report.seconds = time.monotonic() - started
    report.examples_per_second = examples_seen / max(report.seconds, 1e-9)
    # the restored adapter's held-out loss was measured when it was best (or before training: the baseline)
    report.holdout_loss_after = best_loss if holdout else float("nan")
    say(f"LoRA SFT done in {report.seconds:.0f}s ({step} steps); held-out loss {report.holdout_loss_before:.4f} -> "
        f"{report.holdout_loss_after:.4f} (best step {report.best_step})")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    (out_dir / "sft_report.json").write_text(json.dumps(asdict(report), indent=2))
    checkpoint.remove()  # the adapter is the artifact now
    return report
