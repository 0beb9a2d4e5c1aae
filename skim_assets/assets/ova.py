"""The second base model: a Renée-style one-vs-all head per method, over frozen pretrained encoder features."""

import dagster as dg
import numpy as np
import polars as pl

from ..lib.ova_head import OvaHeadConfig, train_ova_head
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables
from .checking import build_finite_weights_check, nonfinite_in_npz
from .common import MODEL_STEP, all_queries, pretrained_space, retrieval_input
from .training import METADATA_INPUT_METHODS, METHODS

HEAD_FILE = "head.npz"


class OvaHeadTrainingConfig(dg.Config, OvaHeadConfig):
    """One-vs-all head training: the fields of `lib.ova_head.OvaHeadConfig`."""


def build_ova_asset(name: str, pairs_asset: str, description: str, metadata_input: bool = False) -> dg.AssetsDefinition:
    """A one-vs-all head over frozen features of the query texts (with `metadata_input`, of the texts that carry
    their metadata; the labels' initial vectors likewise)."""

    @dg.asset(name=name, partitions_def=dataset_partitions, group_name="training", description=description,
              ins={"pairs": dg.AssetIn(pairs_asset)}, kinds={"pytorch"}, **MODEL_STEP)
    def _ova(context: dg.AssetExecutionContext, config: OvaHeadTrainingConfig, storage: StorageResource,
             encoder: EncoderResource, pairs: Tables, documents: pl.DataFrame, queries: pl.DataFrame,
             click_log_pairs: Tables) -> dg.MaterializeResult:
        dataset = context.partition_key
        training = pairs.data
        queries = all_queries(queries, click_log_pairs, pairs).join(training.select("query_id").unique(), on="query_id")
        read = retrieval_input(storage.dataset_spec(dataset).direction, metadata_input, queries, documents, encoder)
        query_index = {q: i for i, q in enumerate(queries["query_id"].to_list())}
        doc_index = {d: i for i, d in enumerate(documents["doc_id"].to_list())}
        space = pretrained_space(storage, encoder, dataset)
        index = space.document_index(read.documents["title"].to_list(), read.doc_max_length)
        weights, biases, report = train_ova_head(
            space.embed(read.queries["text"].to_list(), read.query_max_length, role="query"),
            np.array([query_index[q] for q in training["query_id"].to_list()]),
            np.array([doc_index[d] for d in training["doc_id"].to_list()]),
            training["weight"].to_numpy(),
            index.vectors, config, progress=context.log.info, initial_search=index.search,
        )
        folder = storage.staging_dir()
        np.savez(folder / HEAD_FILE, weights=weights, biases=biases, doc_ids=np.array(documents["doc_id"].to_list()))
        return dg.MaterializeResult(value=folder, metadata={
            "training_queries": report.queries,
            "training_pairs": report.pairs,
            "metadata_input": metadata_input,
            "seconds": round(report.seconds, 2),
            "final_epoch_loss": round(report.epoch_losses[-1], 4),
            "loss": "full" if documents.height <= config.full_loss_max_documents else "shortlist (sparse rows)",
            "first_shortlist_search": index.method,
        })

    return _ova


OVA_HEADS = {f"{method}_ova_head": (pairs, f"Renée-style one-vs-all head. {text}")
             for method, (pairs, text) in METHODS.items()}
ova_assets = [build_ova_asset(name, pairs, text, name.removesuffix("_ova_head") in METADATA_INPUT_METHODS)
              for name, (pairs, text) in OVA_HEADS.items()]

ova_weight_checks = [
    build_finite_weights_check(name, "", HEAD_FILE, nonfinite_in_npz, required=("weights", "biases"))
    for name in OVA_HEADS
]
ova_checks = [*ova_weight_checks]
