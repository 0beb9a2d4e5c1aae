"""The paper's sweeps as assets: mapping threshold tau (Fig. 7) and exposure window K (Fig. 3)."""

import dagster as dg
import polars as pl
from pydantic import Field

from ..lib.metrics import metrics_table_markdown
from ..lib.ova_head import OvaHeadConfig
from ..lib.plots import line_plot, markdown_image
from ..lib.sweeps import SWEEP_METHODS, FrozenFeatures, exposure_sweep, tau_sweep
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables
from .common import MODEL_STEP, all_queries
from .ova import OvaHeadTrainingConfig, pretrained_embeddings


def frozen_features(storage: StorageResource, encoder: EncoderResource, dataset: str, queries: pl.DataFrame,
                    documents: pl.DataFrame) -> FrozenFeatures:
    """Pretrained-encoder features of every query (pass `all_queries(...)`) and document."""
    return FrozenFeatures(
        queries["query_id"].to_list(),
        pretrained_embeddings(storage, encoder, dataset, queries["text"].to_list(), encoder.query_max_length),
        documents["doc_id"].to_list(),
        pretrained_embeddings(storage, encoder, dataset, documents["title"].to_list(), encoder.doc_max_length),
    )


class TauSweepConfig(OvaHeadTrainingConfig):
    taus: list[float] = Field(default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95], description="Mapping thresholds to score.")


@dg.asset(partitions_def=dataset_partitions, group_name="sweeps", kinds={"pytorch"}, **MODEL_STEP)
def tau_sweep_report(context: dg.AssetExecutionContext, config: TauSweepConfig, storage: StorageResource,
                     encoder: EncoderResource, mapped_pairs: Tables, train_pairs: pl.DataFrame,
                     oracle_train_pairs: pl.DataFrame, unbiased_test_qrels: pl.DataFrame, documents: pl.DataFrame,
                     queries: pl.DataFrame, click_log_pairs: Tables) -> dg.MaterializeResult:
    """Paper Fig. 7: for each tau, how many mapped pairs SKIM adds, their precision and recall against the held-back
    train labels, and the unbiased R@10/R@100 of a one-vs-all head trained on clicks + those pairs. Reuses
    `mapped_pairs`' stored candidates (its side tables): no new search per tau."""
    dataset = context.partition_key
    table = tau_sweep(train_pairs, mapped_pairs["candidates"], mapped_pairs["synthetic"]["doc_id"].to_list(),
                      sorted(config.taus), frozen_features(storage, encoder, dataset,
                                                           all_queries(queries, click_log_pairs), documents),
                      unbiased_test_qrels, OvaHeadConfig.of(config), progress=context.log.info,
                      oracle_pairs=oracle_train_pairs)
    chosen = storage.dataset_spec(dataset).tau
    taus = table["tau"].to_list()
    plot = line_plot(
        {"unbiased R@100": (taus, table["R@100"].to_list()), "unbiased R@10": (taus, table["R@10"].to_list()),
         "pairs added / max": (taus, (table["pairs_added"] / max(table["pairs_added"].max() or 1, 1)).to_list()),
         "repair precision": (taus, table["repair_precision"].to_list()),
         "repair recall": (taus, table["repair_recall"].to_list())},
        f"Mapping threshold sweep ({dataset}; dataset tau {chosen})", "tau", "recall / relative pairs added",
        storage.figure_path("tau_sweep_report", dataset, "tau_sweep.png"))
    return dg.MaterializeResult(value=table, metadata={
        "table": dg.MetadataValue.md(metrics_table_markdown(table.to_dicts(), table.columns)),
        "plot": dg.MetadataValue.md(markdown_image(plot, "tau sweep")),
        "best_tau_by_R@100": float(table.sort("R@100", descending=True)["tau"][0]),
    })


class ExposureSweepConfig(OvaHeadTrainingConfig):
    exposure_ks: list[int] = Field(default=[5, 10, 20, 50, 100], description="Exposure windows K to simulate.")


@dg.asset(partitions_def=dataset_partitions, group_name="sweeps", kinds={"pytorch"}, **MODEL_STEP)
def exposure_sweep_report(context: dg.AssetExecutionContext, config: ExposureSweepConfig, storage: StorageResource,
                          encoder: EncoderResource, mapped_pairs: pl.DataFrame, relevance_labels: pl.DataFrame,
                          unbiased_test_qrels: pl.DataFrame, documents: pl.DataFrame, queries: pl.DataFrame,
                          click_log_pairs: Tables) -> dg.MaterializeResult:
    """Paper Fig. 3, on a dataset with complete labels: Algorithm 1 at each exposure window K, then the unbiased
    R@100 of MNAR clicks, IPS with the true (per-document) propensities, SKIM (clicks + the mapped pairs at
    the dataset's tau) and a missing-at-random sample of the clicks' size. One-vs-all heads score every point."""
    dataset = context.partition_key
    spec = storage.dataset_spec(dataset)
    if not spec.simulate_bias:
        raise ValueError(f"dataset {dataset!r} has simulate_bias false: its labels are clicks, not complete labels, "
                         "so there is nothing to simulate exposure on")
    train_labels = relevance_labels.join(queries.filter(pl.col("split") == "train").select("query_id"), on="query_id")
    train_queries = queries.join(train_labels.select("query_id").unique(), on="query_id")
    ks = sorted(k for k in config.exposure_ks if k <= documents.height) or [documents.height]
    context.log.info(f"ranking {documents.height} documents for {train_queries.height} train queries (top {max(ks)})")
    ranked = encoder.rank(train_queries, documents, max(ks))
    table = exposure_sweep(ranked, train_labels, mapped_pairs, ks,
                           frozen_features(storage, encoder, dataset, all_queries(queries, click_log_pairs), documents),
                           unbiased_test_qrels, OvaHeadConfig.of(config), seed=spec.seed, progress=context.log.info)
    curves = {method: (table.filter(pl.col("method") == method)["exposure_k"].to_list(),
                       table.filter(pl.col("method") == method)["R@100"].to_list()) for method in SWEEP_METHODS}
    plot = line_plot(curves, f"Exposure window sweep ({dataset})", "exposure window K (Algorithm 1)",
                     "unbiased R@100", storage.figure_path("exposure_sweep_report", dataset, "exposure_sweep.png"))
    wide = table.pivot(on="method", index="exposure_k", values="R@100")
    return dg.MaterializeResult(value=table, metadata={
        "unbiased_R@100": dg.MetadataValue.md(metrics_table_markdown(wide.to_dicts(), wide.columns)),
        "plot": dg.MetadataValue.md(markdown_image(plot, "exposure sweep")),
    })


sweep_assets = [tau_sweep_report, exposure_sweep_report]
