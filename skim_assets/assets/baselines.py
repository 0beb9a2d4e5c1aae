"""Training sets of the baselines SKIM is compared with: MAR is simulated; IPS, LEVER, LEVER+IPS, Gandalf here."""

from pathlib import Path

import dagster as dg
import polars as pl

from ..lib.baselines import click_propensities, gandalf_pairs, ips_pairs, lever_pairs
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables
from .common import EAGER, all_queries, pairs_output
from .mapping import click_encoder_documents, click_encoder_embedder

LEVER_THRESHOLD = 0.8
GANDALF_THRESHOLD = 0.1


def _pairs_output(pairs: pl.DataFrame | Tables, extra: dict | None = None) -> dg.MaterializeResult:
    frame = pairs.data if isinstance(pairs, Tables) else pairs
    return pairs_output(pairs, {"mean_weight": round(float(frame["weight"].mean()), 4)} | (extra or {}))


def _ips(storage: StorageResource, dataset: str, clicks: pl.DataFrame, train_pairs: pl.DataFrame,
         documents: pl.DataFrame) -> pl.DataFrame:
    spec = storage.dataset_spec(dataset)
    return ips_pairs(clicks, click_propensities(documents, train_pairs, spec.propensity_a, spec.propensity_b))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def ips_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource, train_pairs: pl.DataFrame,
                    documents: pl.DataFrame) -> dg.MaterializeResult:
    """Click pairs re-weighted by inverse Jain propensities (A, B from the dataset config)."""
    return _pairs_output(_ips(storage, context.partition_key, train_pairs, train_pairs, documents))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def lever_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource, encoder: EncoderResource,
                      train_pairs: pl.DataFrame, base_retriever: Path, documents: pl.DataFrame, queries: pl.DataFrame,
                      click_log_pairs: Tables) -> dg.MaterializeResult:
    """Clicks plus LEVER's soft labels: documents a siamese teacher (the click-trained dual encoder) ranks near a
    train query with (1+cos)/2 >= 0.8, found with hnswlib."""
    dataset = context.partition_key
    train_queries = all_queries(queries, click_log_pairs).filter(pl.col("split") == "train")
    # cached: a click refresh embeds only new queries
    embed, _ = click_encoder_embedder(storage, encoder, dataset, base_retriever)
    query_vectors, new_queries = embed(train_queries["text"].to_list(), encoder.query_max_length)
    doc_vectors, index, new_docs = click_encoder_documents(embed, storage, encoder, dataset, base_retriever, documents)
    pairs = lever_pairs(train_pairs, train_queries["query_id"].to_list(), query_vectors, documents["doc_id"].to_list(),
                        doc_vectors, threshold=LEVER_THRESHOLD, seed=storage.dataset_spec(dataset).seed,
                        search=index.search if index is not None else None)
    return _pairs_output(pairs, {"texts_embedded_now": new_queries + new_docs,
                                 "search": index.method if index is not None else "hnswlib over the encoder's titles"})


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def lever_ips_train_pairs(context: dg.AssetExecutionContext, storage: StorageResource, lever_train_pairs: pl.DataFrame,
                          train_pairs: pl.DataFrame, documents: pl.DataFrame) -> dg.MaterializeResult:
    """LEVER's imputed soft labels plus IPS-weighted clicks."""
    clicks = lever_train_pairs.filter(pl.col("source") != "lever").with_columns(pl.lit(1.0).alias("weight"))
    clicks = _ips(storage, context.partition_key, clicks, train_pairs, documents)
    return _pairs_output(pl.concat([clicks, lever_train_pairs.filter(pl.col("source") == "lever")]))


@dg.asset(partitions_def=dataset_partitions, group_name="baselines", automation_condition=EAGER)
def gandalf_train_pairs(train_pairs: pl.DataFrame, documents: pl.DataFrame) -> dg.MaterializeResult:
    """Clicks plus Gandalf's label-text training points with co-occurrence soft targets (threshold 0.1); the new
    points' texts are side table `queries`."""
    pairs, new_queries = gandalf_pairs(train_pairs, documents, GANDALF_THRESHOLD)
    return _pairs_output(Tables(pairs, queries=new_queries))


baseline_pair_assets = [ips_train_pairs, lever_train_pairs, lever_ips_train_pairs, gandalf_train_pairs]
