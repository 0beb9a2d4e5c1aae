"""Mapping synthetic queries onto real train queries, and the augmented training set."""

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl

from ..lib.checks import ERROR, WARN, Outcome, fail, ok, rounded, weights_outside
from ..lib.click_space import mapping_targets
from ..lib.formats import union_pairs
from ..lib.layout import MAPPING_STATE
from ..lib.mapping import MappingSettings, map_incrementally, text_hash
from ..lib.plots import histogram_plot
from ..lib.quality import pairs_beyond
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables, TrainingView
from .common import EAGER, build_check, click_space, pairs_output, plot_metadata, settings_of, settings_table

MAPPING_ENCODER = "base_models"  # its dual encoder, fine-tuned on the (click) train set


class MappingConfig(dg.Config, MappingSettings):
    """hnswlib mapping: the fields of `lib.mapping.MappingSettings` (tau and seed default to the dataset's)."""


def shown_filter_state(settings: MappingSettings, impressions: pl.DataFrame | None) -> str:
    """What the shown-not-clicked filter did, in words for the UI."""
    if settings.unclicked_cutoff is None:
        return "off"
    if impressions is None:
        return "no impressions logged: nothing to read"
    depth = settings.examined_positions
    return "on, " + ("every logged position" if depth is None else "position 1" if depth == 1
                     else f"positions 1-{depth}")


def build_mapped_pairs_asset(name: str, synthetic_asset: str, source: str, description: str) -> dg.AssetsDefinition:
    """(train query, document) pairs from the synthetic queries of `synthetic_asset`; side tables `candidates`
    and `synthetic` keep every synthetic query's k best neighbours, so any tau can be applied later (the tau
    sweep) without a new search."""

    @dg.asset(name=name, partitions_def=dataset_partitions, group_name="mapping",
              ins={"synthetic": dg.AssetIn(synthetic_asset), MAPPING_ENCODER: dg.AssetIn(MAPPING_ENCODER),
                   # the current train queries and clicks: a click drop refreshes the mapping, not the generation
                   "train_pairs": dg.AssetIn("train_pairs")},
              description=description, automation_condition=EAGER)
    def _mapped(context: dg.AssetExecutionContext, config: MappingConfig, storage: StorageResource,
                encoder: EncoderResource, synthetic: pl.DataFrame, base_models: Path,
                train_pairs: Tables) -> dg.MaterializeResult:
        dataset, view = context.partition_key, TrainingView(train_pairs)
        spec = storage.dataset_spec(dataset)
        settings = config.with_(tau=spec.tau if config.tau is None else config.tau,
                                seed=spec.seed if config.seed is None else config.seed)
        space = click_space(storage, encoder, dataset, base_models, view.documents)
        targets = mapping_targets(spec.direction, encoder, view.documents, view.queries)
        synthetic_vectors, new_synthetic = space.embed(synthetic["query"].to_list(), targets.max_length, targets.role)
        target_vectors, new_targets = space.embed(targets.texts, targets.max_length, targets.role)
        # candidates are kept per (synthetic texts, encoder): a click refresh searches only the new targets
        identity = hashlib.sha1("\n".join(f"{d}\t{text_hash(q)}" for d, q in synthetic.select("doc_id", "query")
                                          .iter_rows()).encode()).hexdigest() + ":" + space.fingerprint
        # every candidate carries its click-neighbour cosine, so the tau sweep can apply the floor later
        pairs, candidates, stats = map_incrementally(
            synthetic["doc_id"].to_list(), synthetic_vectors, targets.ids, target_vectors, settings, source,
            storage.step_dir(MAPPING_STATE, dataset, name), identity, targets.column, space.neighbours(view.clicks),
            view.impressions)
        stats["texts_embedded_now"] = new_synthetic + new_targets
        metadata = mapping_metadata(pairs, synthetic, targets, settings, stats, view)
        context.log.info(mapping_summary(synthetic, pairs, metadata, settings, stats))
        histogram = histogram_plot(stats["scores"], "best neighbour score per synthetic query", "(1 + cos) / 2",
                                   storage.figure_path(name, dataset, "scores.png"),
                                   marker=settings.tau) if stats["scores"] else None
        return dg.MaterializeResult(
            value=view.carried_by(pairs, candidates=candidates, synthetic=synthetic.select("doc_id"),
                                  settings=settings_table(settings)),  # tau and seed resolved
            metadata=metadata | {"direction": spec.direction}
            | (plot_metadata("score_histogram", histogram) if histogram else {}))

    return _mapped


def mapping_metadata(pairs: pl.DataFrame, synthetic: pl.DataFrame, targets, settings: MappingSettings,
                     stats: dict, view: TrainingView) -> dict:
    """A mapping's figures: what it added, what it covers, what its filters removed, and what it searched."""
    onto_documents = targets.column == "doc_id"
    return {
        # pairs_added counts what is new beyond the clicks, as label_repair does; a mapped pair can restate a
        # click (with the floor, a clicked document is its own nearest click)
        "pairs_mapped": pairs.height,
        "pairs_added": pairs_beyond(pairs, view.clicks).height,
        "synthetic_queries": synthetic.height,
        "document_coverage": round(pairs["doc_id"].n_unique() / max(view.documents.height, 1), 4),
        # both shares: of the documents, and of the queries that could gain a pair (the train queries mapped
        # onto; in the reverse direction, the queries written for)
        "query_coverage": round(pairs["query_id"].n_unique() / max(
            synthetic["doc_id"].n_unique() if onto_documents else len(targets.ids), 1), 4),
        "queries_mapped_onto": pairs["query_id"].n_unique(),
        # settings as one JSON entry: numbers would each get a (constant) chart in the UI's Plots view
        "settings": dg.MetadataValue.json({"tau": float(settings.tau), "k": settings.k,
                                           "click_neighbour_floor": settings.click_neighbour_floor}),
        **({"pairs_below_neighbour_floor": stats["pairs_below_neighbour_floor"]}
           if "pairs_below_neighbour_floor" in stats else {}),
        "shown_not_clicked_filter": shown_filter_state(settings, view.impressions),
        **({"pairs_shown_not_clicked": stats["pairs_shown_not_clicked"]} if "pairs_shown_not_clicked" in stats else {}),
        "hnsw_recall_at_k": round(stats["hnsw_recall"], 4) if stats["hnsw_recall"] is not None else None,
        "texts_embedded_now": stats["texts_embedded_now"],
        "mapped_onto": "documents" if onto_documents else "train queries",
        "targets": len(targets.ids),
        "targets_searched_now": stats["targets_searched"],
        "incremental": stats["incremental"],
        "mean_weight": round(float(pairs["weight"].mean()), 4) if pairs.height else 0.0,
    }


