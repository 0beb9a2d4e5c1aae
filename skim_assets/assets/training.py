"""Training pairs and trained retrievers (DEXML-style dual encoders), one asset per training-data method."""


import json

import dagster as dg

from ..lib.dual_encoder import DualEncoderConfig, train_dual_encoder
from ..lib.formats import union_pairs
from ..lib.plots import line_plot, markdown_image
from ..lib.storage import atomic_directory, file_digest
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource
from .checking import build_finite_weights_check, nonfinite_in_safetensors
from .common import EAGER, MODEL_STEP, all_queries, directory_metadata, pairs_result

TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=30)


@dg.asset(partitions_def=dataset_partitions, group_name="training", deps=["click_train_pairs", "click_log_pairs"],
          automation_condition=EAGER)
def train_pairs(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The click-log training set: simulated (or imported) click pairs plus pairs from click-log drops.

    A (query, doc) pair present in both keeps one row (the first source, 'click').
    """
    dataset = context.partition_key
    pairs = union_pairs(storage.read_table("click_train_pairs", dataset), storage.read_table("click_log_pairs", dataset))
    return pairs_result(storage, "train_pairs", dataset, pairs)


class RetrieverTrainingConfig(dg.Config, DualEncoderConfig):
    """DEXML-style dual-encoder fine-tuning: the fields of `lib.dual_encoder.DualEncoderConfig`."""


RETRIEVER_FOLDER = "encoder"


def build_retriever_asset(name: str, pairs_asset: str, description: str) -> dg.AssetsDefinition:
    """A dual encoder trained on the pairs of `pairs_asset`, saved to `<root>/<name>/<dataset>/encoder/`."""

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="training",
        deps=[pairs_asset, "documents", "queries", "click_log_pairs"],
        description=description,
        retry_policy=TRAINING_RETRY,
        kinds={"pytorch"},
        **MODEL_STEP,
    )
    def _retriever(
        context: dg.AssetExecutionContext, config: RetrieverTrainingConfig, storage: StorageResource,
        encoder: EncoderResource,
    ) -> dg.MaterializeResult:
        dataset = context.partition_key
        pairs = storage.read_table(pairs_asset, dataset)
        documents = storage.read_table("documents", dataset)
        queries = all_queries(storage, dataset, pairs_asset)
        model = encoder.load()
        context.log.info(f"training {name} on {pairs.height} pairs ({pairs_asset}) on {model.device}")
        report = train_dual_encoder(model, pairs, queries, documents, config, progress=context.log.info,
                                    query_max_length=encoder.query_max_length, doc_max_length=encoder.doc_max_length)
        with atomic_directory(storage.artifact_dir(name, dataset)) as tmp:
            model.save(tmp / RETRIEVER_FOLDER, max(encoder.query_max_length, encoder.doc_max_length))
            # the pairs' digest tells the model-refresh schedule whether this model is stale
            (tmp / "training.json").write_text(json.dumps(
                report.__dict__ | {"pairs_sha1": file_digest(storage.table_path(pairs_asset, dataset))}, indent=2))
            plot = line_plot({"loss": (list(range(1, len(report.loss_curve) + 1)), report.loss_curve)},
                             f"{name} training loss", "log window", "weighted decoupled-softmax loss", tmp / "loss.png")
            loss_md = markdown_image(plot, "loss curve")
        return dg.MaterializeResult(
            metadata=directory_metadata(storage.artifact_dir(name, dataset))
            | {
                "training_pairs": dg.MetadataValue.int(report.pairs),
                "training_queries": dg.MetadataValue.int(report.queries),
                "epochs": dg.MetadataValue.int(config.epochs),
                "seconds": dg.MetadataValue.float(round(report.seconds, 1)),
                "pairs_per_second": dg.MetadataValue.float(round(report.pairs_per_second, 2)),
                "final_epoch_loss": dg.MetadataValue.float(round(report.epoch_losses[-1], 4)),
                "device": str(model.device),
                "loss_curve": dg.MetadataValue.md(loss_md),
            }
        )

    return _retriever


# Each training-data method is its own asset so the lineage graph shows what feeds what. Method -> (pairs, text).
METHODS = {
    "base": ("train_pairs", "Click-log pairs only: what click logs alone can teach."),
    "oracle": ("oracle_train_pairs", "Every train label: the ceiling label repair could reach."),
    "mar": ("mar_train_pairs", "A random sample of labels as large as the clicks (missing at random)."),
    "ips": ("ips_train_pairs", "Clicks re-weighted by inverse propensities (IPS)."),
    "lever": ("lever_train_pairs", "Clicks plus LEVER's siamese-teacher soft labels."),
    "lever_ips": ("lever_ips_train_pairs", "LEVER's soft labels plus IPS-weighted clicks."),
    "gandalf": ("gandalf_train_pairs", "Clicks plus Gandalf's label-text points with co-occurrence targets."),
    "udapdr": ("augmented_train_pairs_udapdr", "Clicks plus UDAPDR-style pairs (generation without metadata)."),
    "skim_no_metadata": ("augmented_train_pairs_no_metadata", "Ablation: SKIM without the metadata."),
    "skim": ("augmented_train_pairs", "Clicks plus SKIM's mapped pairs (knowledge infusion)."),
}
RETRIEVERS = {f"{method}_retriever": (pairs, f"DEXML-style dual encoder. {text}") for method, (pairs, text) in METHODS.items()}
retriever_assets = [build_retriever_asset(name, pairs, text) for name, (pairs, text) in RETRIEVERS.items()]

retriever_weight_checks = [
    build_finite_weights_check(name, RETRIEVER_FOLDER, "*.safetensors", nonfinite_in_safetensors) for name in RETRIEVERS
]
training_checks = [*retriever_weight_checks]
