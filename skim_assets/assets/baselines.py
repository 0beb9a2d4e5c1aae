"""Training sets of the baselines SKIM is compared with: MAR is simulated; IPS (by label frequency and by position),
LEVER, LEVER+IPS, Gandalf here."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ..lib.baselines import click_propensities, gandalf_pairs, ips_pairs, lever_pairs
from ..lib.plots import line_plot
from ..lib.propensities import (
    PROPENSITY_SCHEMA,
    PropensitySettings,
    position_ips_pairs,
    propensity_errors,
    regression_em,
)
from ..lib.report_tables import metrics_table_markdown
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables, TrainingView
from ..resources.artifacts import report_table
from .common import EAGER, MODEL_STEP, click_space, pairs_output, plot_metadata, pretrained_space

LEVER_THRESHOLD = 0.8
GANDALF_THRESHOLD = 0.1


def _pairs_output(pairs: pl.DataFrame | Tables, extra: dict | None = None) -> dg.MaterializeResult:
    frame = pairs.data if isinstance(pairs, Tables) else pairs
    return pairs_output(pairs, {"mean_weight": round(float(frame["weight"].mean()), 4)} | (extra or {}))


def _ips(storage: StorageResource, dataset: str, clicks: pl.DataFrame, view: TrainingView) -> pl.DataFrame:
    spec = storage.dataset_spec(dataset)
    return ips_pairs(clicks, click_propensities(view.documents, view.clicks, spec.propensity_a, spec.propensity_b))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def ips_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource,
                    train_pairs: Tables) -> dg.MaterializeResult:
    """Click pairs re-weighted by inverse Jain propensities (A, B from the dataset config)."""
    view = TrainingView(train_pairs)
    return _pairs_output(view.carried_by(_ips(storage, context.partition_key, view.clicks, view)))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def lever_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource, encoder: EncoderResource,
                      train_pairs: Tables, base_models: Path) -> dg.MaterializeResult:
    """Clicks plus LEVER's soft labels: documents a siamese teacher (the click-trained dual encoder) ranks near a
    train query with (1+cos)/2 >= 0.8, found with hnswlib."""
    dataset, view = context.partition_key, TrainingView(train_pairs)
    documents = view.documents
    train_queries = view.queries.filter(pl.col("split") == "train")
    # cached: a click refresh embeds only new queries
    space = click_space(storage, encoder, dataset, base_models, documents)
    query_vectors, new_queries = space.embed(train_queries["text"].to_list(), encoder.query_max_length, "query")
    doc_vectors, index, new_docs = space.document_vectors()
    pairs = lever_pairs(view.clicks, train_queries["query_id"].to_list(), query_vectors, documents["doc_id"].to_list(),
                        doc_vectors, threshold=LEVER_THRESHOLD, seed=storage.dataset_spec(dataset).seed,
                        search=index.search if index is not None else None)
    return _pairs_output(view.carried_by(pairs), {"texts_embedded_now": new_queries + new_docs,
                                 "search": index.method if index is not None else "hnswlib over the encoder's titles"})


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def lever_ips_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource,
                          lever_train_pairs: Tables) -> dg.MaterializeResult:
    """LEVER's imputed soft labels plus IPS-weighted clicks."""
    view, lever = TrainingView(lever_train_pairs), lever_train_pairs.data
    clicks = lever.filter(pl.col("source") != "lever").with_columns(pl.lit(1.0).alias("weight"))
    clicks = _ips(storage, context.partition_key, clicks, view)
    return _pairs_output(view.carried_by(pl.concat([clicks, lever.filter(pl.col("source") == "lever")])))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def gandalf_train_pairs(train_pairs: Tables) -> dg.MaterializeResult:
    """Clicks plus Gandalf's label-text training points with co-occurrence soft targets (threshold 0.1); side
    table `queries` holds the new points' texts (source 'gandalf') beside the dataset's queries."""
    view = TrainingView(train_pairs)
    pairs, new_queries = gandalf_pairs(view.clicks, view.documents, GANDALF_THRESHOLD)
    return _pairs_output(view.carried_by(pairs, queries=pl.concat([view.queries, new_queries],
                                                                   how="diagonal_relaxed")))


class PositionPropensityConfig(dg.Config, PropensitySettings):
    """Regression-EM: the fields of `lib.propensities.PropensitySettings`."""


