"""The paper's sweeps: the mapping threshold tau (Fig. 7), the exposure window K (Fig. 3) and the student's size
(Table 5).

Every point of a sweep trains a model, so points are scored with the one-vs-all head over frozen pretrained
features (`ova_head`): seconds per point, where a dual encoder would take minutes. Each point is scored by the
unbiased test set (all test labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from .formats import PAIRS_SCHEMA, union_pairs
from .mapping import UNCLICKED_POSITION, candidates_to_pairs
from .metrics import evaluate_rankings
from .ova_head import OvaHeadConfig, ova_topk, train_ova_head
from .quality import judged_quality, label_repair
from .retrieval import topk_frame
from .simulation import missing_at_random_sample, simulate_clicks

SWEEP_KS = (10, 100)


@dataclass
class FrozenFeatures:
    """Pretrained embeddings of every query (train and test) and every document title, and optionally a search
    over the document vectors (`retrieval.DocumentIndex.search`: the one-vs-all heads' first shortlist)."""

    query_ids: list[str]
    query_vectors: np.ndarray
    doc_ids: list[str]
    doc_vectors: np.ndarray
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None


def score_training_pairs(pairs: pl.DataFrame, features: FrozenFeatures, test_qrels: pl.DataFrame,
                         config: OvaHeadConfig, ks: Sequence[int] = SWEEP_KS) -> dict[str, float]:
    """Train a one-vs-all head on `pairs` and score it on `test_qrels`: {"P@5", "R@10", "R@100", ...}."""
    query_index = {q: i for i, q in enumerate(features.query_ids)}
    doc_index = {d: i for i, d in enumerate(features.doc_ids)}
    unknown = pairs.filter(~pl.col("query_id").is_in(list(query_index)) | ~pl.col("doc_id").is_in(list(doc_index)))
    if unknown.height:
        row = unknown.row(0, named=True)
        raise ValueError(f"training pair ({row['query_id']!r}, {row['doc_id']!r}) has no features")
    weights, biases, _ = train_ova_head(
        features.query_vectors, np.array([query_index[q] for q in pairs["query_id"]], dtype=np.int64),
        np.array([doc_index[d] for d in pairs["doc_id"]], dtype=np.int64), pairs["weight"].to_numpy(),
        features.doc_vectors, config, progress=lambda _: None, initial_search=features.search,
    )
    test_ids = sorted(set(test_qrels["query_id"].to_list()))
    test_vectors = features.query_vectors[[query_index[q] for q in test_ids]]
    indices, scores = ova_topk(test_vectors, weights, biases, max(ks), scale=config.scale)
    return evaluate_rankings(topk_frame(test_ids, features.doc_ids, indices, scores), test_qrels, ks)


def tau_sweep(train_pairs: pl.DataFrame, candidates: pl.DataFrame, synthetic_doc_ids: list[str],
              taus: Sequence[float], features: FrozenFeatures, test_qrels: pl.DataFrame, config: OvaHeadConfig,
              progress: Callable[[str], None] = print, oracle_pairs: pl.DataFrame | None = None,
              neighbour_floor: float | None = None, unclicked_cutoff: float | None = None) -> pl.DataFrame:
    """For each tau: mapped pairs kept, their label-repair precision and recall against the held-back train labels
    (when `oracle_pairs`, every train label, is given), and the unbiased metrics of clicks + those pairs (Fig. 7).
    `neighbour_floor` is the mapping's click-neighbour floor (candidates annotated with their cosine) and
    `unclicked_cutoff` its shown-not-clicked filter (candidates annotated with their unclicked position): with the
    latter, columns `pairs_shown_not_clicked` (new pairs it removed) and `repair_precision_without_shown_filter`."""
    shown_filter = unclicked_cutoff is not None and UNCLICKED_POSITION in candidates.columns
    rows = []
    for tau in taus:
        mapped = candidates_to_pairs(candidates, synthetic_doc_ids, tau, "skim", neighbour_floor, unclicked_cutoff)
        augmented = union_pairs(train_pairs, mapped)
        repair, shown = {}, {}
        if oracle_pairs is not None:
            judged = label_repair(mapped, train_pairs, oracle_pairs)
            repair = {"repair_precision": judged["precision"], "repair_recall": judged["recall"]}
        if shown_filter:
            unfiltered = candidates_to_pairs(candidates, synthetic_doc_ids, tau, "skim", neighbour_floor)
            shown = {"pairs_shown_not_clicked": union_pairs(train_pairs, unfiltered).height - augmented.height}
            if oracle_pairs is not None:
                shown["repair_precision_without_shown_filter"] = label_repair(unfiltered, train_pairs,
                                                                              oracle_pairs)["precision"]
        metrics = score_training_pairs(augmented, features, test_qrels, config)
        rows.append({"tau": float(tau), "pairs_added": augmented.height - train_pairs.height, **shown, **repair,
                     **metrics})
        progress(f"tau {tau}: {rows[-1]['pairs_added']} pairs added"
                 + (f" (precision {repair['repair_precision']:.3f}, recall {repair['repair_recall']:.3f})"
                    if repair else "")
                 + f", unbiased R@100 {metrics['R@100']:.4f}")
    return pl.DataFrame(rows)


def repair_by_neighbour_floor(train_pairs: pl.DataFrame, candidates: pl.DataFrame, synthetic_doc_ids: list[str],
                              taus: Sequence[float], floors: Sequence[float | None],
                              oracle_pairs: pl.DataFrame, unclicked_cutoff: float | None = None) -> pl.DataFrame:
    """Label repair of the mapped pairs for every (tau, click-neighbour floor; None = off): pairs added, their
    precision and recall against the held-back train labels. No model is trained: it reads what each choice of
    the mapping keeps, from candidates annotated with their click-neighbour cosine (and the mapping's
    shown-not-clicked filter, `unclicked_cutoff`, applied throughout)."""
    rows = []
    for tau in taus:
        for floor in floors:
            judged = label_repair(candidates_to_pairs(candidates, synthetic_doc_ids, tau, "skim", floor,
                                                      unclicked_cutoff), train_pairs, oracle_pairs)
            rows.append({"tau": float(tau), "click_neighbour_floor": floor, "pairs_added": judged["pairs_added"],
                         "pairs_correct": judged["pairs_correct"], "repair_precision": judged["precision"],
                         "repair_recall": judged["recall"]})
    return pl.DataFrame(rows, schema={"tau": pl.Float64, "click_neighbour_floor": pl.Float64, "pairs_added": pl.Int64,
                                      "pairs_correct": pl.Int64, "repair_precision": pl.Float64,
                                      "repair_recall": pl.Float64})


def true_document_propensities(clicks: pl.DataFrame, labels: pl.DataFrame, floor: float = 0.01) -> pl.DataFrame:
    """Each document's true observation rate: its clicked labels / all its relevant labels (known here because
    the labels are complete), floored so a weight stays finite. (doc_id, propensity)."""
    relevant = labels.filter(pl.col("relevance") > 0).group_by("doc_id").len("labels")
    clicked = clicks.group_by("doc_id").len("clicked")
    return relevant.join(clicked, on="doc_id", how="left").select(
        "doc_id", (pl.col("clicked").fill_null(0) / pl.col("labels")).clip(lower_bound=floor).alias("propensity"))


def ips_with_true_propensities(clicks: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Click pairs weighted by 1 / true propensity of their document, rescaled to mean weight 1."""
    weighted = clicks.join(true_document_propensities(clicks, labels), on="doc_id")
    inverse = 1.0 / weighted["propensity"]
    return weighted.select("query_id", "doc_id", (inverse / inverse.mean()).alias("weight"),
                           pl.lit("ips").alias("source")).cast(PAIRS_SCHEMA)


SWEEP_METHODS = ("clicks (MNAR)", "IPS, true propensities", "SKIM", "MAR sample")


def exposure_sweep(ranked: pl.DataFrame, train_labels: pl.DataFrame, mapped: pl.DataFrame, ks: Sequence[int],
                   features: FrozenFeatures, test_qrels: pl.DataFrame, config: OvaHeadConfig, seed: int = 0,
                   progress: Callable[[str], None] = print) -> pl.DataFrame:
    """For each exposure window K (Algorithm 1 on complete labels): the unbiased metrics of the MNAR clicks,
    IPS with the true propensities, SKIM (clicks + mapped pairs) and a MAR sample of the clicks' size (Fig. 3)."""
    rows = []
    for k in ks:
        clicks = simulate_clicks(ranked, train_labels, k)
        if clicks.height == 0:
            progress(f"K={k}: no label exposed; skipped")
            continue
        training_sets = {
            "clicks (MNAR)": clicks,
            "IPS, true propensities": ips_with_true_propensities(clicks, train_labels),
            "SKIM": union_pairs(clicks, mapped),
            "MAR sample": missing_at_random_sample(train_labels, clicks.height, seed=seed),
        }
        for method, pairs in training_sets.items():
            metrics = score_training_pairs(pairs, features, test_qrels, config)
            rows.append({"exposure_k": k, "method": method, "training_pairs": pairs.height,
                         "labels_kept": clicks.height / max(train_labels.filter(pl.col("relevance") > 0).height, 1),
                         **metrics})
        progress(f"K={k}: {clicks.height} clicks; unbiased R@100 " + ", ".join(
            f"{r['method']} {r['R@100']:.4f}" for r in rows if r["exposure_k"] == k))
    return pl.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- student size

SLM_SIZE_SCHEMA = {
    "student": pl.String, "pipeline_student": pl.Boolean, "parameters_M": pl.Int64, "lora_steps": pl.Int64,
    "holdout_loss_before": pl.Float64, "holdout_loss_after": pl.Float64, "queries_written": pl.Int64,
    "grounded_share": pl.Float64, "junk_share": pl.Float64, "distinct_per_document": pl.Float64,
    "queries_kept": pl.Int64, "pairs_added": pl.Int64, "repair_precision": pl.Float64, "repair_recall": pl.Float64,
    "documents_repaired": pl.Int64, "R@10": pl.Float64, "R@100": pl.Float64,
}


@dataclass
class StudentScorer:
    """Paper Table 5's row of a student (`lib.student.StudentRun`): what it wrote for the `sources` sources asked
    about, its label repair against the held-back train labels (`oracle`), and the unbiased R@10/R@100 of a
    one-vs-all head over frozen features trained on the clicks plus its pairs."""

    clicks: pl.DataFrame
    oracle: pl.DataFrame
    features: FrozenFeatures
    test_qrels: pl.DataFrame
    config: OvaHeadConfig
    sources: int

    def clicks_only(self) -> dict:
        """Row `none`: the head trained on the clicks alone."""
        scores = score_training_pairs(self.clicks, self.features, self.test_qrels, self.config)
        return {"student": "none (clicks only)", "R@10": scores["R@10"], "R@100": scores["R@100"]}

    def row(self, name: str, pipeline_student: bool, run, parameters: int) -> dict:
        quality = judged_quality(run.judged, self.sources)
        repair = label_repair(run.pairs, self.clicks, self.oracle)
        scores = score_training_pairs(union_pairs(self.clicks, run.pairs), self.features, self.test_qrels,
                                      self.config)
        return {
            "student": name, "pipeline_student": pipeline_student, "parameters_M": round(parameters / 1e6),
            "lora_steps": run.training.steps, "holdout_loss_before": round(run.training.holdout_loss_before, 4),
            "holdout_loss_after": round(run.training.holdout_loss_after, 4),
            "queries_written": quality["queries"], "grounded_share": quality["grounded_share"],
            "junk_share": quality["junk_share"], "distinct_per_document": quality["distinct_queries_per_document"],
            "queries_kept": run.kept.height, "pairs_added": repair["pairs_added"],
            "repair_precision": repair["precision"], "repair_recall": repair["recall"],
            "documents_repaired": repair["documents_repaired"], "R@10": scores["R@10"], "R@100": scores["R@100"],
        }
