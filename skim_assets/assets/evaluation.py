"""Evaluation: every model on the biased (click-log) and the unbiased (complete-label) test sets, and the
paper's comparison table."""

import math
import time
from pathlib import Path

import dagster as dg
import polars as pl

from ..lib.baselines import click_propensities
from ..lib.catalogue import refresh_catalogue
from ..lib.checks import ERROR, WARN, Outcome, fail, ok, rounded, weights_outside
from ..lib.html_report import REPORT_SECTIONS, ReportContent, comparison_by_base_model, render_report
from ..lib.mapping import UNCLICKED_POSITION, MappingSettings, candidates_to_pairs
from ..lib.methods import BASE_MODELS, METHODS
from ..lib.metrics import evaluate_rankings, ndcg_gains
from ..lib.ova_head import load_head, ova_topk
from ..lib.plots import bar_plot
from ..lib.quality import label_repair
from ..lib.report_tables import methods_first, metrics_table_markdown
from ..lib.retrieval import retrieval_input, topk_frame
from ..lib.spaces import HEAD_FILE, RETRIEVER_FOLDER, document_tower_frozen
from ..lib.storage import peak_rss_mib
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables, TrainingView
from ..resources.artifacts import report_table
from .common import MODEL_STEP, build_check, plot_metadata, pretrained_space, settings_of

EVAL_KS = (1, 5, 10, 25, 100)
# ndcg_gains: binary or graded (the qrels' relevance grades), so a table says which nDCG it shows
TABLE_COLUMNS = ["model", "test_set", "P@1", "P@5", "R@10", "R@25", "R@100", "nDCG@10", "PSP@5", "queries",
                 "ndcg_gains"]
REPORT_METRICS = ("P@5", "R@10", "R@25", "R@100")
TEST_SETS = {"biased": "biased_test_qrels", "unbiased": "unbiased_test_qrels"}
MODEL_ASSETS = {method.models: method for method in METHODS.values()}  # asset -> method


def _models(storage: StorageResource, encoder: EncoderResource, dataset: str, queries: pl.DataFrame,
            documents: pl.DataFrame, folders: dict[str, Path | None]):
    """(model name, method, base model, ranking function or None when not materialized) for the zero-shot encoder
    and every trained model (`folders`: asset -> its folder)."""

    direction = storage.dataset_spec(dataset).direction
    space = pretrained_space(storage, encoder, dataset)
    indexes = {}  # one index per document text (titles, or titles with metadata): loaded once, not per model

    def in_pretrained_space(read, query_vectors):
        """Rank against the pretrained document vectors and their shared index."""
        key = (int(read.documents["title"].hash().sum()), read.doc_max_length)
        if key not in indexes:
            indexes[key] = space.document_index(read.documents["title"].to_list(), read.doc_max_length)
        index = indexes[key]
        indices, scores = index.search(query_vectors(read.queries["text"].to_list(), read.query_max_length, "query"),
                                       max(EVAL_KS))
        return topk_frame(read.queries["query_id"], read.documents["doc_id"], indices, scores)

    def zero_shot():
        return in_pretrained_space(retrieval_input(direction, False, queries, documents, encoder), space.embed)

    def dual_encoder(path, metadata_input=False):
        read = retrieval_input(direction, metadata_input, queries, documents, encoder)
        if document_tower_frozen(Path(path).parent):  # query-side fine-tuned: only the queries need this model
            def rank():
                model = encoder.load(path)
                return in_pretrained_space(read, lambda texts, length, role: model.encode(texts, max_length=length,
                                                                                         role=role))
            return rank
        return lambda: encoder.rank(read.queries, read.documents, max(EVAL_KS), path, read.query_max_length,
                                    read.doc_max_length)

    def ova_head(path, metadata_input=False):
        def rank():
            weights, biases, doc_ids = load_head(path)
            read = retrieval_input(direction, metadata_input, queries, documents, encoder)
            vectors = space.embed(read.queries["text"].to_list(), read.query_max_length, role="query")
            indices, scores = ova_topk(vectors, weights, biases, max(EVAL_KS))
            return topk_frame(queries["query_id"], doc_ids, indices, scores)
        return rank

    yield "zero_shot", "zero_shot", "zero_shot", zero_shot
    for asset, method in MODEL_ASSETS.items():
        folder = folders.get(asset)
        metadata_input = method.metadata_input
        for base_model, model in method.model_names.items():
            if folder is None:
                rank = None
            elif base_model == "dual_encoder":
                rank = dual_encoder(str(folder / RETRIEVER_FOLDER), metadata_input)
            else:
                rank = ova_head(folder / HEAD_FILE, metadata_input)
            yield model, method.name, base_model, rank


