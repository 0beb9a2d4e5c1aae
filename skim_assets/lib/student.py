"""The student's three stages as Dagster-free services: distil a LoRA adapter on the teacher's demonstrations,
write texts for every source, and map what it wrote onto real targets in the click-trained encoder's space.

The pipeline's assets (`lora_adapter`, `synthetic_queries`, `mapped_pairs`) each call one stage; `run_student`
runs all three for another student (the student-size sweep) under the settings the pipeline's artifacts stored,
so a sweep row and the pipeline's own student are made the same way.

Artifact formats owned here: a student's base-model folder holds `model/` (a Hugging Face folder, or a link to
one); an adapter folder holds `adapter/` (the peft adapter) and `training.json` (settings and training report).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from pydantic import Field

from .demonstrations import merge_samples, parse_outputs, student_examples, student_prompts
from .distillation import LoraSftConfig, LoraSftReport, train_lora_adapter
from .generation import SamplingSettings, ShardReport, generate_samples, make_backend, shard_count
from .mapping import MappingSettings, map_once
from .prompts import teacher_messages
from .quality import judge_queries, keep_grounded, set_agreement
from .slm import BUNDLED_SLMS, bundled_gguf, export_gguf_as_hf
from .storage import read_json, replace_directory

BASE_MODEL = "model"  # in a base-model folder: the HF model, or a link to the configured one
LORA_FOLDER = "adapter"  # in an adapter's folder: the peft adapter
LORA_TRAINING = "training.json"  # in an adapter's folder: the settings it was trained with and its report
ADAPTER_FINGERPRINT = "fingerprint.json"  # in a sweep student's adapter folder: what it was trained from


class GenerationSettings(SamplingSettings):
    """The student's writing: the decoding of `SamplingSettings`, which sources it writes for, and what becomes of
    its outputs."""

    queries_per_document: int = Field(default=10, description="Parsed queries kept per document.")
    quality_filter: bool = Field(default=True, description="Keep only grounded, well-formed queries (every content "
                                 "word occurs in the document; no role prefixes, code-like strings or one-word "
                                 "fragments); off for the ablation.")
    shard_size: int = Field(default=256, description="Documents per checkpointed shard.")
    parallel_shards: int = Field(default=1, description="Shard groups generated as parallel steps, each on its own "
                                 "GPU (or CPU worker); the `gpu` pool's limit bounds how many run at once. Shard s "
                                 "belongs to group s mod parallel_shards: the output equals a one-step run's.")
    max_documents: int = Field(default=0, description="Generate for a seeded random sample of this many documents "
                               "(0 = every document, the method; a sample bounds CPU-only runs on large corpora).")

    def shard_groups(self, sources: int) -> int:
        """How many generation steps share the shards of `sources` sources (at most one per shard)."""
        return max(1, min(self.parallel_shards, shard_count(sources, self.shard_size)))


# ----------------------------------------------------------------------------------------------- base models


def base_model_folder(base_slm: Path) -> Path:
    """The small LM's Hugging Face folder inside a base-model artifact."""
    return Path(base_slm) / BASE_MODEL


def export_bundled_student(name: str, folder: Path, new_staging: Callable[[], Path], log=None) -> Path:
    """The bundled small LM `name` (`lib.slm.BUNDLED_SLMS`) as a HF folder at `folder`, exported on first use into
    a folder from `new_staging` and moved into place whole: a killed export leaves nothing half-written."""
    if (folder / "config.json").exists():
        return folder
    staging = new_staging()
    report = export_gguf_as_hf(staging / BASE_MODEL, bundled_gguf(name, staging))
    if log:
        log(f"exported {name} ({report['architecture']}, {report['parameters'] / 1e6:.0f}M parameters, BOS "
            f"{report['adds_bos']}) in {report['seconds']:.0f}s")
    replace_directory(staging / BASE_MODEL, folder)
    shutil.rmtree(staging, ignore_errors=True)  # an assembled GGUF file
    return folder


