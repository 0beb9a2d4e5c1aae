"""Knowledge distillation: teacher demonstrations, the base small LM, and its LoRA adapter."""

import json
import time
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.checks import ERROR, WARN, Outcome, fail, nonfinite_in_safetensors, ok, rounded
from ..lib.demonstrations import (
    parse_outputs,
    sample_documents,
    seeded_subset,
    teacher_reference_texts,
    teacher_requests,
)
from ..lib.distillation import LoraSftConfig, LoraSftReport
from ..lib.layout import LORA_CHECKPOINTS, TEACHER_CACHE
from ..lib.plots import line_plot
from ..lib.quality import judge_queries, judged_quality
from ..lib.slm import BUNDLED_SLMS, SMOLLM2, parameter_count
from ..lib.student import BASE_MODEL, LORA_FOLDER, DistillationTask, base_model_folder, distil_student
from ..lib.teachers import TeacherRequest
from ..partitions import dataset_partitions
from ..resources import GeneratorResource, StorageResource, Tables, TeacherResource, TrainingView
from .common import (
    MODEL_STEP,
    build_check,
    build_finite_weights_check,
    build_query_quality_check,
    plot_metadata,
    quality_metadata,
    sample_table,
    student_model_folder,
)


class TeacherDemonstrationsConfig(dg.Config):
    max_documents: int = Field(default=50_000, description="Documents sampled for demonstrations (paper: ~50K).")
    queries_per_document: int = Field(default=10, description="Queries kept per document after parsing.")
    seed: int = Field(default=0, description="Seed of the document sample.")
    adapt_max_texts: int = Field(default=50_000, description="The offline teacher learns the corpus's boilerplate "
                                 "and the train queries' style from a seeded sample of at most this many documents "
                                 "and as many reference queries (every one below it): a million documents' word "
                                 "index would cost minutes and gigabytes for the same frequencies.")


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="distillation",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    # The offline teacher runs the encoder over its corpus sample: beside a training step on the same cores both
    # slowed 4x at 1M documents. The pool only bounds concurrency; no GPU is requested (an HTTP teacher needs none).
    pool=MODEL_STEP["pool"],
)
def teacher_demonstrations(
    context: dg.AssetExecutionContext, config: TeacherDemonstrationsConfig, storage: StorageResource,
    teacher: TeacherResource, train_pairs: Tables, base_slm: Path,
) -> dg.MaterializeResult:
    """A teacher writes up to ~10 diverse queries per sampled document from its metadata only (the paper's
    URL+queries or Wikipedia-categories prompt, with worked examples); outputs are parsed and filtered.

    Answers are cached by prompt hash under `<root>/teacher_cache/`, so a rerun or a resumed crash never pays twice.
    The raw answers are side table `raw`. `base_slm` is the local teacher's model when none is configured.
    """
    dataset, view = context.partition_key, TrainingView(train_pairs)
    spec = storage.dataset_spec(dataset)
    sources, known = view.generation_sources(spec.direction)
    sample = sample_documents(sources, config.max_documents, config.seed)
    model = teacher.build(storage.store(TEACHER_CACHE), fallback_model_path=str(base_model_folder(base_slm)),
                          batch_dir=storage.store(TEACHER_CACHE, "batches", dataset))  # batch mode's state
    model.adapt_to_dataset(  # the offline teacher learns the corpus's boilerplate and output style; others: nothing
        seeded_subset(sources["metadata"].to_list(), config.adapt_max_texts, config.seed),
        seeded_subset(teacher_reference_texts(spec.direction, view.documents, view.queries), config.adapt_max_texts,
                      config.seed))
    context.log.info(f"teacher {model.backend}:{model.model} on {sample.height} {spec.direction} sources "
                     f"({spec.prompt_style} prompt)")
    started = time.monotonic()
    responses = model.complete(teacher_requests(sample, known, spec.prompt_style, TeacherRequest),
                               progress=context.log.info)
    seconds = time.monotonic() - started
    errors = [r for r in responses if r.error]
    if len(errors) == len(responses):
        raise RuntimeError(f"the teacher failed on every document; first error: {errors[0].error}")
    demonstrations, stats = parse_outputs([r.key for r in responses], [r.text for r in responses], sources, known,
                                          spec.prompt_style, config.queries_per_document)
    raw = pl.DataFrame({"doc_id": [r.key for r in responses], "text": [r.text for r in responses],
                        "error": [r.error for r in responses], "cached": [r.cached for r in responses]},
                       schema={"doc_id": pl.String, "text": pl.String, "error": pl.String, "cached": pl.Boolean})
    usage = model.stats  # empty for a teacher that counts no usage
    judged = judge_queries(demonstrations, sources)
    figures = judged_quality(judged, sample.height)
    context.log.info(f"teacher demonstrations: {demonstrations.height} queries for {sample.height} documents, grounded "
                     f"{figures['grounded_share']:.1%}, junk {figures['junk_share']:.1%}, "
                     f"{figures['distinct_queries_per_document']:.1f} distinct per document")
    return dg.MaterializeResult(
        value=view.carried_by(demonstrations, raw=raw, judged=judged),
        metadata={
            "direction": spec.direction,
            "teacher_backend": model.backend,
            "teacher_model": model.model,
            "documents": sample.height,
            "parse_rate": round(stats["parse_rate"], 4),
            "queries_per_document": round(stats["queries_per_document"], 2),
            "rejected": dg.MetadataValue.json(stats["rejected"]),
            "errors": len(errors),
            "cached_answers": sum(r.cached for r in responses),
            "prompt_tokens": sum(r.prompt_tokens for r in responses),
            "completion_tokens": sum(r.completion_tokens for r in responses),
            "cost_usd": round(float(usage.get("cost_usd", 0.0)), 4),
            **({"teacher_batches": dg.MetadataValue.json(list(model.batches))} if model.batches else {}),
            "seconds": round(seconds, 1),
            **quality_metadata(figures, "teacher"),
            "sample": sample_table(judged, sources),
        },
    )




