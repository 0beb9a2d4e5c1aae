"""Knowledge distillation: teacher demonstrations, the base small LM, and its LoRA adapter."""

import json
import time

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.datasets import read_spec
from ..lib.demonstrations import (
    parse_outputs,
    sample_documents,
    student_examples,
    teacher_requests,
)
from ..lib.distillation import LoraSftConfig, train_lora_adapter
from ..lib.plots import line_plot, markdown_image
from ..lib.quality import judge_queries, query_quality
from ..lib.slm import export_gguf_as_hf
from ..lib.storage import atomic_directory
from ..lib.teachers import TeacherRequest
from ..partitions import dataset_partitions
from ..resources import GeneratorResource, StorageResource, TeacherResource
from .checking import (
    ERROR,
    WARN,
    Outcome,
    build_check,
    build_finite_weights_check,
    build_query_quality_check,
    fail,
    nonfinite_in_safetensors,
    ok,
    rounded,
)
from .common import MODEL_STEP, directory_metadata, known_queries, quality_metadata, sample_markdown, table_metadata



class TeacherDemonstrationsConfig(dg.Config):
    max_documents: int = Field(default=50_000, description="Documents sampled for demonstrations (paper: ~50K).")
    queries_per_document: int = Field(default=10, description="Queries kept per document after parsing.")
    seed: int = Field(default=0, description="Seed of the document sample.")


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="distillation",
    deps=["documents", "queries", "train_pairs"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)
def teacher_demonstrations(
    context: dg.AssetExecutionContext, config: TeacherDemonstrationsConfig, storage: StorageResource,
    teacher: TeacherResource, generator: GeneratorResource,
) -> dg.MaterializeResult:
    """A teacher writes up to ~10 diverse queries per sampled document from its metadata only (the paper's
    URL+queries or Wikipedia-categories prompt, with worked examples); outputs are parsed and filtered.

    Answers are cached by prompt hash under `<root>/teacher_cache/`, so a rerun or a resumed crash never pays twice.
    """
    dataset = context.partition_key
    spec = read_spec(storage.inputs(dataset))
    documents = storage.read_table("documents", dataset)
    known = known_queries(storage, dataset)
    sample = sample_documents(documents, config.max_documents, config.seed)
    model = teacher.build(storage.root_path / "teacher_cache", fallback_model_path=_base_model_dir(storage, generator))
    if hasattr(model, "adapt_to_dataset"):  # the offline teacher learns the corpus's boilerplate and query style
        train_texts = storage.read_table("queries", dataset).filter(pl.col("split") == "train")["text"].to_list()
        model.adapt_to_dataset(documents["metadata"].to_list(), train_texts)
    context.log.info(f"teacher {model.backend}:{model.model} on {sample.height} documents ({spec.prompt_style} prompt)")
    started = time.monotonic()
    responses = model.complete(teacher_requests(sample, known, spec.prompt_style, TeacherRequest), progress=context.log.info)
    seconds = time.monotonic() - started
    errors = [r for r in responses if r.error]
    if len(errors) == len(responses):
        raise RuntimeError(f"the teacher failed on every document; first error: {errors[0].error}")
    demonstrations, stats = parse_outputs([r.key for r in responses], [r.text for r in responses], documents, known,
                                          spec.prompt_style, config.queries_per_document)
    raw = pl.DataFrame({"doc_id": [r.key for r in responses], "text": [r.text for r in responses],
                        "error": [r.error for r in responses], "cached": [r.cached for r in responses]},
                       schema={"doc_id": pl.String, "text": pl.String, "error": pl.String, "cached": pl.Boolean})
    storage.write_table("teacher_demonstrations", dataset, raw, "raw")
    path = storage.write_table("teacher_demonstrations", dataset, demonstrations)
    usage = getattr(model, "stats", {}) or {}
    judged = judge_queries(demonstrations, documents)
    figures = query_quality(demonstrations, documents, sample.height)
    context.log.info(f"teacher demonstrations: {demonstrations.height} queries for {sample.height} documents, grounded "
                     f"{figures['grounded_share']:.1%}, junk {figures['junk_share']:.1%}, "
                     f"{figures['distinct_queries_per_document']:.1f} distinct per document")
    return dg.MaterializeResult(
        metadata=table_metadata(demonstrations, path)
        | {
            "teacher_backend": model.backend,
            "teacher_model": model.model,
            "documents": dg.MetadataValue.int(sample.height),
            "parse_rate": dg.MetadataValue.float(round(stats["parse_rate"], 4)),
            "queries_per_document": dg.MetadataValue.float(round(stats["queries_per_document"], 2)),
            "rejected": dg.MetadataValue.json(stats["rejected"]),
            "errors": dg.MetadataValue.int(len(errors)),
            "cached_answers": dg.MetadataValue.int(sum(r.cached for r in responses)),
            "prompt_tokens": dg.MetadataValue.int(sum(r.prompt_tokens for r in responses)),
            "completion_tokens": dg.MetadataValue.int(sum(r.completion_tokens for r in responses)),
            "cost_usd": dg.MetadataValue.float(round(float(usage.get("cost_usd", 0.0)), 4)),
            "seconds": dg.MetadataValue.float(round(seconds, 1)),
            **quality_metadata(figures, "teacher"),
            "sample": dg.MetadataValue.md(sample_markdown(judged, documents)),
        }
    )


def _base_model_dir(storage: StorageResource, generator: GeneratorResource) -> str:
    return generator.base_model_path or str(storage.root_path / "base_slm" / "model")


