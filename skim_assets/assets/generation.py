"""Synthetic queries at scale: the distilled small LM writes queries for every document, shard by shard."""

import dataclasses
from pathlib import Path

import dagster as dg
import polars as pl

from ..lib.checks import ERROR, WARN, Outcome, empty_text_count, fail, ok, rounded
from ..lib.demonstrations import duplicate_rate, top_query_document_share
from ..lib.generation import ShardReport
from ..lib.layout import shards_state
from ..lib.quality import judged_quality
from ..lib.student import (
    GenerationSettings,
    GenerationWork,
    WrittenQueries,
    base_model_folder,
    generation_work,
    sampled_sources,
    student_teacher_agreement,
    written_queries,
)
from ..partitions import dataset_partitions
from ..resources import GeneratorResource, StorageResource, Tables, TrainingView
from .common import (
    MODEL_OP,
    MODEL_STEP,
    build_check,
    build_query_quality_check,
    quality_metadata,
    sample_table,
    settings_table,
)


class SyntheticQueriesConfig(dg.Config, GenerationSettings):
    """Generation: the fields of `lib.student.GenerationSettings` (decoding, sources, the quality filter)."""


def work_of(name: str, dataset: str, use_metadata: bool, config: SyntheticQueriesConfig, storage: StorageResource,
            generator: GeneratorResource, view: TrainingView, base_slm: Path, adapter: Path | None) -> GenerationWork:
    """What every step of one generation asset computes alike (`lib.student.generation_work`), its shards
    checkpointed under `<root>/<name>_shards/<dataset>/`."""
    spec = storage.dataset_spec(dataset)
    sources, known = view.generation_sources(spec.direction)
    return generation_work(sources, known, spec.prompt_style, use_metadata, config, generator,
                           base_model_folder(base_slm), adapter, storage.step_dir(shards_state(name), dataset))


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
        sources, _ = TrainingView(source).generation_sources(storage.dataset_spec(context.partition_key).direction)
        for group in range(config.shard_groups(sampled_sources(sources, config.max_documents, config.seed).height)):
            yield dg.DynamicOutput(group, mapping_key=f"shards_{group}")

    @dg.op(name=f"{name}__generate", ins={"group": dg.In(int), **table_ins, **model_ins},
           retry_policy=dg.RetryPolicy(max_retries=2, delay=30), **MODEL_OP)
    def generate(context: dg.OpExecutionContext, config: SyntheticQueriesConfig, storage: StorageResource,
                 generator: GeneratorResource, group: int, source: Tables, base_slm: Path,
                 adapter: Path | None = None) -> dict:
        """The shards of one group (shard s when s mod groups == group), checkpointed: a rerun resumes."""
        work = work_of(name, context.partition_key, use_metadata, config, storage, generator, TrainingView(source),
                       base_slm, adapter)
        groups = config.shard_groups(work.sources.height)
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
        dataset = context.partition_key
        work = work_of(name, dataset, use_metadata, config, storage, generator, TrainingView(source), base_slm,
                       adapter)
        raw, own = work.generate(context.log.info)
        # the groups' reports say what was generated where; this step only generated what they left (its reused
        # shards are the groups')
        report = ShardReport.total([*(ShardReport(**r["report"]) for r in reports),
                                    dataclasses.replace(own, shards=0, shards_reused=0, documents=0)])
        backend = next((b[0] for b in [*(r["backend"] for r in reports), work.backend_names] if b), None)
        written = written_queries(raw, work.sources, work.known, storage.dataset_spec(dataset).prompt_style, config)
        agreement = (student_teacher_agreement(work.adapter, written.parsed, source.data,
                                               work.sources["doc_id"].to_list()) if student else None)
        quality = judged_quality(written.judged, work.sources.height)  # of what was written, before the filter
        metadata = generation_metadata(config, work.sources, raw, written, quality, report, agreement)
        context.log.info(generation_summary(name, metadata, quality, agreement))
        return dg.Output(
            Tables(written.kept, raw=raw, judged=written.judged, settings=settings_table(config)),
            metadata=metadata | {"backend": backend or "checkpoints only", "use_metadata": use_metadata,
                                 "parallel_steps": len(reports), "sample": sample_table(written.judged, work.sources)})

    return generation_graph_asset(name, adapter_asset, description, plan, generate, write)


def generation_graph_asset(name: str, adapter_asset: str | None, description: str, plan, generate, write):
    """The graph asset of a generation's three ops, one run config for all three (`SyntheticQueriesConfig`)."""
    ops = (plan, generate, write)
    config = dg.ConfigMapping(config_fn=lambda values: {op.name: {"config": dict(values)} for op in ops},
                              config_schema=SyntheticQueriesConfig.to_config_schema())
    common = dict(name=name, partitions_def=dataset_partitions, group_name="generation", description=description,
                  kinds={"pytorch"}, config=config, tags=MODEL_STEP["tags"])
    if adapter_asset is not None:
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


