"""The click-log training pairs, and one models asset per training-data method: its DEXML-style dual encoder and
its Renée-style one-vs-all head."""


import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from ..lib.checks import nonfinite_in_npz, nonfinite_in_safetensors
from ..lib.dual_encoder import DualEncoderConfig, train_dual_encoder
from ..lib.formats import union_impressions, union_pairs
from ..lib.layout import DUAL_ENCODER_CHECKPOINTS
from ..lib.mapping import unclicked_impressions
from ..lib.methods import METHODS, SIMULATED_PAIRS, Method
from ..lib.ova_head import OvaHeadConfig, save_head, train_ova_head
from ..lib.plots import line_plot
from ..lib.retrieval import retrieval_input
from ..lib.spaces import HEAD_FILE, RETRIEVER_FOLDER, RETRIEVER_TRAINING
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables, TrainingView
from .common import EAGER, MODEL_STEP, build_finite_weights_check, pairs_output, plot_metadata, pretrained_space

TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=30)


@dg.asset(partitions_def=dataset_partitions, group_name="training", automation_condition=EAGER)
def train_pairs(click_train_pairs: Tables, click_log_pairs: Tables, documents: Tables,
                queries: pl.DataFrame) -> dg.MaterializeResult:
    """The click-log training set: simulated (or imported) click pairs plus pairs from click-log drops.

    A (query, doc) pair present in both keeps one row (the first source, 'click'). It starts the training view
    (`resources.TrainingView`) that every training artifact downstream carries: side tables `documents` (a link
    to the imported table), `queries` (the dataset's and those only the click logs name), `click_pairs` (these
    pairs) and `impressions` (what the engine showed for train queries, clicked or not: the simulation's and the
    drops'; empty when no log records impressions), the evidence the mapping's shown-not-clicked filter and position
    propensities read.
    """
    impressions = union_impressions(*(t["impressions"] for t in (click_train_pairs, click_log_pairs)
                                      if "impressions" in t))
    shown = impressions["impressions"].sum() if impressions.height else 0
    pairs = union_pairs(click_train_pairs.data, click_log_pairs.data)
    # click-log queries carry no query metadata
    every_query = pl.concat([queries, *([click_log_pairs["queries"]] if "queries" in click_log_pairs else [])],
                            how="diagonal_relaxed")
    view = Tables(pairs, documents=documents.carried(), queries=every_query, click_pairs=pairs, impressions=impressions)
    return pairs_output(view, {"impressions": int(shown),
                               "impressions_clicked": int(impressions["clicks"].sum()) if impressions.height else 0})


class RetrieverTrainingConfig(dg.Config, DualEncoderConfig):
    """DEXML-style dual-encoder fine-tuning: the fields of `lib.dual_encoder.DualEncoderConfig`."""


class OvaHeadTrainingConfig(dg.Config, OvaHeadConfig):
    """One-vs-all head training: the fields of `lib.ova_head.OvaHeadConfig`."""


class MethodModelsConfig(dg.Config):
    """A method's two models, each with its own settings."""

    dual_encoder: RetrieverTrainingConfig = Field(default_factory=RetrieverTrainingConfig,
                                                  description="The DEXML-style dual encoder.")
    ova_head: OvaHeadTrainingConfig = Field(default_factory=OvaHeadTrainingConfig,
                                            description="The Renée-style one-vs-all head.")


def train_retriever(context: dg.AssetExecutionContext, config: RetrieverTrainingConfig, storage: StorageResource,
                    encoder: EncoderResource, name: str, pairs: Tables, view: TrainingView, metadata_input: bool,
                    folder: Path) -> dict:
    """The method's dual encoder, saved to `folder/encoder/` with its training report; returns its metadata."""
    dataset = context.partition_key
    model = encoder.load()
    shown_not_clicked = (unclicked_impressions(view.impressions, config.shown_negatives_positions)
                         if config.shown_negatives and view.impressions is not None else None)
    context.log.info(f"training {name}'s dual encoder on {pairs.data.height} pairs on {model.device}")
    read = retrieval_input(storage.dataset_spec(dataset).direction, metadata_input, view.queries, view.documents,
                           encoder)
    # query-side fine-tuning reads the documents' pretrained vectors, shared with every step of that space
    document_vectors = None if config.train_document_tower else pretrained_space(storage, encoder, dataset).embed(
        read.documents["title"].to_list(), read.doc_max_length, role="document")
    report = train_dual_encoder(model, pairs.data, read.queries, read.documents, config,
                                progress=context.log.info, query_max_length=read.query_max_length,
                                doc_max_length=read.doc_max_length, document_vectors=document_vectors,
                                shown_not_clicked=shown_not_clicked,
                                checkpoint_dir=storage.step_dir(DUAL_ENCODER_CHECKPOINTS, dataset, name))
    model.save(folder / RETRIEVER_FOLDER, max(read.query_max_length, read.doc_max_length))
    (folder / RETRIEVER_TRAINING).write_text(json.dumps(report.__dict__, indent=2))
    plot = line_plot({"loss": (list(range(1, len(report.loss_curve) + 1)), report.loss_curve)},
                     f"{name}: dual-encoder training loss", "log window", "weighted decoupled-softmax loss",
                     folder / "loss.png")
    return {
        "training_pairs": report.pairs,
        "pairs_available": pairs.data.height,
        "training_queries": report.queries,
        "document_tower": "trained" if config.train_document_tower else "frozen (pretrained vectors)",
        "shown_not_clicked_negatives": (shown_not_clicked.height if shown_not_clicked is not None
                                        else "off" if not config.shown_negatives else "no impressions"),
        "seconds": round(report.seconds, 1),
        "pairs_per_second": round(report.pairs_per_second, 2),
        "final_epoch_loss": round(report.epoch_losses[-1], 4),
        "resumed_from_step": report.resumed_from_step,  # 0: trained from the start (no checkpoint to resume)
        "device": str(model.device),
        **plot_metadata("loss_curve", plot, storage.artifact_dir(name, dataset) / plot.path.name),
    }


