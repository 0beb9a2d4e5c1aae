"""Synthetic queries at scale: the distilled small LM writes queries for every document, shard by shard."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from ..lib.demonstrations import (duplicate_rate, merge_samples, parse_outputs, student_prompts,
                                  top_query_document_share)
from ..lib.generation import SamplingSettings, ShardReport, generate_samples, make_backend, shard_count
from ..lib.prompts import teacher_messages
from ..lib.quality import judge_queries, judged_quality, keep_grounded
from ..partitions import dataset_partitions
from ..resources import GeneratorResource, StorageResource, Tables, TrainingView
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
from .common import (LORA_FOLDER, MODEL_OP, MODEL_STEP, base_model_folder, generation_sources_of, quality_metadata,
                     sample_table, settings_table)


class SyntheticQueriesConfig(dg.Config, SamplingSettings):
    """Generation: the decoding fields of `lib.generation.SamplingSettings`, and what becomes of the outputs."""

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


@dataclass
class GenerationWork:
    """What every step of one generation asset computes alike: the sources it writes for (`documents`: the
    documents, or the train queries in the documents_for_queries direction), prompts, decoding and checkpoints."""

    documents: pl.DataFrame
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
        return shard_count(self.documents.height, self.shard_size)

    def generate(self, progress, shards=None):
        return generate_samples(self.documents["doc_id"].to_list(), self.prompts, self.backend_factory, self.sampling,
                                checkpoint_dir=self.checkpoint_dir, shard_size=self.shard_size, settings=self.settings,
                                progress=progress, shards=shards)


def generation_work(name: str, dataset: str, use_metadata: bool, config: SyntheticQueriesConfig,
                    storage: StorageResource, generator: GeneratorResource, view: TrainingView, base_slm: Path,
                    adapter: Path | None) -> GenerationWork:
    spec = storage.dataset_spec(dataset)
    documents, known = sources_to_generate_for(spec.direction, config, view)
    base = str(base_model_folder(base_slm))
    adapter = adapter / LORA_FOLDER if adapter is not None else None
    if adapter is not None:
        prompts = student_prompts(documents, known, spec.prompt_style, use_metadata)
    else:
        prompts = few_shot_prompts(base, documents, known, spec.prompt_style, use_metadata)
    backend_names = []
    backend_factory = backend_factory_of(generator, base, adapter, backend_names)
    return GenerationWork(documents, known, prompts, adapter, SamplingSettings.of(config),
                          storage.step_dir(f"{name}_shards", dataset), checkpoint_settings(generator, base, adapter),
                          backend_factory, backend_names, shard_size=config.shard_size)


def checkpoint_settings(generator: GeneratorResource, base: str, adapter: Path | None) -> dict:
    """What identifies a generation's checkpoints besides its prompts and decoding: the model and backend. The
    adapter's weights file identifies the adapter: a retrained adapter invalidates every checkpoint."""
    adapter_stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns if adapter else None
    return {"base": base, "adapter": str(adapter) if adapter else None, "adapter_stamp": adapter_stamp,
            "backend": generator.backend, "dtype": generator.dtype}


def sources_to_generate_for(direction: str, config: SyntheticQueriesConfig,
                            view: TrainingView) -> tuple[pl.DataFrame, dict]:
    """The sources (`generation_sources_of`) this run writes for, all or `max_documents` of them, and their known
    outputs."""
    sources, known = generation_sources_of(direction, view)
    return generation_documents(sources, config.max_documents, config.seed), known


def written_queries(raw: pl.DataFrame, documents: pl.DataFrame, known: dict, style: str,
                    config: SyntheticQueriesConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict, dict]:
    """Raw outputs (every sample) parsed into one query list per source, judged (one verdict per row, for the
    filter and every figure) and filtered: (parsed, judged, kept, dropped by reason, parse statistics)."""
    parsed, stats = parse_outputs(raw["doc_id"].to_list(), raw["text"].to_list(), documents, known, style,
                                  config.queries_per_document)
    parsed = merge_samples(parsed, config.queries_per_document)
    stats["queries_per_document"] = parsed.height / max(documents.height, 1)
    judged = judge_queries(parsed, documents)
    kept, dropped = keep_grounded(judged, parsed.columns) if config.quality_filter else (parsed, {})
    return parsed, judged, kept, dropped, stats


def backend_factory_of(generator: GeneratorResource, base: str, adapter: Path | None, names: list) -> Callable:
    """A factory of the configured generation backend for `base` (+ `adapter`); each backend's name goes to
    `names`."""
    def backend_factory():
        backend = make_backend(generator.backend, base, adapter, device=generator.device,
                               batch_size=generator.batch_size, dtype=generator.dtype,
                               tensor_parallel_size=generator.tensor_parallel_size,
                               gpu_memory_utilization=generator.gpu_memory_utilization)
        names.append(backend.name)
        return backend

    return backend_factory


def shard_groups(config: SyntheticQueriesConfig, documents: int) -> int:
    return max(1, min(config.parallel_shards, shard_count(documents, config.shard_size)))