@dg.asset(group_name="distillation", kinds={"pytorch"})
def base_slm(context: dg.AssetExecutionContext, storage: StorageResource, generator: GeneratorResource):
    """The small LM as a plain Hugging Face folder: the bundled SmolLM2-135M-Instruct (GGUF, de-quantized) or the
    configured `base_model_path`, checked to load. Shared by every dataset."""
    if generator.base_model_path:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(generator.base_model_path)
        return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(generator.base_model_path),
                                              "architecture": str(config.architectures), "bundled": False})
    target = storage.root_path / "base_slm" / "model"
    with atomic_directory(target) as tmp:
        report = export_gguf_as_hf(tmp)
    context.log.info(f"exported {report['source']} ({report['parameters'] / 1e6:.0f}M parameters) in {report['seconds']:.0f}s")
    return dg.MaterializeResult(
        metadata=directory_metadata(target)
        | {"parameters": dg.MetadataValue.int(report["parameters"]), "source": report["source"], "bundled": True}
    )


class LoraAdapterConfig(dg.Config, LoraSftConfig):
    """LoRA SFT of the student: the fields of `lib.distillation.LoraSftConfig`."""


def build_lora_adapter_asset(name: str, use_metadata: bool, description: str) -> dg.AssetsDefinition:
    """A LoRA adapter distilled with (or, for the ablation, without) the metadata in the student prompt."""

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="distillation",
        deps=["teacher_demonstrations", "base_slm", "documents", "train_pairs"],
        description=description,
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
        kinds={"pytorch"},
        **MODEL_STEP,
    )
    def _lora_adapter(
        context: dg.AssetExecutionContext, config: LoraAdapterConfig, storage: StorageResource,
        generator: GeneratorResource,
    ) -> dg.MaterializeResult:
        dataset = context.partition_key
        spec = read_spec(storage.inputs(dataset))
        documents = storage.read_table("documents", dataset)
        known = known_queries(storage, dataset)
        prompts, targets, doc_ids = student_examples(storage.read_table("teacher_demonstrations", dataset), documents, known,
                                            spec.prompt_style, use_metadata)
        target = storage.artifact_dir(name, dataset)
        with atomic_directory(target) as tmp:
            report = train_lora_adapter(_base_model_dir(storage, generator), prompts, targets, tmp / "adapter",
                                        config, progress=context.log.info, keys=doc_ids,
                                        device=generator.device)
            curve = [(0, report.holdout_loss_before), *report.holdout_curve]
            plot = line_plot({"held-out loss": ([s for s, _ in curve], [v for _, v in curve])},
                             "LoRA SFT: held-out target-token loss", "optimizer step", "loss", tmp / "loss.png")
            loss_md = markdown_image(plot, "loss curve")
            (tmp / "base_model.json").write_text(json.dumps({"base_model_path": _base_model_dir(storage, generator)}))
        return dg.MaterializeResult(
            metadata=directory_metadata(target)
            | {
                "use_metadata": use_metadata,
                "train_examples": dg.MetadataValue.int(report.train_examples),
                "holdout_examples": dg.MetadataValue.int(report.holdout_examples),
                "holdout_loss_before": dg.MetadataValue.float(round(report.holdout_loss_before, 4)),
                "holdout_loss_after": dg.MetadataValue.float(round(report.holdout_loss_after, 4)),
                "examples_per_second": dg.MetadataValue.float(round(report.examples_per_second, 2)),
                "steps": dg.MetadataValue.int(report.steps),
                "best_step": dg.MetadataValue.int(report.best_step),
                "stopped_early": report.stopped_early,
                "holdout_documents": dg.MetadataValue.json(report.holdout_keys[:50]),
                "seconds": dg.MetadataValue.float(round(report.seconds, 1)),
                "precision": report.precision,
                "device": report.device,
                "loss_curve": dg.MetadataValue.md(loss_md),
            }
        )

    return _lora_adapter


lora_adapter = build_lora_adapter_asset(
    "lora_adapter", True, "The small LM LoRA-distilled (peft) on the teacher's demonstrations with the compact student prompt.")
lora_adapter_no_metadata = build_lora_adapter_asset(
    "lora_adapter_no_metadata", False, "Ablation: the student distilled without the metadata in its prompt.")


# ----------------------------------------------------------------------------------------------- asset checks

PARSE_RATE_ERROR = 0.5  # teacher demonstrations: below this the distillation data is mostly garbage
PARSE_RATE_WARN = 0.9
LORA_ADAPTERS = ("lora_adapter", "lora_adapter_no_metadata")
LORA_FOLDER = "adapter"


def parse_rate_stats(raw: pl.DataFrame, demonstrations: pl.DataFrame) -> dict:
    """Documents the teacher answered (table `raw`) and how many of them yielded >= 1 parsed query."""
    documents = raw["doc_id"].n_unique()
    parsed = demonstrations.filter(pl.col("doc_id").is_in(raw["doc_id"].implode()))["doc_id"].n_unique()
    return {"documents": documents, "parsed_documents": parsed, "parse_rate": parsed / documents if documents else 0.0}


def evaluate_teacher_demonstrations(storage: StorageResource, dataset: str) -> Outcome:
    raw = storage.read_table("teacher_demonstrations", dataset, "raw")
    stats = parse_rate_stats(raw, storage.read_table("teacher_demonstrations", dataset))
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
teacher_query_quality_check = build_query_quality_check("teacher_demonstrations", None)  # no pre-filter table
lora_weight_checks = [
    build_finite_weights_check(name, LORA_FOLDER, "adapter_model.safetensors", nonfinite_in_safetensors)
    for name in LORA_ADAPTERS
]
distillation_checks = [teacher_demonstrations_check, teacher_query_quality_check, *lora_weight_checks]