def evaluate_models(storage: StorageResource, encoder: EncoderResource, dataset: str, view: TrainingView,
                    test_sets: dict[str, pl.DataFrame], folders: dict[str, Path | None], log):
    """Rank the test queries with every model and score both test sets: (metrics table, rankings, missing)."""
    spec = storage.dataset_spec(dataset)
    documents, queries, train_pairs = view.documents, view.queries, view.clicks
    test_query_ids = pl.concat([t.select("query_id") for t in test_sets.values()]).unique()
    queries = queries.join(test_query_ids, on="query_id").sort("query_id")
    propensities = click_propensities(documents, train_pairs, spec.propensity_a, spec.propensity_b)
    gains = {test_name: ndcg_gains(qrels) for test_name, qrels in test_sets.items()}  # graded qrels: graded nDCG
    rows, rankings, missing = [], [], []
    for model, method, base_model, rank in _models(storage, encoder, dataset, queries, documents, folders):
        if rank is None:  # a partial materialization (e.g. the `skim_core` job) leaves some models out
            missing.append(model)
            continue
        started = time.monotonic()
        ranked = rank()
        rankings.append(ranked.with_columns(pl.lit(model).alias("model")))
        for test_name, qrels in test_sets.items():
            metrics = evaluate_rankings(ranked, qrels, EVAL_KS, propensities, gains=gains[test_name])
            rows.append({"model": model, "method": method, "base_model": base_model, "test_set": test_name, **metrics,
                         "ndcg_gains": gains[test_name]})
        log(f"evaluated {model} in {time.monotonic() - started:.1f}s")
    if missing:
        log(f"not materialized for {dataset}, so not evaluated: {', '.join(missing)}")
    return pl.DataFrame(rows), pl.concat(rankings), missing


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="evaluation",
    ins={asset: dg.AssetIn(asset, metadata={"optional": True}, dagster_type=Path | None) for asset in MODEL_ASSETS},
    **MODEL_STEP,  # encodes the corpus with every model
)
def retrieval_metrics(context: dg.AssetExecutionContext, storage: StorageResource, encoder: EncoderResource,
                      train_pairs: Tables, biased_test_qrels: pl.DataFrame, unbiased_test_qrels: pl.DataFrame,
                      **models: Path | None) -> dg.MaterializeResult:
    """P@k, R@k, nDCG@k and PSP@k (Jain propensities from the click pairs) of the zero-shot encoder and every
    trained model, on the biased and the unbiased test sets; every model's top 100 is side table `rankings`.
    Queries without labels are excluded; models not materialized (a partial run) are listed, not evaluated.
    nDCG takes the relevance grades as gains on a test set whose labels carry grades other than 1 (BEIR's
    graded qrels; clicks are 1), binary gains otherwise: column and metadata `ndcg_gains` say which."""
    dataset = context.partition_key
    test_sets = {"biased": biased_test_qrels, "unbiased": unbiased_test_qrels}
    table, rankings, missing = evaluate_models(storage, encoder, dataset, TrainingView(train_pairs), test_sets,
                                               models, context.log.info)
    shown = methods_first(table).select(TABLE_COLUMNS)
    context.log.info(f"retrieval metrics for {dataset}:\n{metrics_table_markdown(shown)}")
    unbiased = table.filter(pl.col("test_set") == "unbiased")
    return dg.MaterializeResult(
        value=Tables(table, rankings=rankings),
        metadata={
            "metrics": report_table(shown),
            "models_not_materialized": dg.MetadataValue.json(missing),
            "ndcg_gains": dg.MetadataValue.json(dict(zip(table["test_set"], table["ndcg_gains"]))),
            **{f"unbiased_R@100/{r['model']}": round(r["R@100"], 4) for r in unbiased.to_dicts()},
        },
    )


