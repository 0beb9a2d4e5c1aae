"""Training sets of the baselines SKIM is compared with: MAR is simulated; IPS, LEVER, LEVER+IPS, Gandalf here."""

import dagster as dg
import polars as pl

from ..lib.baselines import click_propensities, gandalf_pairs, ips_pairs, lever_pairs
from ..lib.datasets import read_spec
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource
from .common import EAGER, all_queries, pairs_result
from .mapping import MAPPING_ENCODER, click_encoder_embedder

LEVER_THRESHOLD = 0.8
GANDALF_THRESHOLD = 0.1


def _pairs_result(storage: StorageResource, name: str, dataset: str, pairs: pl.DataFrame,
                  extra: dict | None = None) -> dg.MaterializeResult:
    return pairs_result(storage, name, dataset, pairs,
                        {"mean_weight": dg.MetadataValue.float(round(float(pairs["weight"].mean()), 4))} | (extra or {}))


def _ips(storage: StorageResource, dataset: str, clicks: pl.DataFrame) -> pl.DataFrame:
    spec = read_spec(storage.inputs(dataset))
    propensities = click_propensities(storage.read_table("documents", dataset), storage.read_table("train_pairs", dataset),
                                      spec.propensity_a, spec.propensity_b)
    return ips_pairs(clicks, propensities)


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", deps=["train_pairs", "documents"],
          automation_condition=EAGER)
def ips_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Click pairs re-weighted by inverse Jain propensities (A, B from the dataset config)."""
    dataset = context.partition_key
    return _pairs_result(storage, "ips_train_pairs", dataset, _ips(storage, dataset, storage.read_table("train_pairs", dataset)))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines",
          deps=["train_pairs", MAPPING_ENCODER, "documents", "queries", "click_log_pairs"], automation_condition=EAGER)
def lever_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource,
                      encoder: EncoderResource) -> dg.MaterializeResult:
    """Clicks plus LEVER's soft labels: documents a siamese teacher (the click-trained dual encoder) ranks near a
    train query with (1+cos)/2 >= 0.8, found with hnswlib."""
    dataset = context.partition_key
    clicks = storage.read_table("train_pairs", dataset)
    queries = all_queries(storage, dataset).filter(pl.col("split") == "train")
    documents = storage.read_table("documents", dataset)
    embed, _ = click_encoder_embedder(storage, encoder, dataset)  # cached: a click refresh embeds only new queries
    query_vectors, new_queries = embed(queries["text"].to_list(), encoder.query_max_length)
    doc_vectors, new_docs = embed(documents["title"].to_list(), encoder.doc_max_length)
    pairs = lever_pairs(clicks, queries["query_id"].to_list(), query_vectors, documents["doc_id"].to_list(),
                        doc_vectors, threshold=LEVER_THRESHOLD, seed=read_spec(storage.inputs(dataset)).seed)
    return _pairs_result(storage, "lever_train_pairs", dataset, pairs,
                         {"texts_embedded_now": dg.MetadataValue.int(new_queries + new_docs)})


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", deps=["lever_train_pairs", "train_pairs", "documents"],
          automation_condition=EAGER)
def lever_ips_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """LEVER's imputed soft labels plus IPS-weighted clicks."""
    dataset = context.partition_key
    lever = storage.read_table("lever_train_pairs", dataset)
    clicks = _ips(storage, dataset, lever.filter(pl.col("source") != "lever").with_columns(pl.lit(1.0).alias("weight")))
    pairs = pl.concat([clicks, lever.filter(pl.col("source") == "lever")])
    return _pairs_result(storage, "lever_ips_train_pairs", dataset, pairs)


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", deps=["train_pairs", "documents"],
          automation_condition=EAGER)
def gandalf_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Clicks plus Gandalf's label-text training points with co-occurrence soft targets (threshold 0.1); the new
    points' texts are in table `queries`."""
    dataset = context.partition_key
    pairs, new_queries = gandalf_pairs(storage.read_table("train_pairs", dataset),
                                       storage.read_table("documents", dataset), GANDALF_THRESHOLD)
    storage.write_table("gandalf_train_pairs", dataset, new_queries, "queries")
    return _pairs_result(storage, "gandalf_train_pairs", dataset, pairs)


baseline_pair_assets = [ips_train_pairs, lever_train_pairs, lever_ips_train_pairs, gandalf_train_pairs]