def pair_cosines(storage: StorageResource, encoder: EncoderResource, dataset: str, impressions: pl.DataFrame,
                 queries: pl.DataFrame, documents: pl.DataFrame, block: int = 65_536) -> np.ndarray:
    """The pretrained-space cosine of every impression's (query, document title): regression-EM's relevance
    feature, which any log can compute (cached vectors; computed in blocks of rows)."""
    space = pretrained_space(storage, encoder, dataset)
    query_row = {q: i for i, q in enumerate(queries["query_id"].to_list())}
    doc_row = {d: i for i, d in enumerate(documents["doc_id"].to_list())}
    query_vectors = space.embed(queries["text"].to_list(), encoder.query_max_length, role="query")
    doc_vectors = space.document_index(documents["title"].to_list(), encoder.doc_max_length).vectors
    q = np.array([query_row[i] for i in impressions["query_id"].to_list()], dtype=np.int64)
    d = np.array([doc_row[i] for i in impressions["doc_id"].to_list()], dtype=np.int64)
    cosines = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), block):
        end = start + block
        cosines[start:end] = np.einsum("ij,ij->i", query_vectors[q[start:end]], doc_vectors[d[start:end]])
    return cosines


def relevance_features(impressions: pl.DataFrame, cosines: np.ndarray) -> np.ndarray:
    """Regression-EM's features of each impression's pair: its cosine, squared, and centred on the mean cosine of
    the documents shown for its query (how the pair stands among its query's results, which a query-independent
    cosine misses; on nfcorpus-dev it more than halved the propensities' error under the deterministic click
    model, RESULTS.md)."""
    frame = pl.DataFrame({"query_id": impressions["query_id"], "cosine": cosines})
    centred = frame.select(pl.col("cosine") - pl.col("cosine").mean().over("query_id")).to_series().to_numpy()
    return np.column_stack([cosines, cosines ** 2, centred])


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER,
          pool=MODEL_STEP["pool"], op_tags=MODEL_STEP["op_tags"])  # embeds the impressions' texts
def ips_position_train_pairs(context: dg.AssetExecutionContext, config: PositionPropensityConfig,
                             storage: StorageResource, encoder: EncoderResource, train_pairs: Tables,
                             click_log_pairs: Tables) -> dg.MaterializeResult:
    """Click pairs re-weighted by inverse *position* propensities, estimated from the impressions by regression-EM
    (Wang et al., 2018; relevance feature: the pair's pretrained cosine). Side table `propensities`: per position,
    impressions, clicks, the click rate, the naive click-rate estimate (rate / rate at position 1), the EM estimate
    and, in a simulation, the true examination probability with both estimates' errors. Without impressions the
    clicks keep weight 1 (nothing to estimate from)."""
    dataset, view = context.partition_key, TrainingView(train_pairs)
    clicks, impressions = view.clicks, view.impressions
    if impressions is None or impressions["position"].is_null().all():
        context.log.warning("no impressions with positions logged: position-based IPS leaves every click at weight 1")
        pairs = clicks.with_columns(pl.lit(1.0).alias("weight"), pl.lit("ips_position").alias("source"))
        return _pairs_output(view.carried_by(pairs, propensities=pl.DataFrame(schema=PROPENSITY_SCHEMA)),
                             {"propensities": "none: no impressions with positions"})
    spec = storage.dataset_spec(dataset)
    cosines = pair_cosines(storage, encoder, dataset, impressions, view.queries, view.documents)
    estimate = regression_em(impressions, relevance_features(impressions, cosines), config, progress=context.log.info)
    # the truth is known only where the log was simulated with a position-dependent click model
    drops_logged = "impressions" in click_log_pairs and click_log_pairs["impressions"].height > 0
    truth = (spec.click_simulation.examination(estimate.table["position"].to_numpy())
             if spec.simulate_bias and not drops_logged else None)
    table = propensity_errors(estimate.table, truth)
    pairs = position_ips_pairs(clicks, impressions, estimate, config.max_weight)
    positions = table["position"].to_list()
    curves = {"regression-EM": (positions, table["propensity"].to_list()),
              "click rate / rate at 1": (positions, table["click_rate_propensity"].to_list())}
    if truth is not None:
        curves["true examination"] = (positions, table["true_propensity"].to_list())
    plot = line_plot(curves, f"Position propensities ({dataset}; click model {spec.click_model})", "position",
                     "propensity relative to position 1",
                     storage.figure_path("ips_position_train_pairs", dataset, "propensities.png"))
    shown = table.filter(pl.col("position").is_in([1, 2, 3, 5, 10, 20, 50, 100]))
    errors = ({"propensity_mean_abs_error": round(float(table["error"].mean()), 4),
               "click_rate_mean_abs_error": round(float(table["click_rate_error"].mean()), 4)}
              if truth is not None else {})
    context.log.info(f"position propensities after {estimate.iterations} EM iterations:\n"
                     + metrics_table_markdown(shown.to_dicts(), shown.columns))
    return _pairs_output(view.carried_by(pairs, propensities=table), errors | {
        "em_iterations": estimate.iterations,
        "positions": table.height,
        "truth": (f"the simulation's examination probabilities (click model {spec.click_model})" if truth is not None
                  else "unknown: the impressions are a real log's"),
        "propensities": report_table(shown),
        **plot_metadata("plot", plot),
    })


baseline_pair_assets = [ips_train_pairs, ips_position_train_pairs, lever_train_pairs, lever_ips_train_pairs,
                        gandalf_train_pairs]
