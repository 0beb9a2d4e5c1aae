"""Synthetic queries at scale: the distilled small LM writes queries for every document, shard by shard."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from ..lib.demonstrations import duplicate_rate, merge_samples, parse_outputs, student_prompts
from ..lib.generation import SamplingSettings, generate_samples, make_backend
from ..lib.prompts import teacher_messages
from ..lib.quality import judge_queries, judged_quality, keep_grounded
from ..partitions import dataset_partitions
from ..resources import GeneratorResource, StorageResource, Tables
from .checking import (
    ERROR,
    WARN,
    Evaluate,
    Outcome,
    build_check,
    build_query_quality_check,
    empty_text_count,
    fail,
    ok,
    rounded,
)
from .common import (
    LORA_FOLDER,
    MODEL_STEP,
    all_queries,
    base_model_folder,
    known_queries,
    quality_metadata,
    sample_markdown,
)


class SyntheticQueriesConfig(dg.Config, SamplingSettings):
    """Generation: the decoding fields of `lib.generation.SamplingSettings`, and what becomes of the outputs."""

    queries_per_document: int = Field(default=10, description="Parsed queries kept per document.")
    quality_filter: bool = Field(default=True, description="Keep only grounded, well-formed queries (every content "
                                 "word occurs in the document; no role prefixes, code-like strings or one-word "
                                 "fragments); off for the ablation.")
    shard_size: int = Field(default=256, description="Documents per checkpointed shard.")
    max_documents: int = Field(default=0, description="Generate for a seeded random sample of this many documents "
                               "(0 = every document, the method; a sample bounds CPU-only runs on large corpora).")


def build_synthetic_queries_asset(
    name: str, adapter_asset: str | None, use_metadata: bool, description: str
) -> dg.AssetsDefinition:
    """Generation by the base SLM plus `adapter_asset` (the compact student prompt), or, with no adapter, by the
    base SLM prompted few-shot with the teacher's chat prompt (UDAPDR-style generation)."""

    ins = {"documents": dg.AssetIn("documents"), "queries": dg.AssetIn("queries"),
           "train_pairs": dg.AssetIn("train_pairs"), "click_log_pairs": dg.AssetIn("click_log_pairs"),
           "base_slm": dg.AssetIn("base_slm")}
    if adapter_asset:  # the student: its adapter, and the teacher's answers it is compared with
        ins |= {"adapter": dg.AssetIn(adapter_asset, dagster_type=Path),
                "teacher_demonstrations": dg.AssetIn("teacher_demonstrations", dagster_type=pl.DataFrame)}

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="generation",
        ins=ins,
        description=description,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30),
        kinds={"pytorch"},
        **MODEL_STEP,
    )
    def _synthetic_queries(
        context: dg.AssetExecutionContext, config: SyntheticQueriesConfig, storage: StorageResource,
        generator: GeneratorResource, documents: pl.DataFrame, queries: pl.DataFrame, train_pairs: pl.DataFrame,
        click_log_pairs: Tables, base_slm: Path, **student,
    ) -> dg.MaterializeResult:
        dataset = context.partition_key
        spec = storage.dataset_spec(dataset)
        documents = generation_documents(documents, config.max_documents, config.seed)
        known = known_queries(train_pairs, all_queries(queries, click_log_pairs))
        base = str(base_model_folder(base_slm))
        adapter = student["adapter"] / LORA_FOLDER if student else None
        if adapter is not None:
            prompts = student_prompts(documents, known, spec.prompt_style, use_metadata)
        else:
            prompts = few_shot_prompts(base, documents, known, spec.prompt_style, use_metadata)
        sampling = SamplingSettings.of(config)
        backend_name = []

        def backend_factory():
            backend = make_backend(generator.backend, base, adapter, device=generator.device,
                                   batch_size=generator.batch_size, dtype=generator.dtype, tensor_parallel_size=generator.tensor_parallel_size,
                                   gpu_memory_utilization=generator.gpu_memory_utilization)
            backend_name.append(backend.name)
            return backend

        # the adapter's weights file identifies it: a retrained adapter invalidates every checkpoint
        adapter_stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns if adapter else None
        raw, report = generate_samples(
            documents["doc_id"].to_list(), prompts, backend_factory, sampling,
            checkpoint_dir=storage.step_dir(f"{name}_shards", dataset), shard_size=config.shard_size,
            settings={"base": base, "adapter": str(adapter) if adapter else None, "adapter_stamp": adapter_stamp,
                      "backend": generator.backend, "dtype": generator.dtype},
            progress=context.log.info,
        )
        parsed, stats = parse_outputs(raw["doc_id"].to_list(), raw["text"].to_list(), documents, known,
                                      spec.prompt_style, config.queries_per_document)
        parsed = merge_samples(parsed, config.queries_per_document)
        stats["queries_per_document"] = parsed.height / max(documents.height, 1)
        judged = judge_queries(parsed, documents)  # one verdict per row, for the filter and every figure
        kept, dropped = keep_grounded(judged, parsed.columns) if config.quality_filter else (parsed, {})
        written_quality = judged_quality(judged, documents.height)
        kept_quality = judged_quality(judged.filter(pl.col("grounded")) if config.quality_filter else judged,
                                      documents.height)
        agreement = (student_teacher_agreement(adapter, parsed, student["teacher_demonstrations"],
                                               documents["doc_id"].to_list())
                     if adapter is not None else None)
        docs_per_second = report.docs_per_second / max(1, config.samples)  # documents with all their samples
        context.log.info(
            f"{name}: {parsed.height} queries written for {documents.height} documents "
            f"({docs_per_second:.2f} docs/s): grounded {written_quality['grounded_share']:.1%}, junk "
            f"{written_quality['junk_share']:.1%}, {written_quality['distinct_queries_per_document']:.1f} distinct per "
            f"document; kept {kept.height} after the quality filter"
            + (f"; agreement with the teacher on held-out documents F1 {agreement['f1']:.3f}" if agreement else ""))
        return dg.MaterializeResult(
            value=Tables(kept, raw=raw, judged=judged),
            metadata={
                "backend": backend_name[0] if backend_name else "checkpoints only",
                "use_metadata": use_metadata,
                "documents": documents.height,
                "samples_per_document": max(1, config.samples),
                "shards": report.shards,
                "shards_reused": report.shards_reused,
                "docs_per_second": round(docs_per_second, 3),
                "outputs_per_second": round(report.docs_per_second, 3),
                "generated_tokens_per_second": round(report.tokens_per_second, 1),
                "queries_per_document": round(stats["queries_per_document"], 2),
                "parse_rate": round(stats["parse_rate"], 4),
                "duplicate_rate": round(duplicate_rate(kept), 4),
                "empty_outputs": int((raw["text"].str.strip_chars() == "").sum()),
                "rejected": dg.MetadataValue.json(stats["rejected"]),
                "quality_filter": config.quality_filter,
                "quality_filter_dropped": dg.MetadataValue.json(dropped),
                **quality_metadata(written_quality, "written"),
                **quality_metadata(kept_quality, "kept"),
                **({f"agreement_{k}": round(v, 4) for k, v in agreement.items() if k != "documents"}
                   | {"agreement_documents": agreement["documents"]} if agreement else {}),
                "sample": dg.MetadataValue.md(sample_markdown(judged, documents)),
            },
        )

    return _synthetic_queries