@dg.asset(group_name="distillation", kinds={"pytorch"})
def base_slm(context: dg.AssetExecutionContext, storage: StorageResource,
             generator: GeneratorResource) -> dg.MaterializeResult:
    """The small LM as a plain Hugging Face folder (`model/`, a link): the bundled SmolLM2-135M-Instruct (GGUF,
    de-quantized), another bundled model by name (`generator.base_model_path: gemma3-270m`), or the configured
    local folder, checked to load. Shared by every dataset."""
    from transformers import AutoConfig

    name = generator.base_model_path or SMOLLM2
    source = student_model_folder(storage, name, context.log.info)
    config = AutoConfig.from_pretrained(source)
    folder = storage.staging_dir()
    (folder / BASE_MODEL).symlink_to(source, target_is_directory=True)
    return dg.MaterializeResult(value=folder, metadata={
        "student": name, "source": str(source), "bundled": name in BUNDLED_SLMS,
        "architecture": str(config.architectures), "parameters": parameter_count(source)})


class LoraAdapterConfig(dg.Config, LoraSftConfig):
    """LoRA SFT of the student: the fields of `lib.distillation.LoraSftConfig`."""




def build_lora_adapter_asset(name: str, use_metadata: bool, description: str) -> dg.AssetsDefinition:
    """A LoRA adapter distilled with (or, for the ablation, without) the metadata in the student prompt."""

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="distillation",
        description=description,
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
        kinds={"pytorch"},
        **MODEL_STEP,
    )
    def _lora_adapter(
        context: dg.AssetExecutionContext, config: LoraAdapterConfig, storage: StorageResource,
        generator: GeneratorResource, teacher_demonstrations: Tables, base_slm: Path,
    ) -> dg.MaterializeResult:
        spec = storage.dataset_spec(context.partition_key)
        sources, known = TrainingView(teacher_demonstrations).generation_sources(spec.direction)
        task = DistillationTask(teacher_demonstrations.data, sources, known, spec.prompt_style, use_metadata)
        base_model = base_model_folder(base_slm)
        folder = storage.staging_dir()
        # a killed or retried step resumes from its last checkpoint (every `checkpoint_every_steps` steps)
        report = distil_student(base_model, task, folder, LoraSftConfig.of(config), device=generator.device,
                                checkpoint_dir=storage.step_dir(LORA_CHECKPOINTS, context.partition_key, name),
                                progress=context.log.info)
        (folder / "base_model.json").write_text(json.dumps({"base_model_path": str(base_model)}))
        plot = lora_loss_plot(report, folder / "loss.png")
        return dg.MaterializeResult(value=folder, metadata={"use_metadata": use_metadata} | lora_metadata(report) | {
            **plot_metadata("loss_curve", plot, storage.artifact_dir(name, context.partition_key) / plot.path.name)})

    return _lora_adapter