def student_slug(name_or_path: str) -> str:
    """A folder name for a student: its bundled name, or its folder's name and a hash of the path."""
    if name_or_path in BUNDLED_SLMS:
        return name_or_path
    path = str(Path(name_or_path).expanduser().resolve())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).name) or "model"
    return f"{safe}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def is_pipeline_student(name_or_path: str, pipeline_student: str) -> bool:
    """Whether a student named in a sweep is the pipeline's own (`pipeline_student`: its name or path)."""
    if name_or_path in BUNDLED_SLMS or pipeline_student in BUNDLED_SLMS:
        return name_or_path == pipeline_student
    return Path(name_or_path).expanduser().resolve() == Path(pipeline_student).expanduser().resolve()


def local_student_folder(name_or_path: str) -> Path:
    """A local Hugging Face causal-LM folder given as a student (checked)."""
    path = Path(name_or_path).expanduser().resolve()
    if not (path / "config.json").exists():
        raise ValueError(f"student model {name_or_path!r} is neither a bundled small LM ({sorted(BUNDLED_SLMS)}) "
                         "nor a Hugging Face model folder (no config.json)")
    return path


# ----------------------------------------------------------------------------------------------- distillation


def write_lora_training(folder: Path, settings: LoraSftConfig, report: LoraSftReport) -> None:
    (folder / LORA_TRAINING).write_text(json.dumps({"settings": LoraSftConfig.of(settings).as_dict(),
                                                    "report": asdict(report)}))


def lora_training_of(adapter: Path) -> tuple[LoraSftConfig, LoraSftReport]:
    """The settings an adapter folder was trained with, and its training report."""
    path = adapter / LORA_TRAINING
    if not path.exists():
        raise ValueError(f"{adapter} has no {LORA_TRAINING}: materialize the adapter again with this version")
    stored = json.loads(path.read_text())
    return LoraSftConfig(**stored["settings"]), LoraSftReport(**stored["report"])


@dataclass(frozen=True)
class DistillationTask:
    """What a student is distilled on: the teacher's demonstrations for the sources of the dataset's direction,
    each source's known outputs, and the prompt."""

    demonstrations: pl.DataFrame
    sources: pl.DataFrame
    known: dict
    prompt_style: str
    use_metadata: bool = True


def distil_student(base_model: Path, task: DistillationTask, folder: Path, settings: LoraSftConfig, *,
                   device: str, checkpoint_dir: Path, progress=None) -> LoraSftReport:
    """LoRA SFT of `base_model` on the task's demonstrations into `folder/adapter/`, with `folder/training.json`;
    a killed or retried run resumes from its last checkpoint in `checkpoint_dir`."""
    prompts, targets, keys = student_examples(task.demonstrations, task.sources, task.known, task.prompt_style,
                                              task.use_metadata)
    if progress:
        progress(f"LoRA SFT of {Path(base_model).name} on {len(prompts)} demonstrations")
    report = train_lora_adapter(str(base_model), prompts, targets, folder / LORA_FOLDER, settings, progress=progress,
                                keys=keys, device=device, checkpoint_dir=checkpoint_dir)
    write_lora_training(folder, settings, report)
    return report


def distil_once(base_model: Path, task: DistillationTask, adapter: Path, new_staging: Callable[[], Path],
                settings: LoraSftConfig, *, device: str, checkpoint_dir: Path, progress=None) -> LoraSftReport:
    """The adapter at `adapter` if it was trained from these demonstrations and settings, else distilled now (in
    a folder from `new_staging`, then moved into place whole)."""
    # where checkpoints are taken does not change the adapter
    fingerprint = json.loads(json.dumps({
        "base": str(base_model), "demonstrations": task.demonstrations.hash_rows().sum(),
        "settings": {k: v for k, v in settings.as_dict().items() if k != "checkpoint_every_steps"}}))
    done = adapter / ADAPTER_FINGERPRINT
    if not (done.exists() and json.loads(done.read_text()) == fingerprint):
        staging = new_staging()
        distil_student(base_model, task, staging, settings, device=device, checkpoint_dir=checkpoint_dir,
                       progress=progress)
        (staging / ADAPTER_FINGERPRINT).write_text(json.dumps(fingerprint))
        replace_directory(staging, adapter)
    return lora_training_of(adapter)[1]


# ----------------------------------------------------------------------------------------------- generation


