"""The second base model: a Renée-style one-vs-all head per method, over frozen pretrained encoder features."""

import dagster as dg
import numpy as np

from ..lib.mapping import embed_with_cache
from ..lib.ova_head import OvaHeadConfig, train_ova_head
from ..lib.storage import atomic_directory
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource
from .checking import build_finite_weights_check, nonfinite_in_npz
from .common import MODEL_STEP, all_queries, directory_metadata
from .training import METHODS

HEAD_FILE = "head.npz"


class OvaHeadTrainingConfig(dg.Config, OvaHeadConfig):
    """One-vs-all head training: the fields of `lib.ova_head.OvaHeadConfig`."""


def pretrained_embeddings(storage: StorageResource, encoder: EncoderResource, dataset: str, texts: list[str],
                          max_length: int) -> np.ndarray:
    """Frozen pretrained-encoder features, cached by text hash per dataset."""
    model = encoder.load()
    cache = storage.root_path / "embedding_cache" / dataset / "pretrained" / f"texts-{max_length}.parquet"
    vectors, _ = embed_with_cache(texts, lambda batch: model.encode(batch, max_length=max_length), cache)
    return vectors


def build_ova_asset(name: str, pairs_asset: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=dataset_partitions, group_name="training", description=description,
              deps=[pairs_asset, "documents", "queries", "click_log_pairs"], kinds={"pytorch"}, **MODEL_STEP)
    def _ova(context: dg.AssetExecutionContext, config: OvaHeadTrainingConfig, storage: StorageResource,
             encoder: EncoderResource) -> dg.MaterializeResult:
        dataset = context.partition_key
        pairs = storage.read_table(pairs_asset, dataset)
        documents = storage.read_table("documents", dataset)
        queries = all_queries(storage, dataset, pairs_asset).join(pairs.select("query_id").unique(), on="query_id")
        query_index = {q: i for i, q in enumerate(queries["query_id"].to_list())}
        doc_index = {d: i for i, d in enumerate(documents["doc_id"].to_list())}
        weights, biases, report = train_ova_head(
            pretrained_embeddings(storage, encoder, dataset, queries["text"].to_list(), encoder.query_max_length),
            np.array([query_index[q] for q in pairs["query_id"].to_list()]),
            np.array([doc_index[d] for d in pairs["doc_id"].to_list()]),
            pairs["weight"].to_numpy(),
            pretrained_embeddings(storage, encoder, dataset, documents["title"].to_list(), encoder.doc_max_length),
            config, progress=context.log.info,
        )
        with atomic_directory(storage.artifact_dir(name, dataset)) as tmp:
            np.savez(tmp / HEAD_FILE, weights=weights, biases=biases, doc_ids=np.array(documents["doc_id"].to_list()))
        return dg.MaterializeResult(metadata=directory_metadata(storage.artifact_dir(name, dataset)) | {
            "training_queries": dg.MetadataValue.int(report.queries),
            "training_pairs": dg.MetadataValue.int(report.pairs),
            "seconds": dg.MetadataValue.float(round(report.seconds, 2)),
            "final_epoch_loss": dg.MetadataValue.float(round(report.epoch_losses[-1], 4)),
        })

    return _ova


OVA_HEADS = {f"{method}_ova_head": (pairs, f"Renée-style one-vs-all head. {text}")
             for method, (pairs, text) in METHODS.items()}
ova_assets = [build_ova_asset(name, pairs, text) for name, (pairs, text) in OVA_HEADS.items()]

ova_weight_checks = [
    build_finite_weights_check(name, "", HEAD_FILE, nonfinite_in_npz, required=("weights", "biases"))
    for name in OVA_HEADS
]
ova_checks = [*ova_weight_checks]