def mapping_summary(synthetic: pl.DataFrame, pairs: pl.DataFrame, metadata: dict, settings: MappingSettings,
                    stats: dict) -> str:
    """The mapping's log line."""
    return (f"mapped {synthetic.height} synthetic texts -> {pairs.height} pairs, {metadata['pairs_added']} beyond the "
            f"clicks (tau {settings.tau}, click-neighbour floor {settings.click_neighbour_floor}; searched "
            f"{stats['targets_searched']} of {metadata['targets']} {metadata['mapped_onto']}, "
            f"{stats.get('pairs_shown_not_clicked', 0)} dropped as shown and not clicked, "
            f"incremental={stats['incremental']}; hnsw recall {stats['hnsw_recall']})")


def build_augmented_pairs_asset(name: str, mapped_asset: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=dataset_partitions, group_name="mapping",
              ins={"mapped": dg.AssetIn(mapped_asset)}, description=description, automation_condition=EAGER)
    def _augmented(mapped: Tables) -> dg.MaterializeResult:
        view = TrainingView(mapped)
        return pairs_output(view.carried_by(union_pairs(view.clicks, mapped.data)))

    return _augmented


mapped_pairs = build_mapped_pairs_asset(
    "mapped_pairs", "synthetic_queries", "skim",
    "Synthetic queries mapped onto real train queries with hnswlib: (train query, document) pairs weighted by "
    "(1+cos)/2.",
)
augmented_train_pairs = build_augmented_pairs_asset(
    "augmented_train_pairs", "mapped_pairs", "Click pairs plus SKIM's mapped pairs (column `source`).",
)
mapped_pairs_no_metadata = build_mapped_pairs_asset(
    "mapped_pairs_no_metadata", "synthetic_queries_no_metadata", "skim_no_metadata",
    "Ablation: the same mapping for queries generated without metadata.",
)
augmented_train_pairs_no_metadata = build_augmented_pairs_asset(
    "augmented_train_pairs_no_metadata", "mapped_pairs_no_metadata", "Clicks plus the no-metadata ablation's pairs.",
)
mapped_pairs_udapdr = build_mapped_pairs_asset(
    "mapped_pairs_udapdr", "synthetic_queries_udapdr", "udapdr",
    "UDAPDR-style: few-shot generation without metadata, then the same mapping.",
)
augmented_train_pairs_udapdr = build_augmented_pairs_asset(
    "augmented_train_pairs_udapdr", "mapped_pairs_udapdr", "Clicks plus the UDAPDR-style pairs.",
)
mapping_assets = [mapped_pairs, augmented_train_pairs, mapped_pairs_no_metadata, augmented_train_pairs_no_metadata,
                  mapped_pairs_udapdr, augmented_train_pairs_udapdr]


# ----------------------------------------------------------------------------------------------- asset checks

MAPPED_PAIRS_ASSETS = tuple(k for a in mapping_assets if (k := a.key.to_user_string()).startswith("mapped_pairs"))


def evaluate_mapped_pairs(mapped: Tables) -> Outcome:
    """Pair weights within [tau, 1] for the tau the mapping ran with (its stored settings: a run may override the
    dataset's), and the documents the pairs cover (of the training view it carries)."""
    pairs = mapped.data
    tau = settings_of(mapped, MappingSettings).threshold
    documents = mapped["documents"].height  # the training view's, carried along
    outside = weights_outside(pairs["weight"], tau, 1.0)
    finite = pairs["weight"].cast(pl.Float64).drop_nulls().drop_nans()
    metadata = {
        "pairs": pairs.height,
        "tau": tau,
        "weights_outside_range": outside,
        "min_weight": rounded(finite.min()) if finite.len() else None,
        "max_weight": rounded(finite.max()) if finite.len() else None,
        "covered_documents": pairs["doc_id"].n_unique(),
        "document_coverage": rounded(pairs["doc_id"].n_unique() / documents) if documents else 0.0,
    }
    if outside:
        return fail(ERROR, f"{outside} of {pairs.height} pair weights outside [tau={tau}, 1]", **metadata)
    if pairs.height == 0:
        return fail(WARN, "no synthetic query mapped onto a train query (0 pairs)", **metadata)
    return ok(f"{pairs.height} pairs, weights in [{tau}, 1], coverage {metadata['document_coverage']:.1%}", **metadata)


mapped_pairs_checks = [
    build_check(
        asset, "weights_within_tau", evaluate_mapped_pairs, blocking=True,
        description="ERROR when a pair weight lies outside [tau, 1] (the tau the mapping ran with, in its stored "
                    "settings); WARN when no pair was mapped; reports document coverage.",
    )
    for asset in MAPPED_PAIRS_ASSETS
]
mapping_checks = [*mapped_pairs_checks]