def train_head(context: dg.AssetExecutionContext, config: OvaHeadTrainingConfig, storage: StorageResource,
               encoder: EncoderResource, pairs: Tables, view: TrainingView, metadata_input: bool,
               folder: Path) -> dict:
    """The method's one-vs-all head over frozen features of the query texts (with `metadata_input`, of the texts
    that carry their metadata; the labels' initial vectors likewise), saved to `folder/head.npz`."""
    dataset = context.partition_key
    training, documents = pairs.data, view.documents
    queries = view.queries.join(training.select("query_id").unique(), on="query_id")
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
    save_head(folder / HEAD_FILE, weights, biases, documents["doc_id"].to_list())
    return {
        "ova_head_training_queries": report.queries,
        "ova_head_training_pairs": report.pairs,
        "ova_head_seconds": round(report.seconds, 2),
        "ova_head_final_epoch_loss": round(report.epoch_losses[-1], 4),
        "ova_head_loss": "full" if documents.height <= config.full_loss_max_documents else "shortlist (sparse rows)",
        "ova_head_first_shortlist_search": index.method,
    }


def build_models_asset(method: Method) -> dg.AssetsDefinition:
    """The method's two models trained on its pairs, in `<root>/<method>_models/<dataset>/`: the dual encoder
    (`encoder/`, `training.json`, `loss.png`) and the one-vs-all head (`head.npz`); with metadata input, both
    read texts that carry their metadata (`lib.retrieval.retrieval_input`). The pairs artifact carries the
    training view; oracle and MAR pairs (simulated, not derived from the click log) take it from `train_pairs`,
    whose impressions feed `shown_negatives`."""
    name, metadata_input = method.models, method.metadata_input
    view_from_train_pairs = method.pairs in SIMULATED_PAIRS

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="training",
        ins={"pairs": dg.AssetIn(method.pairs)} | ({"train_pairs": dg.AssetIn("train_pairs")}
                                                   if view_from_train_pairs else {}),
        description=MODELS_DESCRIPTION + method.description,
        retry_policy=TRAINING_RETRY,
        kinds={"pytorch"},
        **MODEL_STEP,
    )
    def _models(context: dg.AssetExecutionContext, config: MethodModelsConfig, storage: StorageResource,
                encoder: EncoderResource, pairs: Tables, **train_pairs: Tables) -> dg.MaterializeResult:
        view = TrainingView(train_pairs.get("train_pairs", pairs))
        folder = storage.staging_dir()
        metadata = train_retriever(context, config.dual_encoder, storage, encoder, name, pairs, view,
                                   metadata_input, folder)
        metadata |= train_head(context, config.ova_head, storage, encoder, pairs, view, metadata_input, folder)
        settings = {"dual_encoder": {"epochs": config.dual_encoder.epochs,
                                     "learning_rate": config.dual_encoder.learning_rate},
                    "ova_head": {"epochs": config.ova_head.epochs, "learning_rate": config.ova_head.learning_rate}}
        return dg.MaterializeResult(value=folder, metadata=metadata | {
            "settings": dg.MetadataValue.json(settings), "metadata_input": metadata_input})

    return _models


MODELS_DESCRIPTION = ("The method's two base models: a DEXML-style dual encoder (`encoder/`) and a Renée-style "
                      "one-vs-all head over frozen pretrained features (`head.npz`). ")


# Each training-data method (`lib.methods.METHODS`) is its own asset, so the lineage graph shows what feeds what.
models_assets = [build_models_asset(method) for method in METHODS.values()]
training_checks = [
    check for method in METHODS.values() for check in (
        build_finite_weights_check(method.models, RETRIEVER_FOLDER, "*.safetensors", nonfinite_in_safetensors),
        build_finite_weights_check(method.models, "", HEAD_FILE, nonfinite_in_npz,
                                   required=("weights", "biases"), name="head_weights_finite"),
    )
]