def generation_metadata(config: GenerationSettings, sources: pl.DataFrame, raw: pl.DataFrame,
                        written: WrittenQueries, written_quality: dict, report: ShardReport,
                        agreement: dict | None) -> dict:
    """A generation's figures: throughput, parsing, the quality of what was written and of what was kept, and
    the student's agreement with the teacher on documents it was never trained on."""
    samples = max(1, config.samples)
    kept_judged = written.judged.filter(pl.col("grounded")) if config.quality_filter else written.judged
    return {
        "documents": sources.height,
        "samples_per_document": samples,
        "shards": report.shards,
        "shards_reused": report.shards_reused,
        # documents with all their samples, per generating step
        "docs_per_second": round(report.docs_per_second / samples, 3),
        "outputs_per_second": round(report.docs_per_second, 3),
        "generated_tokens_per_second": round(report.tokens_per_second, 1),
        "queries_written": written.parsed.height,
        "queries_kept": written.kept.height,
        "queries_per_document": round(written.stats["queries_per_document"], 2),
        "parse_rate": round(written.stats["parse_rate"], 4),
        "duplicate_rate": round(duplicate_rate(written.kept), 4),
        "empty_outputs": int((raw["text"].str.strip_chars() == "").sum()),
        "rejected": dg.MetadataValue.json(written.stats["rejected"]),
        "quality_filter": config.quality_filter,
        "quality_filter_dropped": dg.MetadataValue.json(written.dropped),
        **quality_metadata(written_quality, "written"),
        **quality_metadata(judged_quality(kept_judged, sources.height), "kept"),
        **({f"agreement_{k}": round(v, 4) for k, v in agreement.items() if k != "documents"}
           | {"agreement_documents": agreement["documents"]} if agreement else {}),
    }


def generation_summary(name: str, metadata: dict, written_quality: dict, agreement: dict | None) -> str:
    """The generation's log line."""
    return (f"{name}: {metadata['queries_written']} queries written for {metadata['documents']} documents "
            f"({metadata['docs_per_second']:.2f} docs/s per step): grounded {written_quality['grounded_share']:.1%}, "
            f"junk {written_quality['junk_share']:.1%}, {written_quality['distinct_queries_per_document']:.1f} "
            f"distinct per document; kept {metadata['queries_kept']} after the quality filter"
            + (f"; agreement with the teacher on held-out documents F1 {agreement['f1']:.3f}" if agreement else ""))


# ----------------------------------------------------------------------------------------------- asset checks

DUPLICATE_RATE_WARN = 0.2  # synthetic queries: share of queries that repeat one of the same document's
TOP_QUERY_SHARE_WARN = 0.2  # synthetic queries: share of documents the most widely written text was written for
TOP_QUERY_MIN_DOCUMENTS = 5  # ... and in how many at least (on 4 documents any shared text is 25%)
EMPTY_OUTPUT_RATE_WARN = 0.1  # synthetic queries: share of documents whose raw generation is empty
SYNTHETIC_QUERY_ASSETS = tuple(a.key.to_user_string() for a in generation_assets)


def empty_output_rate(raw: pl.DataFrame) -> float:
    """Share of generations (table `raw`, column `text`) that are null or whitespace only."""
    return empty_text_count(raw["text"]) / raw.height if raw.height else 0.0


def evaluate_synthetic_queries(synthetic: Tables) -> Outcome:
    queries, raw = synthetic.data, synthetic["raw"]
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
        written = synthetic["judged"].height if "judged" in synthetic else 0
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


synthetic_queries_checks = [
    build_check(
        asset, "generation_quality", evaluate_synthetic_queries, blocking=True,
        description=f"ERROR when no query was parsed; WARN when the quality filter kept none, when a document's "
                    f"queries repeat each other (> {DUPLICATE_RATE_WARN}), when one text was written for more than "
                    f"{TOP_QUERY_SHARE_WARN:.0%} of the documents and at least {TOP_QUERY_MIN_DOCUMENTS} (a collapsed "
                    f"generator) or the empty-output rate > {EMPTY_OUTPUT_RATE_WARN}.",
    )
    for asset in SYNTHETIC_QUERY_ASSETS
]
# judged against the parsed queries before the quality filter (table `judged`)
query_quality_checks = [build_query_quality_check(asset) for asset in SYNTHETIC_QUERY_ASSETS]
generation_checks = [*synthetic_queries_checks, *query_quality_checks]
