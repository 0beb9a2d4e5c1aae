"""Training pairs and trained retrievers (DEXML-style dual encoders), one asset per training-data method."""


import json

import dagster as dg
import polars as pl

from ..lib.dual_encoder import DualEncoderConfig, train_dual_encoder
from ..lib.formats import union_impressions, union_pairs
from ..lib.mapping import unclicked_impressions
from ..lib.plots import line_plot
from ..lib.spaces import RETRIEVER_TRAINING
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables
from .checking import build_finite_weights_check, nonfinite_in_safetensors
from .common import (EAGER, MODEL_STEP, RETRIEVER_FOLDER, all_queries, pairs_output, pretrained_space,
                     plot_metadata, retrieval_input, train_impressions)

TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=30)


@dg.asset(partitions_def=dataset_partitions, group_name="training", automation_condition=EAGER)
def train_pairs(click_train_pairs: Tables, click_log_pairs: Tables) -> dg.MaterializeResult:
    """The click-log training set: simulated (or imported) click pairs plus pairs from click-log drops.

    A (query, doc) pair present in both keeps one row (the first source, 'click'). Side table `impressions`: what
    the engine showed for train queries, clicked or not (the simulation's and the drops'; empty when no log
    records impressions), the evidence the mapping's shown-not-clicked filter and position propensities read.
    """
    impressions = union_impressions(*(t["impressions"] for t in (click_train_pairs, click_log_pairs)
                                      if "impressions" in t))
    shown = impressions["impressions"].sum() if impressions.height else 0
    return pairs_output(Tables(union_pairs(click_train_pairs.data, click_log_pairs.data), impressions=impressions),
                        {"impressions": int(shown), "impressions_clicked": int(impressions["clicks"].sum())
                         if impressions.height else 0})


class RetrieverTrainingConfig(dg.Config, DualEncoderConfig):
    """DEXML-style dual-encoder fine-tuning: the fields of `lib.dual_encoder.DualEncoderConfig`."""


def build_retriever_asset(name: str, pairs_asset: str, description: str,
                          metadata_input: bool = False) -> dg.AssetsDefinition:
    """A dual encoder trained on the pairs of `pairs_asset`, saved to `<root>/<name>/<dataset>/encoder/`; with
    `metadata_input`, on texts that carry their metadata (`common.retrieval_input`)."""

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="training",
        # the click log's impressions (train_pairs' side table) feed `shown_negatives`
        ins={"pairs": dg.AssetIn(pairs_asset)} | ({} if pairs_asset == "train_pairs"
                                                  else {"train_pairs": dg.AssetIn("train_pairs")}),
        description=description,
        retry_policy=TRAINING_RETRY,
        kinds={"pytorch"},
        **MODEL_STEP,
    )
    def _retriever(
        context: dg.AssetExecutionContext, config: RetrieverTrainingConfig, storage: StorageResource,
        encoder: EncoderResource, pairs: Tables, documents: pl.DataFrame, queries: pl.DataFrame,
        click_log_pairs: Tables, **click_pairs: Tables,
    ) -> dg.MaterializeResult:
        model = encoder.load()
        impressions = train_impressions(click_pairs.get("train_pairs", pairs))
        shown_not_clicked = (unclicked_impressions(impressions, config.shown_negatives_positions)
                             if config.shown_negatives and impressions is not None else None)
        context.log.info(f"training {name} on {pairs.data.height} pairs ({pairs_asset}) on {model.device}")
        direction = storage.dataset_spec(context.partition_key).direction
        read = retrieval_input(direction, metadata_input, all_queries(queries, click_log_pairs, pairs), documents,
                               encoder)
        # query-side fine-tuning reads the documents' pretrained vectors, shared with every step of that space
        document_vectors = None if config.train_document_tower else pretrained_space(
            storage, encoder, context.partition_key).embed(read.documents["title"].to_list(), read.doc_max_length,
                                                               role="document")
        report = train_dual_encoder(model, pairs.data, read.queries, read.documents, config,
                                    progress=context.log.info, query_max_length=read.query_max_length,
                                    doc_max_length=read.doc_max_length, document_vectors=document_vectors,
                                    shown_not_clicked=shown_not_clicked)
        folder = storage.staging_dir()
        model.save(folder / RETRIEVER_FOLDER, max(read.query_max_length, read.doc_max_length))
        # the pairs' digest tells the model-refresh schedule whether this model is stale
        (folder / RETRIEVER_TRAINING).write_text(json.dumps(report.__dict__ | {"pairs_sha1": pairs.digest()}, indent=2))
        plot = line_plot({"loss": (list(range(1, len(report.loss_curve) + 1)), report.loss_curve)},
                         f"{name} training loss", "log window", "weighted decoupled-softmax loss", folder / "loss.png")
        return dg.MaterializeResult(
            value=folder,
            metadata={
                "training_pairs": report.pairs,
                "pairs_available": pairs.data.height,
                "training_queries": report.queries,
                "document_tower": "trained" if config.train_document_tower else "frozen (pretrained vectors)",
                "shown_not_clicked_negatives": (shown_not_clicked.height if shown_not_clicked is not None
                                                else "off" if not config.shown_negatives else "no impressions"),
                "settings": dg.MetadataValue.json({"epochs": config.epochs, "learning_rate": config.learning_rate}),
                "metadata_input": metadata_input,
                "seconds": round(report.seconds, 1),
                "pairs_per_second": round(report.pairs_per_second, 2),
                "final_epoch_loss": round(report.epoch_losses[-1], 4),
                "device": str(model.device),
                **plot_metadata("loss_curve", plot,
                                storage.artifact_dir(name, context.partition_key) / plot.path.name),
            },
        )

    return _retriever