def sampled_sources(sources: pl.DataFrame, max_documents: int, seed: int) -> pl.DataFrame:
    """Every source in id order, or a seeded random sample of `max_documents` of them (0 = all)."""
    sources = sources.sort("doc_id")
    if max_documents <= 0 or sources.height <= max_documents:
        return sources
    return sources[np.sort(np.random.default_rng(seed).choice(sources.height, size=max_documents, replace=False))]


def backend_factory(generator, base: str, adapter: Path | None, names: list) -> Callable:
    """A factory of the generator's backend (`generator`: the generator settings, e.g. the Dagster resource) for
    `base` (+ `adapter`); each backend's name goes to `names`."""
    def make():
        backend = make_backend(generator.backend, base, adapter, device=generator.device,
                               batch_size=generator.batch_size, dtype=generator.dtype,
                               tensor_parallel_size=generator.tensor_parallel_size,
                               gpu_memory_utilization=generator.gpu_memory_utilization)
        names.append(backend.name)
        return backend

    return make


def checkpoint_settings(generator, base: str, adapter: Path | None) -> dict:
    """What identifies a generation's checkpoints besides its prompts and decoding: the model and backend. The
    adapter's weights file identifies the adapter: a retrained adapter invalidates every checkpoint."""
    adapter_stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns if adapter else None
    return {"base": base, "adapter": str(adapter) if adapter else None, "adapter_stamp": adapter_stamp,
            "backend": generator.backend, "dtype": generator.dtype}