@dg.asset(partitions_def=dataset_partitions, group_name="evaluation",
          deps=["html_report"])
def duckdb_catalogue(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """`<root>/skim.duckdb`: one DuckDB view per artifact table across datasets (e.g. `retrieval_metrics`), for
    SQL over every run; views read the Parquet files at query time. Refreshed after each evaluation, once the
    HTML report (the last report) is written: it only records where the tables are, so its dependency is
    ordering, not an input."""
    try:
        views = refresh_catalogue(storage.layout)
    except Exception as error:  # a user holding the DuckDB file open must not fail the evaluation
        context.log.warning(f"DuckDB catalogue not refreshed: {error}")
        views = []
    return dg.MaterializeResult(metadata={"views": len(views), "view_names": dg.MetadataValue.json(views),
                                          "peak_rss_mib": peak_rss_mib()})


def comparison_table(metrics: pl.DataFrame) -> pl.DataFrame:
    """The paper's Table 1 layout: one row per method, columns <base model> <test set> <metric>."""
    trained = metrics.filter(pl.col("base_model") != "zero_shot")
    wide = trained.select(
        "method",
        (pl.col("base_model") + " " + pl.col("test_set")).alias("column"),
        *REPORT_METRICS,
    ).unpivot(index=["method", "column"], on=list(REPORT_METRICS), variable_name="metric").with_columns(
        (pl.col("column") + " " + pl.col("metric")).alias("column")
    ).pivot(on="column", index="method", values="value")
    order = {m: i for i, m in enumerate(METHODS)}
    columns = [c for c in (f"{b} {t} {m}" for b in BASE_MODELS for t in TEST_SETS for m in REPORT_METRICS)
               if c in wide.columns]
    return wide.sort(pl.col("method").replace_strict(order, return_dtype=pl.Int32)).select("method", *columns)


@dg.asset(partitions_def=dataset_partitions, group_name="evaluation",
          ins={"slm_size_report": dg.AssetIn("slm_size_report", metadata={"optional": True},
                                             dagster_type=pl.DataFrame | None)})
def comparison_report(context: dg.AssetExecutionContext, storage: StorageResource, retrieval_metrics: pl.DataFrame,
                      slm_size_report: pl.DataFrame | None = None) -> dg.MaterializeResult:
    """Every method x base model on the biased and unbiased test sets (P@5, R@10, R@25, R@100), as in the paper's
    Table 1/8: one table per base model in the UI (SKIM and base first), Parquet on disk, and a chart of unbiased
    R@100; and, once `slm_size_report` exists, SKIM by student model (Table 5)."""
    dataset = context.partition_key
    table = comparison_table(retrieval_metrics)
    by_base_model, sections = {}, []
    for base_model, sub in comparison_by_base_model(table):
        # the unbiased test set (every label) first: the headline; the panel is narrow
        sub = methods_first(sub.select("method", *sorted(sub.columns[1:], key=lambda c: c.startswith("biased "))))
        by_base_model[base_model] = report_table(sub)
        sections.append(f"**{base_model}**\n\n" + metrics_table_markdown(sub))
    chart = bar_plot(table["method"].to_list(),
                     {b: table[f"{b} unbiased R@100"].to_list() for b in BASE_MODELS
                      if f"{b} unbiased R@100" in table.columns},
                     f"{dataset}: unbiased R@100 by method", "R@100",
                     storage.figure_path("comparison_report", dataset, "chart.png"))
    by_student = {}
    if slm_size_report is not None:
        students = slm_size_report.select(SLM_SIZE_COLUMNS)
        by_student = {"skim_by_student_model": report_table(students)}
        sections.append("**SKIM by student model** (one-vs-all head over frozen features, unbiased test set; "
                        "`slm_size_report`)\n\n" + metrics_table_markdown(students))
    context.log.info(f"comparison for {dataset}:\n" + "\n\n".join(sections))
    by_method = dict(zip(table["method"].to_list(), table["dual_encoder unbiased R@100"].to_list()))
    gain = {"skim_minus_base_unbiased_R@100": round(by_method["skim"] - by_method["base"], 4)} \
        if by_method.get("skim") is not None and by_method.get("base") is not None else {}
    return dg.MaterializeResult(value=table, metadata=gain | by_base_model | by_student | plot_metadata(
        "chart", chart) | {"methods": table.height})


# the SLM-size rows as the comparison shows them (the sweep's own table has every column)
SLM_SIZE_COLUMNS = ("student", "parameters_M", "grounded_share", "junk_share", "distinct_per_document",
                    "pairs_added", "repair_precision", "repair_recall", "R@10", "R@100")
# the training sets label repair judges (`Method.judged_by_label_repair`)
PAIRS_ASSETS = list(dict.fromkeys(m.pairs for m in METHODS.values() if m.judged_by_label_repair))


# why a method's added pairs cannot be judged (precision and recall n/a), where one reason says it better
NOT_JUDGED = {"gandalf": "label-text pairs: no train query, so no held-back label judges them"}
# the UI's label-repair table: the figures a reader compares first (the panel is narrow; Parquet has every column)
LABEL_REPAIR_SHOWN = ("method", "precision", "recall", "pairs_added", "pairs_correct", "documents_repaired", "note")


def label_repair_table(train_pairs: pl.DataFrame, oracle_train_pairs: pl.DataFrame,
                       pairs: dict[str, pl.DataFrame | None]) -> tuple[pl.DataFrame, list[str]]:
    """For every method whose training pairs exist (`pairs`: asset -> table or None): its added pairs judged
    against the held-back train labels (`lib.quality.label_repair`), SKIM first; and the methods not materialized.
    A method none of whose pairs can be judged has precision and recall null, and column `note` says why."""
    rows, missing = [], []
    for method in (m for m in METHODS.values() if m.judged_by_label_repair):
        table = pairs.get(method.pairs)
        if table is None:
            missing.append(method.name)
            continue
        judged = label_repair(table, train_pairs, oracle_train_pairs)
        note = None
        if judged["pairs_added"] and not judged["pairs_judged"]:
            note = NOT_JUDGED.get(method.name, "none of its pairs has a train query with held-back labels")
            judged |= {"precision": None, "recall": None}
        rows.append({"method": method.name, **judged, "note": note})
    return methods_first(pl.DataFrame(rows, schema=LABEL_REPAIR_SCHEMA)), missing


LABEL_REPAIR_SCHEMA = {
    "method": pl.String, "pairs_added": pl.Int64, "pairs_judged": pl.Int64, "pairs_correct": pl.Int64,
    "precision": pl.Float64, "held_back_labels": pl.Int64, "recall": pl.Float64, "documents_repaired": pl.Int64,
    "documents_missing_labels": pl.Int64, "note": pl.String,
}


@dg.asset(partitions_def=dataset_partitions, group_name="evaluation",
          ins={asset: dg.AssetIn(asset, metadata={"optional": True}, dagster_type=pl.DataFrame | None)
               for asset in PAIRS_ASSETS if asset != "oracle_train_pairs"}
          | {"mapped_pairs": dg.AssetIn("mapped_pairs", metadata={"optional": True}, dagster_type=Tables | None)})
def label_repair_report(context: dg.AssetExecutionContext, storage: StorageResource, train_pairs: pl.DataFrame,
                        oracle_train_pairs: pl.DataFrame, mapped_pairs: Tables | None,
                        **pairs: pl.DataFrame | None) -> dg.MaterializeResult:
    """Label repair on a dataset with simulated bias: for every method that adds training pairs, the precision of
    those pairs against the held-back train labels (all train labels minus the clicks), the recall of the held-back
    labels, and how many documents gained a correct label. A figure the paper never reports: a simulation knows the
    labels the clicks missed, so it can tell repair from noise before any retriever is trained."""
    dataset = context.partition_key
    if not storage.dataset_spec(dataset).simulate_bias:
        context.log.info(f"{dataset} is a click log (no simulated bias): no held-back labels to judge against")
    table, missing = label_repair_table(train_pairs, oracle_train_pairs,
                                        pairs | {"oracle_train_pairs": oracle_train_pairs})
    chart = bar_plot(table["method"].to_list(), {"precision": table["precision"].to_list(),
                                                  "recall": table["recall"].to_list()},
                     f"{dataset}: label repair against held-back train labels", "share",
                     storage.figure_path("label_repair_report", dataset, "chart.png"))
    context.log.info("label repair:\n" + metrics_table_markdown(table))
    skim = table.filter((pl.col("method") == "skim") & pl.col("precision").is_not_null())  # judged SKIM pairs
    # SKIM can only repair the labels of the documents its student wrote for: on a sampled generation (the scale
    # profile) its recall over every held-back label says little, its recall over those documents' labels more
    on_generated = {}
    if skim.height and mapped_pairs is not None and pairs.get("augmented_train_pairs") is not None:
        written_for = mapped_pairs["synthetic"].select("doc_id").unique()
        judged = label_repair(pairs["augmented_train_pairs"], train_pairs, oracle_train_pairs, written_for)
        on_generated = {"skim_documents_written_for": written_for.height,
                        "skim_held_back_labels_of_those": judged["held_back_labels"],
                        "skim_recall_on_those": round(judged["recall"], 4)}
        context.log.info(f"SKIM on the {written_for.height} documents its student wrote for: precision "
                         f"{judged['precision']:.3f}, recall {judged['recall']:.3f} of their "
                         f"{judged['held_back_labels']} held-back labels")
    shown_filter = {}
    if skim.height and mapped_pairs is not None:
        shown_filter = shown_filter_repair(mapped_pairs, train_pairs, oracle_train_pairs)
        if shown_filter:
            context.log.info(
                f"the shown-not-clicked filter removed {shown_filter['skim_pairs_shown_not_clicked']} of SKIM's new "
                f"pairs ({shown_filter['skim_shown_not_clicked_correct']} of them held-back labels): precision "
                f"{shown_filter['skim_precision_without_shown_filter']:.3f} without it, "
                f"{skim['precision'][0]:.3f} with")
    return dg.MaterializeResult(value=table, metadata=on_generated | shown_filter | {
        "table": report_table(table.select(LABEL_REPAIR_SHOWN)),
        **plot_metadata("chart", chart),
        "methods_not_materialized": dg.MetadataValue.json(missing),
        **({"skim_precision": round(skim["precision"][0], 4),
            "skim_recall": round(skim["recall"][0], 4),
            "skim_documents_repaired": int(skim["documents_repaired"][0])} if skim.height else {}),
    })


REPORT_FILE = "report.html"
# the report's inputs: every asset a section reads (the comparison is required, the others optional)
REPORT_INPUTS = tuple(dict.fromkeys(section.asset for section in REPORT_SECTIONS))


@dg.asset(partitions_def=dataset_partitions, group_name="evaluation",
          ins={asset: dg.AssetIn(asset, dagster_type=Tables if asset == "comparison_report" else Tables | None,
                                 metadata={} if asset == "comparison_report" else {"optional": True})
               for asset in REPORT_INPUTS})
def html_report(context: dg.AssetExecutionContext, storage: StorageResource, **reports: Tables | None
                ) -> dg.MaterializeResult:
    """One self-contained HTML page with every report table (the comparison, label repair, the sweeps, every
    model's metrics) and every plot drawn for the dataset: open `report.html` in a browser to read the run's
    story in one place (`skim report NAME --html PATH` writes the same page from the stored tables)."""
    dataset = context.partition_key
    tables = {section: (reports[section.asset][section.table]
                        if reports.get(section.asset) is not None and section.table in reports[section.asset]
                        else None) for section in REPORT_SECTIONS}
    figures = storage.figures(dataset)
    folder = storage.staging_dir()
    page = render_report(ReportContent(dataset, tables, figures))
    (folder / REPORT_FILE).write_text(page, encoding="utf-8")
    shown = [s.heading for s, t in tables.items() if t is not None]
    context.log.info(f"HTML report for {dataset}: {len(shown)} tables, {len(figures)} plots, "
                     f"{len(page) / 2**20:.1f} MiB -> {storage.artifact_dir('html_report', dataset) / REPORT_FILE}")
    return dg.MaterializeResult(value=folder, metadata={
        "report": dg.MetadataValue.path(str(storage.artifact_dir("html_report", dataset) / REPORT_FILE)),
        "tables": dg.MetadataValue.json(shown),
        "plots": len(figures),
        "size_mib": round(len(page.encode()) / 2**20, 2),
    })


def shown_filter_repair(mapped_pairs: Tables, train_pairs: pl.DataFrame, oracle_train_pairs: pl.DataFrame) -> dict:
    """What the mapping's shown-not-clicked filter removed from SKIM's pairs, judged against the held-back labels:
    the pairs it removed, how many were held-back labels, and the precision without it. Empty when the filter was
    off or there were no impressions to read (candidates without the annotation)."""
    mapping = settings_of(mapped_pairs, MappingSettings)
    candidates = mapped_pairs["candidates"]
    if mapping.unclicked_cutoff is None or UNCLICKED_POSITION not in candidates.columns:
        return {}
    written_for = mapped_pairs["synthetic"]["doc_id"].to_list()
    args = (candidates, written_for, mapping.threshold, "skim", mapping.click_neighbour_floor)
    with_filter = label_repair(candidates_to_pairs(*args, mapping.unclicked_cutoff), train_pairs, oracle_train_pairs)
    without = label_repair(candidates_to_pairs(*args), train_pairs, oracle_train_pairs)
    return {"skim_pairs_shown_not_clicked": without["pairs_added"] - with_filter["pairs_added"],
            "skim_shown_not_clicked_correct": without["pairs_correct"] - with_filter["pairs_correct"],
            "skim_precision_without_shown_filter": round(without["precision"], 4),
            "skim_recall_without_shown_filter": round(without["recall"], 4)}


# ----------------------------------------------------------------------------------------------- asset checks

REPAIR_PRECISION_WARN = 0.5  # label repair: share of SKIM's added pairs that are held-back train labels
METRIC_TOLERANCE = 1e-9  # float slack on metrics in [0, 1]
METRICS_TEST_SET = "unbiased"
METRICS_COMPARED = ("skim_retriever", "base_retriever", "R@100")


def evaluate_label_repair(report: Tables) -> Outcome:
    table = report.data
    skim = table.filter(pl.col("method") == "skim")
    if skim.height == 0:
        return ok("SKIM's pairs were not materialized: nothing to judge")
    row = skim.row(0, named=True)
    metadata = {k: rounded(v) if isinstance(v, float) else v for k, v in row.items()} | {
        "precision_warn_below": REPAIR_PRECISION_WARN}
    if row["held_back_labels"] == 0:
        return ok("no held-back train labels (no simulated bias): precision not judged", **metadata)
    summary = (f"SKIM's added pairs: precision {row['precision']:.1%}, recall of held-back labels {row['recall']:.1%}, "
               f"{row['documents_repaired']} documents repaired")
    if row["precision"] < REPAIR_PRECISION_WARN:
        return fail(WARN, f"{summary}: precision < {REPAIR_PRECISION_WARN:.0%}", **metadata)
    return ok(summary, **metadata)


def metric_columns(metrics: pl.DataFrame) -> list[str]:
    """P@k, R@k, nDCG@k, PSP@k, ... (the `queries` count is not a metric)."""
    return [c for c in metrics.columns if "@" in c]


def evaluate_metric_ranges(retrieval_metrics: Tables) -> Outcome:
    metrics = retrieval_metrics.data
    columns = metric_columns(metrics)
    bad = {}
    for column in columns:
        # float slack: PSP@k is a ratio of means and comes out as 1.0000000000000002 when it is exactly 1
        n = weights_outside(metrics[column], 0.0, 1.0, tolerance=METRIC_TOLERANCE)
        if n:
            bad[column] = n
    metadata = {"rows": metrics.height, "metric_columns": columns, "values_outside_0_1": sum(bad.values()),
                "bad_columns": bad}
    if not columns:
        return fail(ERROR, "no metric columns (<name>@<k>) in the table", **metadata)
    if bad:
        return fail(ERROR, f"{sum(bad.values())} metric values outside [0, 1] (or null/NaN) in {sorted(bad)}",
                    **metadata)
    return ok(f"{metrics.height * len(columns)} metric values in [0, 1]", **metadata)


def evaluate_skim_beats_base(retrieval_metrics: Tables) -> Outcome:
    metrics = retrieval_metrics.data
    skim_model, base_model, metric = METRICS_COMPARED
    unbiased = metrics.filter(pl.col("test_set") == METRICS_TEST_SET)

    def value(model: str) -> float | None:
        rows = unbiased.filter(pl.col("model") == model)
        return (float(rows[metric][0]) if rows.height and metric in rows.columns and rows[metric][0] is not None
                else None)

    skim, base = value(skim_model), value(base_model)
    metadata = {"test_set": METRICS_TEST_SET, "metric": metric, f"{skim_model}": skim, f"{base_model}": base}
    if skim is None or base is None or math.isnan(skim) or math.isnan(base):
        absent = [m for m, v in ((skim_model, skim), (base_model, base)) if v is None or math.isnan(v)]
        return fail(WARN, f"no {METRICS_TEST_SET} {metric} for {absent}", **metadata)
    metadata["skim_minus_base"] = rounded(skim - base)
    summary = f"{METRICS_TEST_SET} {metric}: {skim_model} {skim:.4f} vs {base_model} {base:.4f}"
    if skim <= base:
        return fail(WARN, f"{summary}: SKIM does not beat the click-only baseline", **metadata)
    return ok(summary, **metadata)


label_repair_check = build_check(
    "label_repair_report", "skim_repair_precision", evaluate_label_repair, blocking=False,
    description=f"WARN when under {REPAIR_PRECISION_WARN:.0%} of SKIM's added pairs are held-back train labels.",
)
metric_range_check = build_check(
    "retrieval_metrics", "metrics_in_unit_interval", evaluate_metric_ranges, blocking=True,
    description="Every metric value (P@k, R@k, nDCG@k, PSP@k) is a number in [0, 1].",
)
skim_beats_base_check = build_check(
    "retrieval_metrics", "skim_beats_base_unbiased_r100", evaluate_skim_beats_base, blocking=False,
    description="WARN when skim_retriever does not beat base_retriever on unbiased R@100.",
)
evaluation_checks = [label_repair_check, metric_range_check, skim_beats_base_check]