def build_synthetic_queries_asset(
    name: str, adapter_asset: str | None, use_metadata: bool, description: str
) -> dg.AssetsDefinition:
    """Generation by the base SLM plus `adapter_asset` (the compact student prompt), or, with no adapter, by the
    base SLM prompted few-shot with the teacher's chat prompt (UDAPDR-style generation).

    A graph of steps: `plan` splits the shards into `parallel_shards` groups, one `generate` step per group
    writes its shards' checkpoints (the steps run in parallel up to the `gpu` pool's limit, each resumable), and
    `write` reads every shard back, parses, judges and filters the queries into the table.

    The training view comes with `source`: the teacher's demonstrations for a student (which the student's
    agreement is measured against), the train pairs for few-shot generation."""
    student = adapter_asset is not None
    model_ins = {"base_slm": dg.In(Path), **({"adapter": dg.In(Path)} if student else {})}
    table_ins = {"source": dg.In(Tables)}

    @dg.op(name=f"{name}__plan", out=dg.DynamicOut(int), ins=table_ins)
    def plan(context: dg.OpExecutionContext, config: SyntheticQueriesConfig, storage: StorageResource,
             source: Tables):
        """One output per shard group (at most one per shard)."""
        direction = storage.dataset_spec(context.partition_key).direction
        n = sources_to_generate_for(direction, config, TrainingView(source))[0].height
        for group in range(shard_groups(config, n)):
            yield dg.DynamicOutput(group, mapping_key=f"shards_{group}")

    @dg.op(name=f"{name}__generate", ins={"group": dg.In(int), **table_ins, **model_ins},
           retry_policy=dg.RetryPolicy(max_retries=2, delay=30), **MODEL_OP)
    def generate(context: dg.OpExecutionContext, config: SyntheticQueriesConfig, storage: StorageResource,
                 generator: GeneratorResource, group: int, source: Tables, base_slm: Path,
                 adapter: Path | None = None) -> dict:
        """The shards of one group (shard s when s mod groups == group), checkpointed: a rerun resumes."""
        work = generation_work(name, context.partition_key, use_metadata, config, storage, generator,
                               TrainingView(source), base_slm, adapter)
        groups = shard_groups(config, work.documents.height)
        shards = [s for s in range(work.shards) if s % groups == group]
        context.log.info(f"{name}: shard group {group + 1}/{groups}: {len(shards)} of {work.shards} shards")
        _, report = work.generate(context.log.info, shards)
        return {"report": dataclasses.asdict(report), "backend": work.backend_names[:1]}

    @dg.op(name=f"{name}__write", ins={"reports": dg.In(list[dict]), **table_ins, **model_ins},
           out=dg.Out(Tables), retry_policy=dg.RetryPolicy(max_retries=2, delay=30), **MODEL_OP)
    def write(context: dg.OpExecutionContext, config: SyntheticQueriesConfig, storage: StorageResource,
              generator: GeneratorResource, reports: list[dict], source: Tables, base_slm: Path,
              adapter: Path | None = None):
        """Every shard read back (a shard no group wrote is generated here), parsed, judged and filtered."""
        dataset, view = context.partition_key, TrainingView(source)
        spec = storage.dataset_spec(dataset)
        work = generation_work(name, dataset, use_metadata, config, storage, generator, view, base_slm, adapter)
        raw, own = work.generate(context.log.info)
        # the groups' reports say what was generated where; this step only generated what they left (its reused
        # shards are the groups')
        report = ShardReport.total([*(ShardReport(**r["report"]) for r in reports),
                                    dataclasses.replace(own, shards=0, shards_reused=0, documents=0)])
        backend = next((b[0] for b in [*(r["backend"] for r in reports), work.backend_names] if b), None)
        documents = work.documents
        parsed, judged, kept, dropped, stats = written_queries(raw, documents, work.known, spec.prompt_style, config)
        written_quality = judged_quality(judged, documents.height)
        kept_quality = judged_quality(judged.filter(pl.col("grounded")) if config.quality_filter else judged,
                                      documents.height)
        agreement = (student_teacher_agreement(work.adapter, parsed, source.data, documents["doc_id"].to_list())
                     if student else None)
        samples = max(1, config.samples)
        docs_per_second = report.docs_per_second / samples  # documents with all their samples, per generating step
        context.log.info(
            f"{name}: {parsed.height} queries written for {documents.height} documents "
            f"({docs_per_second:.2f} docs/s per step): grounded {written_quality['grounded_share']:.1%}, junk "
            f"{written_quality['junk_share']:.1%}, {written_quality['distinct_queries_per_document']:.1f} distinct per "
            f"document; kept {kept.height} after the quality filter"
            + (f"; agreement with the teacher on held-out documents F1 {agreement['f1']:.3f}" if agreement else ""))
        return dg.Output(
            Tables(kept, raw=raw, judged=judged, settings=settings_table(config)),
            metadata={
                "backend": backend or "checkpoints only",
                "use_metadata": use_metadata,
                "documents": documents.height,
                "samples_per_document": samples,
                "parallel_steps": len(reports),
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
                "sample": sample_table(judged, documents),
            },
        )

    ops = (plan, generate, write)
    config = dg.ConfigMapping(config_fn=lambda values: {op.name: {"config": dict(values)} for op in ops},
                              config_schema=SyntheticQueriesConfig.to_config_schema())
    common = dict(name=name, partitions_def=dataset_partitions, group_name="generation", description=description,
                  kinds={"pytorch"}, config=config, tags=MODEL_STEP["tags"])
    if student:
        @dg.graph_asset(ins={"source": dg.AssetIn("teacher_demonstrations"), "base_slm": dg.AssetIn("base_slm"),
                             "adapter": dg.AssetIn(adapter_asset)}, **common)
        def _student(source, base_slm, adapter):
            reports = plan(source).map(lambda group: generate(group, source, base_slm, adapter)).collect()
            return write(reports, source, base_slm, adapter)

        return _student

    @dg.graph_asset(ins={"source": dg.AssetIn("train_pairs"), "base_slm": dg.AssetIn("base_slm")}, **common)
    def _few_shot(source, base_slm):
        reports = plan(source).map(lambda group: generate(group, source, base_slm)).collect()
        return write(reports, source, base_slm)

    return _few_shot


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