def few_shot_prompts(base_model_path: str, sources: pl.DataFrame, known: dict, style: str,
                     use_metadata: bool) -> list[str]:
    """The teacher's few-shot chat prompt rendered with the base model's chat template (generation without a
    distilled adapter)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    return [
        tokenizer.apply_chat_template(
            teacher_messages(row["title"], row["metadata"] if use_metadata else "",
                             known.get(row["doc_id"], []), style),
            add_generation_prompt=True, tokenize=False,
        )
        for row in sources.iter_rows(named=True)
    ]


@dataclass
class GenerationWork:
    """One generation pass: the sources written for (rows shaped like documents, keyed `doc_id`), their prompts,
    decoding, checkpoints and backend."""

    sources: pl.DataFrame
    known: dict
    prompts: list[str]
    adapter: Path | None
    sampling: SamplingSettings
    checkpoint_dir: Path
    settings: dict
    backend_factory: Callable
    backend_names: list
    shard_size: int = 256

    @property
    def shards(self) -> int:
        return shard_count(self.sources.height, self.shard_size)

    def generate(self, progress, shards=None) -> tuple[pl.DataFrame, ShardReport]:
        """(every sample's raw output, the shard report); checkpointed per shard, so a rerun resumes."""
        return generate_samples(self.sources["doc_id"].to_list(), self.prompts, self.backend_factory, self.sampling,
                                checkpoint_dir=self.checkpoint_dir, shard_size=self.shard_size, settings=self.settings,
                                progress=progress, shards=shards)


def generation_work(sources: pl.DataFrame, known: dict, style: str, use_metadata: bool,
                    settings: GenerationSettings, generator, base: Path, adapter_folder: Path | None,
                    checkpoint_dir: Path) -> GenerationWork:
    """The pass over `sources` (all, or `settings.max_documents` of them) by the base model plus the adapter in
    `adapter_folder` (the compact student prompt), or by the base model alone (the teacher's few-shot prompt)."""
    sources = sampled_sources(sources, settings.max_documents, settings.seed)
    base = str(base)
    adapter = Path(adapter_folder) / LORA_FOLDER if adapter_folder is not None else None
    prompts = (student_prompts(sources, known, style, use_metadata) if adapter is not None
               else few_shot_prompts(base, sources, known, style, use_metadata))
    names: list[str] = []
    return GenerationWork(sources, known, prompts, adapter, SamplingSettings.of(settings), checkpoint_dir,
                          checkpoint_settings(generator, base, adapter),
                          backend_factory(generator, base, adapter, names), names, shard_size=settings.shard_size)


class WrittenQueries(NamedTuple):
    """What a generation pass wrote: parsed (one query list per source), judged (one verdict per row, for the
    filter and every figure), kept after the quality filter, dropped by reason, parse statistics."""

    parsed: pl.DataFrame
    judged: pl.DataFrame
    kept: pl.DataFrame
    dropped: dict
    stats: dict


def written_queries(raw: pl.DataFrame, sources: pl.DataFrame, known: dict, style: str,
                    settings: GenerationSettings) -> WrittenQueries:
    """Raw outputs (every sample) parsed, merged per source, judged and filtered."""
    parsed, stats = parse_outputs(raw["doc_id"].to_list(), raw["text"].to_list(), sources, known, style,
                                  settings.queries_per_document)
    parsed = merge_samples(parsed, settings.queries_per_document)
    stats["queries_per_document"] = parsed.height / max(sources.height, 1)
    judged = judge_queries(parsed, sources)
    kept, dropped = keep_grounded(judged, parsed.columns) if settings.quality_filter else (parsed, {})
    return WrittenQueries(parsed, judged, kept, dropped, stats)


def student_teacher_agreement(adapter: Path, written: pl.DataFrame, teacher_demonstrations: pl.DataFrame,
                              asked: list[str]) -> dict | None:
    """Set agreement (normalised queries) of the student with the teacher on the demonstration documents the
    LoRA adapter (`adapter`: its peft folder) was never trained on (its held-out slice) that generation was asked
    about."""
    report_path = adapter / "sft_report.json"
    if not report_path.exists():
        return None
    doc_ids = sorted(set(read_json(report_path).get("holdout_keys", [])) & set(asked))
    if not doc_ids:
        return None
    return set_agreement(written, teacher_demonstrations, doc_ids)


# ----------------------------------------------------------------------------------------------- the whole student


@dataclass
class StudentSweepTask:
    """What every student of a sweep shares: its distillation task (whose sources it also writes for), the
    generation settings, the mapping's settings and click space (`lib.click_space.ClickSpace`), and the evidence
    the mapping reads. The targets' vectors and the click neighbours are computed once, for every student."""

    distillation: DistillationTask
    lora: LoraSftConfig
    generation: GenerationSettings
    mapping: MappingSettings
    space: object  # lib.click_space.ClickSpace
    targets: object  # lib.click_space.MappingTargets
    clicks: pl.DataFrame
    impressions: pl.DataFrame | None

    @cached_property
    def target_vectors(self):
        return self.space.embed(self.targets.texts, self.targets.max_length, self.targets.role)[0]

    @cached_property
    def neighbours(self):
        return self.space.neighbours(self.clicks)


@dataclass
class StudentRun:
    """What one student wrote (judged, and kept after the filter), the pairs its queries mapped onto, and how its
    adapter trained."""

    judged: pl.DataFrame
    kept: pl.DataFrame
    pairs: pl.DataFrame
    training: LoraSftReport


def run_student(base_model: Path, work_dir: Path, new_staging: Callable[[], Path], task: StudentSweepTask,
                generator, progress=None) -> StudentRun:
    """Distil, write and map with one student, resumable: its adapter, LoRA checkpoints and generation shards
    live under `work_dir`."""
    training = distil_once(base_model, task.distillation, work_dir / "adapter", new_staging, task.lora,
                           device=generator.device, checkpoint_dir=work_dir / "lora_checkpoints", progress=progress)
    sources, known, style = task.distillation.sources, task.distillation.known, task.distillation.prompt_style
    work = generation_work(sources, known, style, True, task.generation, generator, base_model, work_dir / "adapter",
                           work_dir / "shards")
    raw, shards = work.generate(progress)
    if progress:
        progress(f"{Path(base_model).name}: {raw.height} outputs, {shards.tokens_per_second:.1f} generated tokens/s")
    written = written_queries(raw, work.sources, known, style, task.generation)
    return StudentRun(written.judged, written.kept, map_written(written.kept, task), training)


def map_written(kept: pl.DataFrame, task: StudentSweepTask) -> pl.DataFrame:
    """Pairs from written texts mapped onto the task's targets in its space (one search, no incremental state),
    with the click-neighbour floor and the shown-not-clicked filter its mapping settings name."""
    targets = task.targets
    vectors, _ = task.space.embed(kept["query"].to_list(), targets.max_length, targets.role)
    pairs, _ = map_once(kept["doc_id"].to_list(), vectors, targets.ids, task.target_vectors, task.mapping, "skim",
                        task.neighbours, task.impressions, targets.column)
    return pairs