def lora_loss_plot(report: LoraSftReport, path: Path):
    """The training loss at every step beside the held-out loss at each evaluation (a few points)."""
    curve = [(0, report.holdout_loss_before), *report.holdout_curve]
    return line_plot({"train loss": (report.loss_steps, report.loss_curve),
                      "held-out loss": ([s for s, _ in curve], [v for _, v in curve])},
                     "LoRA SFT: target-token loss", "optimizer step", "loss", path)


def lora_metadata(report: LoraSftReport) -> dict:
    """An adapter's training report as asset metadata."""
    return {
        "train_examples": report.train_examples,
        "holdout_examples": report.holdout_examples,
        "holdout_loss_before": round(report.holdout_loss_before, 4),
        "holdout_loss_after": round(report.holdout_loss_after, 4),
        "examples_per_second": round(report.examples_per_second, 2),
        "steps": report.steps,
        "resumed_from_step": report.resumed_from_step,  # 0: trained from the start
        "best_step": report.best_step,
        "stopped_early": report.stopped_early,
        "holdout_documents": dg.MetadataValue.json(report.holdout_keys[:50]),
        "seconds": round(report.seconds, 1),
        "precision": report.precision,
        "device": report.device,
    }


lora_adapter = build_lora_adapter_asset(
    "lora_adapter", True,
    "The small LM LoRA-distilled (peft) on the teacher's demonstrations with the compact student prompt.")
lora_adapter_no_metadata = build_lora_adapter_asset(
    "lora_adapter_no_metadata", False, "Ablation: the student distilled without the metadata in its prompt.")


# ----------------------------------------------------------------------------------------------- asset checks

PARSE_RATE_ERROR = 0.5  # teacher demonstrations: below this the distillation data is mostly garbage
PARSE_RATE_WARN = 0.9
LORA_ADAPTERS = ("lora_adapter", "lora_adapter_no_metadata")


def parse_rate_stats(raw: pl.DataFrame, demonstrations: pl.DataFrame) -> dict:
    """Documents the teacher answered (table `raw`) and how many of them yielded >= 1 parsed query."""
    documents = raw["doc_id"].n_unique()
    parsed = demonstrations.filter(pl.col("doc_id").is_in(raw["doc_id"].implode()))["doc_id"].n_unique()
    return {"documents": documents, "parsed_documents": parsed, "parse_rate": parsed / documents if documents else 0.0}


def evaluate_teacher_demonstrations(demonstrations: Tables) -> Outcome:
    raw, data = demonstrations["raw"], demonstrations.data
    stats = parse_rate_stats(raw, data)
    rate = stats["parse_rate"]
    metadata = stats | {
        "parse_rate": rounded(rate),
        "teacher_errors": int(raw["error"].is_not_null().sum()) if "error" in raw.columns else 0,
        "error_below": PARSE_RATE_ERROR,
        "warn_below": PARSE_RATE_WARN,
    }
    summary = f"parse rate {rate:.1%} ({stats['parsed_documents']} of {stats['documents']} documents)"
    if rate < PARSE_RATE_ERROR:
        return fail(ERROR, f"{summary} < {PARSE_RATE_ERROR:.0%}: too few usable demonstrations", **metadata)
    if rate < PARSE_RATE_WARN:
        return fail(WARN, f"{summary} < {PARSE_RATE_WARN:.0%}", **metadata)
    return ok(summary, **metadata)


teacher_demonstrations_check = build_check(
    "teacher_demonstrations", "parse_rate", evaluate_teacher_demonstrations, blocking=True,
    description=f"Documents with >= 1 parsed query / documents answered: ERROR below {PARSE_RATE_ERROR}, "
                f"WARN below {PARSE_RATE_WARN}.",
)
teacher_query_quality_check = build_query_quality_check("teacher_demonstrations")
lora_weight_checks = [
    build_finite_weights_check(name, LORA_FOLDER, "adapter_model.safetensors", nonfinite_in_safetensors)
    for name in LORA_ADAPTERS
]
distillation_checks = [teacher_demonstrations_check, teacher_query_quality_check, *lora_weight_checks]
