"""Mapping synthetic queries onto real train queries, and the augmented training set."""

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl

from ..lib.datasets import SPEC_FILE
from ..lib.formats import DOCUMENTS_FOR_QUERIES, union_pairs
from ..lib.encoders import prompt_cache_suffix
from ..lib.mapping import (
    DEFAULT_TAU,
    ClickNeighbours,
    MappingSettings,
    embed_with_cache,
    map_incrementally,
    text_hash,
)
from ..lib.plots import histogram_plot
from ..lib.quality import pairs_beyond
from ..lib.spaces import document_tower_frozen
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource, Tables, TrainingView
from .checking import ERROR, WARN, Evaluate, Outcome, build_check, fail, ok, rounded, weights_outside
from .common import (EAGER, RETRIEVER_FOLDER, SETTINGS_TABLE, pairs_output, pretrained_space, settings_of,
                     plot_metadata, settings_table)

MAPPING_ENCODER = "base_models"  # its dual encoder, fine-tuned on the (click) train set


class MappingConfig(dg.Config, MappingSettings):
    """hnswlib mapping: the fields of `lib.mapping.MappingSettings` (tau and seed default to the dataset's)."""


def encoder_fingerprint(path) -> str:
    """Identity of a saved encoder (weights file size and mtime): embedding caches are per encoder."""
    weights = next(iter(sorted(path.glob("*.safetensors"))), None) or path / "config.json"
    stat = weights.stat()
    return hashlib.sha1(f"{weights}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def click_encoder_embedder(storage: StorageResource, encoder: EncoderResource, dataset: str, base_models: Path):
    """(embed(texts, max_length, role) -> (vectors, how many computed now), encoder identity) for the
    click-trained dual encoder (in the `base_models` artifact); vectors are cached by text hash per encoder (and
    prompt, for a model with query/document prompts), so a refresh embeds only new text."""
    encoder_path = base_models / RETRIEVER_FOLDER
    fingerprint = encoder_fingerprint(encoder_path) + encoder.cache_tag  # vectors of another precision differ
    cache_dir = storage.step_dir("embedding_cache", dataset, fingerprint)
    model = []

    def embed(texts: list[str], max_length: int, role: str | None = None):
        def compute(batch):
            if not model:
                model.append(encoder.load(str(encoder_path)))
            return model[0].encode(batch, max_length=max_length, role=role)

        suffix = prompt_cache_suffix(encoder.prompt(role, str(encoder_path)))
        return embed_with_cache(texts, compute, cache_dir / f"texts-{max_length}{suffix}.parquet")

    return embed, fingerprint


def click_encoder_documents(embed, storage: StorageResource, encoder: EncoderResource, dataset: str,
                            base_models: Path, documents: pl.DataFrame):
    """(every document's title vector in the click-trained encoder's space, its search index or None, how many
    titles were embedded now): a
    query-side fine-tuned encoder kept the pretrained document vectors, so they and their shared index are read
    from the pretrained space instead of embedding the catalogue again."""
    titles = documents["title"].to_list()
    if document_tower_frozen(base_models):
        index = pretrained_space(storage, encoder, dataset).document_index(titles, encoder.doc_max_length)
        return index.vectors, index, 0
    vectors, embedded_now = embed(titles, encoder.doc_max_length, "document")
    return vectors, None, embedded_now


def click_neighbours(document_vectors, documents: pl.DataFrame, train_pairs: pl.DataFrame) -> ClickNeighbours:
    """The clicks and every document's title vector in the mapping encoder's space (`click_encoder_documents`):
    what the click-neighbour floor reads."""
    return ClickNeighbours(train_pairs, documents["doc_id"].to_list(), document_vectors)


def mapping_targets(direction: str, encoder: EncoderResource, view: TrainingView) -> tuple[str, list[str], list[str], int]:
    """What synthetic texts are mapped onto: (id column, ids, texts, token budget). Synthetic texts are queries
    written for documents (mapped onto train queries) or, in the documents_for_queries direction, documents
    written for train queries (mapped onto real documents)."""
    if direction == DOCUMENTS_FOR_QUERIES:
        documents = view.documents
        return "doc_id", documents["doc_id"].to_list(), documents["title"].to_list(), encoder.doc_max_length
    targets = view.queries.filter(pl.col("split") == "train")
    return "query_id", targets["query_id"].to_list(), targets["text"].to_list(), encoder.query_max_length


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
        documents = view.documents
        train_pairs, impressions = view.clicks, view.impressions
        spec = storage.dataset_spec(dataset)
        settings = config.with_(tau=spec.tau if config.tau is None else config.tau,
                                seed=spec.seed if config.seed is None else config.seed)
        embed, encoder_id = click_encoder_embedder(storage, encoder, dataset, base_models)
        target, target_ids, target_texts, max_length = mapping_targets(spec.direction, encoder, view)
        onto_documents = target == "doc_id"
        role = "document" if onto_documents else "query"  # synthetic texts and their targets are of one kind
        synthetic_vectors, new_synthetic = embed(synthetic["query"].to_list(), max_length, role)
        target_vectors, new_targets = embed(target_texts, max_length, role)
        # candidates are kept per (synthetic texts, encoder): a click refresh searches only the new targets
        identity = hashlib.sha1("\n".join(f"{d}\t{text_hash(q)}" for d, q in synthetic.select("doc_id", "query")
                                          .iter_rows()).encode()).hexdigest() + ":" + encoder_id
        state_dir = storage.step_dir("mapping_state", dataset, name)
        # every candidate carries its click-neighbour cosine, so the tau sweep can apply the floor later
        document_vectors, _, _ = click_encoder_documents(embed, storage, encoder, dataset, base_models, documents)
        neighbours = click_neighbours(document_vectors, documents, train_pairs)
        pairs, candidates, stats = map_incrementally(synthetic["doc_id"].to_list(), synthetic_vectors, target_ids,
                                                     target_vectors, settings, source, state_dir, identity, target,
                                                     neighbours, impressions)
        mapped_onto = "documents" if onto_documents else "train queries"
        added = pairs_beyond(pairs, train_pairs).height
        context.log.info(f"mapped {synthetic.height} synthetic texts -> {pairs.height} pairs, {added} beyond the clicks "
                         f"(tau {settings.tau}, click-neighbour floor {settings.click_neighbour_floor}; searched "
                         f"{stats['targets_searched']} of {len(target_ids)} {mapped_onto}, "
                         f"{stats.get('pairs_shown_not_clicked', 0)} dropped as shown and not clicked, "
                         f"incremental={stats['incremental']}; hnsw recall {stats['hnsw_recall']})")
        histogram = histogram_plot(stats["scores"], "best neighbour score per synthetic query", "(1 + cos) / 2",
                                   storage.figure_path(name, dataset, "scores.png"),
                                   marker=settings.tau) if stats["scores"] else None
        return dg.MaterializeResult(
            value=view.carried_by(pairs, candidates=candidates, synthetic=synthetic.select("doc_id"),
                                  settings=settings_table(settings)),  # tau and seed resolved
            metadata={
                # pairs_added counts what is new beyond the clicks, as label_repair does; a mapped pair can
                # restate a click (with the floor, a clicked document is its own nearest click)
                "pairs_mapped": pairs.height,
                "pairs_added": added,
                "synthetic_queries": synthetic.height,
                "document_coverage": round(pairs["doc_id"].n_unique() / max(documents.height, 1), 4),
                # both shares: of the documents, and of the queries that could gain a pair (the train queries
                # mapped onto; in the reverse direction, the queries written for)
                "query_coverage": round(pairs["query_id"].n_unique() / max(
                    synthetic["doc_id"].n_unique() if onto_documents else len(target_ids), 1), 4),
                "queries_mapped_onto": pairs["query_id"].n_unique(),
                # settings as one JSON entry: numbers would each get a (constant) chart in the UI's Plots view
                "settings": dg.MetadataValue.json({"tau": float(settings.tau), "k": settings.k,
                                                   "click_neighbour_floor": settings.click_neighbour_floor}),
                **({"pairs_below_neighbour_floor": stats["pairs_below_neighbour_floor"]}
                   if "pairs_below_neighbour_floor" in stats else {}),
                "shown_not_clicked_filter": shown_filter_state(settings, impressions),
                **({"pairs_shown_not_clicked": stats["pairs_shown_not_clicked"]}
                   if "pairs_shown_not_clicked" in stats else {}),
                "hnsw_recall_at_k": round(stats["hnsw_recall"], 4) if stats["hnsw_recall"] is not None else None,
                "direction": spec.direction,
                "texts_embedded_now": new_synthetic + new_targets,
                "mapped_onto": mapped_onto,
                "targets": len(target_ids),
                "targets_searched_now": stats["targets_searched"],
                "incremental": stats["incremental"],
                "mean_weight": round(float(pairs["weight"].mean()), 4) if pairs.height else 0.0,
                **(plot_metadata("score_histogram", histogram) if histogram else {}),
            },
        )

    return _mapped


def build_augmented_pairs_asset(name: str, mapped_asset: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=dataset_partitions, group_name="mapping",
              ins={"mapped": dg.AssetIn(mapped_asset)}, description=description, automation_condition=EAGER)
    def _augmented(mapped: Tables) -> dg.MaterializeResult:
        view = TrainingView(mapped)
        return pairs_output(view.carried_by(union_pairs(view.clicks, mapped.data)))

    return _augmented


mapped_pairs = build_mapped_pairs_asset(
    "mapped_pairs", "synthetic_queries", "skim",
    "Synthetic queries mapped onto real train queries with hnswlib: (train query, document) pairs weighted by (1+cos)/2.",
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


def mapped_tau(storage: StorageResource, asset: str, dataset: str) -> float:
    """The tau the mapping ran with: its stored settings (a run may override the dataset's), else the dataset's
    (DEFAULT_TAU for a dataset never registered)."""
    if storage.table_path(asset, dataset, SETTINGS_TABLE).exists():
        return settings_of(Tables(folder=storage.artifact_dir(asset, dataset)), MappingSettings).threshold
    return storage.dataset_spec(dataset).tau if (storage.inputs(dataset) / SPEC_FILE).exists() else DEFAULT_TAU


def evaluate_mapped_pairs(asset: str) -> Evaluate:
    def evaluate(storage: StorageResource, dataset: str) -> Outcome:
        pairs = storage.read_table(asset, dataset)
        tau = mapped_tau(storage, asset, dataset)
        documents = storage.read_table("documents", dataset).height
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

    return evaluate


mapped_pairs_checks = [
    build_check(
        asset, "weights_within_tau", evaluate_mapped_pairs(asset), blocking=True, additional_deps=("documents",),
        description="ERROR when a pair weight lies outside [tau, 1] (the tau the mapping ran with: its stored "
                    "settings, else dataset.json, default 0.8); "
                    "WARN when no pair was mapped; reports document coverage.",
    )
    for asset in MAPPED_PAIRS_ASSETS
]
mapping_checks = [*mapped_pairs_checks]