# Each training-data method is its own asset so the lineage graph shows what feeds what. Method -> (pairs, text).
METHODS = {
    "base": ("train_pairs", "Click-log pairs only: what click logs alone can teach."),
    "oracle": ("oracle_train_pairs", "Every train label: the ceiling label repair could reach."),
    "mar": ("mar_train_pairs", "A random sample of labels as large as the clicks (missing at random)."),
    "ips": ("ips_train_pairs", "Clicks re-weighted by inverse propensities (IPS)."),
    "ips_position": ("ips_position_train_pairs", "Clicks re-weighted by inverse position propensities estimated "
                     "from the impressions (regression-EM)."),
    "lever": ("lever_train_pairs", "Clicks plus LEVER's siamese-teacher soft labels."),
    "lever_ips": ("lever_ips_train_pairs", "LEVER's soft labels plus IPS-weighted clicks."),
    "gandalf": ("gandalf_train_pairs", "Clicks plus Gandalf's label-text points with co-occurrence targets."),
    "udapdr": ("augmented_train_pairs_udapdr", "Clicks plus UDAPDR-style pairs (generation without metadata)."),
    "skim_no_metadata": ("augmented_train_pairs_no_metadata", "Ablation: SKIM without the metadata."),
    "skim": ("augmented_train_pairs", "Clicks plus SKIM's mapped pairs (knowledge infusion)."),
    "ra": ("train_pairs", "Click-log pairs, the model reading the metadata beside the short text (RA)."),
    "skim_ra": ("augmented_train_pairs", "SKIM's training set, the model reading the metadata too (SKIM + RA)."),
}
# Metadata-augmented retrieval (the paper's Table 4): the model reads the metadata beside the short text, at train
# and test time (the document's for queries_for_documents, the query's for documents_for_queries). Same pairs as
# `base` and `skim`: it adds no label.
METADATA_INPUT_METHODS = ("ra", "skim_ra")
RETRIEVERS = {f"{method}_retriever": (pairs, f"DEXML-style dual encoder. {text}") for method, (pairs, text) in METHODS.items()}
retriever_assets = [build_retriever_asset(name, pairs, text, name.removesuffix("_retriever") in METADATA_INPUT_METHODS)
                    for name, (pairs, text) in RETRIEVERS.items()]

retriever_weight_checks = [
    build_finite_weights_check(name, RETRIEVER_FOLDER, "*.safetensors", nonfinite_in_safetensors) for name in RETRIEVERS
]
training_checks = [*retriever_weight_checks]
