"""Biased simulated datasets (Algorithm 1): click train pairs, a MAR sample, the oracle labels, and test sets."""


import dagster as dg
import polars as pl

from ..lib.formats import IMPRESSIONS_SCHEMA
from ..lib.plots import line_plot
from ..lib.retrieval import topk_frame
from ..lib.simulation import (
    DEFAULT_EXPOSURE_KS,
    exposure_curve,
    labels_as_pairs,
    missing_at_random_sample,
    simulate_click_log,
)
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables
from ..resources.artifacts import report_table
from .common import MODEL_STEP, plot_metadata, pretrained_space

SIMULATION_OUTPUTS = {
    "click_train_pairs": "Train pairs that survived as clicks (Algorithm 1), or the dataset's own train labels; "
                         "side table `impressions`: every document the simulated engine showed, clicked or not.",
    "mar_train_pairs": "A uniform random sample of train labels, as many as the clicks (missing at random).",
    "oracle_train_pairs": "Every train label: what a model could learn with complete labels.",
    "biased_test_qrels": "Test labels that survived the same exposure process (a click-log test set).",
    "unbiased_test_qrels": "Every test label (complete labels).",
}

COMPLETE_LABEL_OUTPUTS = ("oracle_train_pairs", "unbiased_test_qrels")


@dg.multi_asset(
    outs={name: dg.AssetOut(description=text, dagster_type=Tables if name == "click_train_pairs" else pl.DataFrame)
          for name, text in SIMULATION_OUTPUTS.items()},
    partitions_def=dataset_partitions,
    group_name="simulation",
    can_subset=False,
    pool=MODEL_STEP["pool"], op_tags=MODEL_STEP["op_tags"],  # ranks every query with the zero-shot encoder
    # the complete labels need no ranking: the documents feed only what exposure decides (MAR's size is the clicks')
    internal_asset_deps={name: {dg.AssetKey(a) for a in ("documents", "queries", "relevance_labels")
                                if a != "documents" or name not in COMPLETE_LABEL_OUTPUTS}
                         for name in SIMULATION_OUTPUTS},
)
def simulated_clicks(context: dg.AssetExecutionContext, storage: StorageResource, encoder: EncoderResource,
                     documents: pl.DataFrame, queries: pl.DataFrame, relevance_labels: pl.DataFrame):
    """Simulate click bias on a dataset with complete labels (paper's Algorithm 1).

    A pretrained retriever (the encoder resource; titles only) ranks all documents for every query; its top-K is
    what the engine showed (logged as impressions for the train split), and a relevant pair shown there is clicked
    by the dataset's click model (every one, by sigmoid(score), or by the position-based model).
    Datasets registered with `simulate_bias: false` already are click logs: their labels pass through unchanged.
    """
    dataset = context.partition_key
    spec = storage.dataset_spec(dataset)
    qrels = relevance_labels.join(queries.select("query_id", "split"), on="query_id")
    train_labels, test_labels = (qrels.filter(pl.col("split") == s).drop("split") for s in ("train", "test"))
    metadata: dict[str, dict] = {name: {} for name in SIMULATION_OUTPUTS}

    if spec.simulate_bias:
        depth = min(max(spec.exposure_k, max(DEFAULT_EXPOSURE_KS)), documents.height)
        space = pretrained_space(storage, encoder, dataset)
        index = space.document_index(documents["title"].to_list(), encoder.doc_max_length)
        context.log.info(f"ranking {documents.height} documents for {queries.height} queries (top {depth}, zero-shot; "
                         f"{index.method})")
        indices, scores = index.search(space.embed(queries["text"].to_list(), encoder.query_max_length, role="query"),
                                       depth)
        ranked = topk_frame(queries["query_id"], documents["doc_id"], indices, scores)
        log = simulate_click_log(ranked, train_labels, spec.click_simulation)
        clicks, impressions = log.pairs, log.impressions
        biased_test = simulate_click_log(ranked, test_labels, spec.click_simulation).pairs.select(
            "query_id", "doc_id", pl.col("weight").alias("relevance"))
        curve = exposure_curve(ranked, train_labels, [k for k in DEFAULT_EXPOSURE_KS if k <= depth])
        plot = line_plot({"train labels kept": (curve["exposure_k"].to_list(), curve["fraction_kept"].to_list())},
                         "Labels surviving exposure", "exposure window K", "fraction kept",
                         storage.figure_path("click_train_pairs", dataset, "exposure_curve.png"))
        metadata["click_train_pairs"] = {
            # settings as one JSON entry: numbers would each get a (constant) chart in the UI's Plots view
            "exposure_search": index.method,
            "settings": dg.MetadataValue.json({
                "exposure_k": spec.exposure_k, "click_model": spec.click_model,
                **({"eta": spec.eta} if spec.click_model == "position" else {}),
                **({"score_scale": spec.score_scale} if spec.click_model == "sigmoid" else {})}),
            "impressions": impressions.height,
            "shown_relevant_not_clicked": exposed_unclicked(ranked, train_labels, impressions, spec.exposure_k),
            "fraction_of_labels_kept": round(clicks.height / max(train_labels.height, 1), 4),
            "per_k": report_table(curve),
            **plot_metadata("exposure_curve", plot),
        }
        metadata["biased_test_qrels"] = {
            "fraction_of_labels_kept": round(biased_test.height / max(test_labels.height, 1), 4),
        }
    else:
        context.log.info("simulate_bias is false: the dataset's train labels are the clicks; no unbiased test set")
        clicks = labels_as_pairs(train_labels, "click")
        impressions = pl.DataFrame(schema=IMPRESSIONS_SCHEMA)  # a click log's impressions come with its drops
        biased_test = test_labels.filter(pl.col("relevance") > 0)
        metadata["unbiased_test_qrels"] = {"note": "no complete labels: same as the biased test set"}

    frames = {
        "click_train_pairs": clicks,
        "mar_train_pairs": missing_at_random_sample(train_labels, clicks.height, seed=spec.seed),
        "oracle_train_pairs": labels_as_pairs(train_labels, "oracle"),
        "biased_test_qrels": biased_test,
        "unbiased_test_qrels": test_labels.filter(pl.col("relevance") > 0) if spec.simulate_bias else biased_test,
    }
    for name, frame in frames.items():
        value = Tables(frame, impressions=impressions) if name == "click_train_pairs" else frame
        yield dg.Output(value, output_name=name,
                        metadata=metadata[name] | {"queries_with_labels": frame["query_id"].n_unique()})


def exposed_unclicked(ranked: pl.DataFrame, labels: pl.DataFrame, impressions: pl.DataFrame, exposure_k: int) -> int:
    """Relevant documents shown and not clicked (0 under the deterministic click model): what a real log's
    shown-not-clicked evidence gets wrong, counted where the labels are known."""
    shown_relevant = ranked.filter(pl.col("rank") <= exposure_k).join(
        labels.filter(pl.col("relevance") > 0), on=["query_id", "doc_id"], how="semi")
    return shown_relevant.join(impressions.filter(pl.col("clicks") > 0), on=["query_id", "doc_id"], how="anti").height