DUPLICATE_RATE_WARN = 0.2  # synthetic queries: share of queries that repeat one of the same document's
TOP_QUERY_SHARE_WARN = 0.2  # synthetic queries: share of documents the most widely written text was written for
TOP_QUERY_MIN_DOCUMENTS = 5  # ... and in how many at least (on 4 documents any shared text is 25%)
EMPTY_OUTPUT_RATE_WARN = 0.1  # synthetic queries: share of documents whose raw generation is empty
SYNTHETIC_QUERY_ASSETS = tuple(a.key.to_user_string() for a in generation_assets)


def empty_output_rate(raw: pl.DataFrame) -> float:
    """Share of generations (table `raw`, column `text`) that are null or whitespace only."""
    return empty_text_count(raw["text"]) / raw.height if raw.height else 0.0


def evaluate_synthetic_queries(asset: str) -> Evaluate:
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        queries, raw = storage.read_asset_tables(asset, dataset, "data", "raw")
        duplicates, empties = duplicate_rate(queries), empty_output_rate(raw)
        top_share = top_query_document_share(queries)
        collapsed = top_share if top_share * queries["doc_id"].n_unique() >= TOP_QUERY_MIN_DOCUMENTS else 0.0
        metadata = {
            "queries": queries.height,
            "documents_with_queries": queries["doc_id"].n_unique(),
            "generations": raw.height,
            "duplicate_rate": rounded(duplicates),
            "top_query_document_share": rounded(top_share),
            "empty_output_rate": rounded(empties),
            "duplicate_rate_warn_above": DUPLICATE_RATE_WARN,
            "top_query_document_share_warn_above": TOP_QUERY_SHARE_WARN,
            "empty_output_rate_warn_above": EMPTY_OUTPUT_RATE_WARN,
        }
        if queries.height == 0:
            judged_path = storage.table_path(asset, dataset, "judged")
            written = pl.read_parquet(judged_path).height if judged_path.exists() else 0
            if written:  # the writer produced queries, none grounded: nothing to map, nothing poisonous either
                return fail(WARN, f"the quality filter kept none of the {written} queries parsed from {raw.height} "
                                  "generations", **metadata)
            return fail(ERROR, f"no synthetic queries parsed from {raw.height} generations", **metadata)
        high = [problem for value, limit, problem in (
            (duplicates, DUPLICATE_RATE_WARN,
             f"duplicate rate within documents {duplicates:.1%} > {DUPLICATE_RATE_WARN:.0%}"),
            (collapsed, TOP_QUERY_SHARE_WARN,
             f"one query written for {collapsed:.1%} > {TOP_QUERY_SHARE_WARN:.0%} of documents"),
            (empties, EMPTY_OUTPUT_RATE_WARN, f"empty-output rate {empties:.1%} > {EMPTY_OUTPUT_RATE_WARN:.0%}"),
        ) if value > limit]
        if high:
            return fail(WARN, "; ".join(high), **metadata)
        return ok(f"{queries.height} queries, duplicate rate within documents {duplicates:.1%}, the most shared text "
                  f"for {top_share:.1%} of documents, empty outputs {empties:.1%}", **metadata)

    return evaluate


synthetic_queries_checks = [
    build_check(
        asset, "generation_quality", evaluate_synthetic_queries(asset), blocking=True,
        description=f"ERROR when no query was parsed; WARN when the quality filter kept none, when a document's queries "
                    f"repeat each other (> {DUPLICATE_RATE_WARN}), when one text was written for more than "
                    f"{TOP_QUERY_SHARE_WARN:.0%} of the documents and at least {TOP_QUERY_MIN_DOCUMENTS} (a collapsed "
                    f"generator) or the empty-output rate > {EMPTY_OUTPUT_RATE_WARN}.",
    )
    for asset in SYNTHETIC_QUERY_ASSETS
]
# judged against the parsed queries before the quality filter (table `judged`)
query_quality_checks = [build_query_quality_check(asset) for asset in SYNTHETIC_QUERY_ASSETS]
generation_checks = [*synthetic_queries_checks, *query_quality_checks]