synthetic_queries = build_synthetic_queries_asset(
    "synthetic_queries", "lora_adapter", use_metadata=True,
    description="Queries the distilled small LM writes for every document from its title, known queries and metadata.",
)
synthetic_queries_no_metadata = build_synthetic_queries_asset(
    "synthetic_queries_no_metadata", "lora_adapter_no_metadata", use_metadata=False,
    description="Ablation: queries from the student distilled and prompted without metadata (title and known queries).",
)
synthetic_queries_udapdr = build_synthetic_queries_asset(
    "synthetic_queries_udapdr", None, use_metadata=False,
    description="UDAPDR-style baseline: the undistilled SLM prompted few-shot with each document's title only.",
)
generation_assets = [synthetic_queries, synthetic_queries_no_metadata, synthetic_queries_udapdr]


def generation_documents(documents: pl.DataFrame, max_documents: int, seed: int) -> pl.DataFrame:
    """Every document in doc_id order, or a seeded random sample of `max_documents` of them (0 = all)."""
    documents = documents.sort("doc_id")
    if max_documents <= 0 or documents.height <= max_documents:
        return documents
    return documents[np.sort(np.random.default_rng(seed).choice(documents.height, size=max_documents, replace=False))]


def few_shot_prompts(base_model_path: str, documents, known: dict, style: str, use_metadata: bool) -> list[str]:
    """The teacher's few-shot chat prompt rendered with the base model's chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    return [
        tokenizer.apply_chat_template(
            teacher_messages(row["title"], row["metadata"] if use_metadata else "", known.get(row["doc_id"], []), style),
            add_generation_prompt=True, tokenize=False,
        )
        for row in documents.iter_rows(named=True)
    ]


def student_teacher_agreement(adapter: Path, written: pl.DataFrame, teacher_demonstrations: pl.DataFrame,
                              asked: list[str]) -> dict | None:
    """Set agreement (normalised queries) of the student with the teacher on the demonstration documents the
    LoRA adapter was never trained on (its held-out slice) that generation was asked about."""
    from ..lib.quality import set_agreement
    from ..lib.storage import read_json

    report_path = adapter / "sft_report.json"
    if not report_path.exists():
        return None
    doc_ids = sorted(set(read_json(report_path).get("holdout_keys", [])) & set(asked))
    if not doc_ids:
        return None
    return set_agreement(written, teacher_demonstrations, doc_ids)


# ----------------------------------------------------------------------------------------------- asset checks

DUPLICATE_RATE_WARN = 0.2  # synthetic queries: share of queries whose normalised text occurs earlier
EMPTY_OUTPUT_RATE_WARN = 0.1  # synthetic queries: share of documents whose raw generation is empty
SYNTHETIC_QUERY_ASSETS = tuple(a.key.to_user_string() for a in generation_assets)


def empty_output_rate(raw: pl.DataFrame) -> float:
    """Share of generations (table `raw`, column `text`) that are null or whitespace only."""
    return empty_text_count(raw["text"]) / raw.height if raw.height else 0.0


def evaluate_synthetic_queries(asset: str) -> Evaluate:
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        queries = storage.read_table(asset, dataset)
        raw = storage.read_table(asset, dataset, "raw")
        duplicates, empties = duplicate_rate(queries), empty_output_rate(raw)
        metadata = {
            "queries": queries.height,
            "documents_with_queries": queries["doc_id"].n_unique(),
            "generations": raw.height,
            "duplicate_rate": rounded(duplicates),
            "empty_output_rate": rounded(empties),
            "duplicate_rate_warn_above": DUPLICATE_RATE_WARN,
            "empty_output_rate_warn_above": EMPTY_OUTPUT_RATE_WARN,
        }
        if queries.height == 0:
            judged_path = storage.table_path(asset, dataset, "judged")
            written = pl.read_parquet(judged_path).height if judged_path.exists() else 0
            if written:  # the writer produced queries, none grounded: nothing to map, nothing poisonous either
                return fail(WARN, f"the quality filter kept none of the {written} queries parsed from {raw.height} "
                                  "generations", **metadata)
            return fail(ERROR, f"no synthetic queries parsed from {raw.height} generations", **metadata)
        high = [f"{name} {value:.1%} > {limit:.0%}" for name, value, limit in
                (("duplicate rate", duplicates, DUPLICATE_RATE_WARN), ("empty-output rate", empties, EMPTY_OUTPUT_RATE_WARN))
                if value > limit]
        if high:
            return fail(WARN, "; ".join(high), **metadata)
        return ok(f"{queries.height} queries, duplicate rate {duplicates:.1%}, empty outputs {empties:.1%}", **metadata)

    return evaluate


synthetic_queries_checks = [
    build_check(
        asset, "generation_quality", evaluate_synthetic_queries(asset), blocking=True,
        description=f"ERROR when no query was parsed; WARN when the quality filter kept none, the duplicate rate > "
                    f"{DUPLICATE_RATE_WARN} or the empty-output rate > {EMPTY_OUTPUT_RATE_WARN}.",
    )
    for asset in SYNTHETIC_QUERY_ASSETS
]
# judged against the parsed queries before the quality filter (table `judged`)
query_quality_checks = [build_query_quality_check(asset, "judged") for asset in SYNTHETIC_QUERY_ASSETS]
generation_checks = [*synthetic_queries_checks, *query_quality_checks]
