"""lib.metrics against outside references on random rankings: trec_eval itself (pytrec-eval-terrier, a dev extra)
for P@k, R@k and nDCG@k with binary and graded labels, with and without tied scores; and PSP@k against a line by
line transcription of pyxclib's `psprecision` (xclib/evaluation/xc_metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.metrics import evaluate_rankings, jain_propensities, ndcg_gains

try:
    import pytrec_eval
except ImportError:  # the dev extra is not installed: only the trec_eval comparisons are skipped
    pytrec_eval = None

needs_trec_eval = pytest.mark.skipif(pytrec_eval is None,
                                     reason="pytrec-eval-terrier is absent (pip install -e .[dev])")

KS = (1, 5, 10, 25, 100)
TREC_MEASURES = {"P": "P", "R": "recall", "nDCG": "ndcg_cut"}  # ours -> trec_eval's


def random_world(seed: int, graded: bool, ties: bool, n_queries: int = 80, n_docs: int = 400):
    """Rankings of 1..150 distinct docs per query and 1..30 labels per query, a third of them among its ranked
    docs so there are hits at every depth; relevance 0 rows too (judged non-relevant). Doc ids of varying length
    ("d7", "d70", "d700") so their string order is not their numeric order. Tie-free scores unless `ties`."""
    rng = np.random.default_rng(seed)
    docs = np.array([f"d{i}" for i in rng.permutation(n_docs * 3)[:n_docs]])
    ranked, qrels = [], []
    for q in range(n_queries):
        query = f"q{q}"
        depth = int(rng.integers(1, 151))
        predicted = rng.choice(n_docs, size=depth, replace=False)
        scores = rng.choice(10**9, size=depth, replace=False) / 1e9  # distinct
        if ties:
            scores = np.round(scores, 1)  # ~10 distinct values per query: many tied runs
        ranked += [(query, docs[d], float(s)) for d, s in zip(predicted, scores)]
        n_labels = int(rng.integers(1, 31))
        from_ranking = rng.choice(predicted, size=min(depth, n_labels // 3 + 1), replace=False)
        others = rng.choice(n_docs, size=n_labels, replace=False)
        labelled = list(dict.fromkeys([*from_ranking.tolist(), *others.tolist()]))[:n_labels]
        grades = rng.integers(1, 4, size=len(labelled)) if graded else np.ones(len(labelled), dtype=int)
        qrels += [(query, docs[d], float(g)) for d, g in zip(labelled, grades)]
        judged_not_relevant = np.setdiff1d(rng.choice(n_docs, size=5, replace=False), labelled)
        qrels += [(query, docs[d], 0.0) for d in judged_not_relevant]
    ranked = pl.DataFrame(ranked, schema={"query_id": pl.String, "doc_id": pl.String, "score": pl.Float64},
                          orient="row")
    qrels = pl.DataFrame(qrels, schema={"query_id": pl.String, "doc_id": pl.String, "relevance": pl.Float64},
                         orient="row")
    return ranked, qrels


def trec_eval_means(ranked: pl.DataFrame, qrels: pl.DataFrame) -> dict[str, float]:
    """trec_eval's P_k, recall_k and ndcg_cut_k (gain = the relevance level) averaged over the queries."""
    qrel_dict, run = {}, {}
    for query, doc, relevance in qrels.iter_rows():
        qrel_dict.setdefault(query, {})[doc] = int(relevance)
    for query, doc, score in ranked.iter_rows():
        run.setdefault(query, {})[doc] = score
    cut = ",".join(map(str, KS))
    per_query = pytrec_eval.RelevanceEvaluator(qrel_dict,
                                               {f"P.{cut}", f"recall.{cut}", f"ndcg_cut.{cut}"}).evaluate(run)
    assert len(per_query) == ranked["query_id"].n_unique()  # every query is labelled and has predictions
    return {f"{ours}@{k}": float(np.mean([values[f"{theirs}_{k}"] for values in per_query.values()]))
            for ours, theirs in TREC_MEASURES.items() for k in KS}


def max_difference(ours: dict, reference: dict) -> float:
    return max(abs(ours[key] - reference[key]) for key in reference)


@needs_trec_eval
@pytest.mark.parametrize("ties", [False, True], ids=["tie-free", "tied-scores"])
@pytest.mark.parametrize("graded, seed", [(False, 0), (False, 1), (False, 2), (True, 3), (True, 4), (True, 5)])
def test_metrics_match_trec_eval_binary_and_graded(graded, seed, ties):
    ranked, qrels = random_world(seed, graded=graded, ties=ties)
    gains = "graded" if graded else "binary"
    assert ndcg_gains(qrels) == gains
    reference = trec_eval_means(ranked, qrels)
    ours = evaluate_rankings(ranked, qrels, KS, gains=gains)
    assert max_difference(ours, reference) < 1e-12, {k: (ours[k], reference[k]) for k in reference}
    if graded:  # binary gains on graded qrels: P and R are unchanged, nDCG is not what trec_eval reports
        binary = evaluate_rankings(ranked, qrels, KS)
        assert all(binary[f"{m}@{k}"] == ours[f"{m}@{k}"] for m in ("P", "R") for k in KS)
        assert max(abs(binary[f"nDCG@{k}"] - reference[f"nDCG@{k}"]) for k in KS) > 1e-3


def test_graded_gains_on_a_hand_computed_query():
    ranked = pl.DataFrame({"query_id": ["q"] * 3, "doc_id": ["a", "c", "x"], "score": [0.5, 0.9, 0.1]})
    qrels = pl.DataFrame({"query_id": ["q"] * 3, "doc_id": ["a", "c", "d"], "relevance": [2.0, 1.0, 0.0]})
    # ranking c (grade 1), a (grade 2), x; ideal a, c: (1 + 2/log2 3) / (2 + 1/log2 3)
    got = evaluate_rankings(ranked, qrels, (3,), gains="graded")
    assert got["nDCG@3"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)), abs=1e-15)
    with pytest.raises(ValueError, match="gains must be one of"):
        evaluate_rankings(ranked, qrels, (3,), gains="exponential")


def test_the_demo_worlds_labels_keep_binary_gains(tiny_demo):
    from skim_assets.lib.datasets import import_tables, read_spec

    qrels = import_tables(tiny_demo, read_spec(tiny_demo)).qrels
    assert qrels["relevance"].unique().to_list() == [1.0]
    assert ndcg_gains(qrels) == "binary"
    assert ndcg_gains(qrels.with_columns(relevance=pl.when(pl.col("doc_id") == qrels["doc_id"][0])
                                         .then(2.0).otherwise(pl.col("relevance")))) == "graded"


# ------------------------------------------------------------------------------------- pyxclib's psprecision


def pyxclib_inverse_propensities(train_labels: np.ndarray, a: float, b: float) -> np.ndarray:
    """`compute_inv_propesity`: 1 + C (N_l + B)^-A with C = (ln N - 1)(B + 1)^A; N = rows, N_l = column sums."""
    num_instances = train_labels.shape[0]
    freqs = train_labels.sum(axis=0)
    c = (np.log(num_instances) - 1) * np.power(b + 1, a)
    return 1.0 + c * np.power(freqs + b, -a)


def pyxclib_psprecision(scores: np.ndarray, true_labels: np.ndarray, inv_psp: np.ndarray, k: int) -> np.ndarray:
    """`psprecision` for dense inputs: PSP@1..k. Top k by score (tie-free here); the ideal is the top k of
    true_labels * inv_psp; `_precision` averages cumsum(flags) / rank over every row (query), so PSP@k is a ratio
    of means over all queries (unlabelled ones add 0 to both)."""
    indices = np.argsort(-scores, axis=-1)[:, :k]
    ps_indices = np.argsort(-(true_labels * inv_psp), axis=-1)[:, :k]
    eval_flags = np.take_along_axis(true_labels, indices, axis=-1) * inv_psp[indices]
    ps_eval_flags = np.take_along_axis(true_labels, ps_indices, axis=-1) * inv_psp[ps_indices]

    def _precision(flags):
        return np.mean(np.cumsum(flags, axis=-1) * (1 / (np.arange(k) + 1)), axis=0)

    return _precision(eval_flags) / _precision(ps_eval_flags)


@pytest.mark.parametrize("a, b", [(0.55, 1.5), (0.5, 0.4), (0.6, 2.6)])
def test_psp_matches_pyxclibs_psprecision(a, b):
    rng = np.random.default_rng(7)
    n_train, n_queries, n_labels = 500, 60, 120
    # long-tailed label frequencies, some labels never seen in training (N_l = 0)
    train = (rng.random((n_train, n_labels)) < np.geomspace(0.2, 1e-4, n_labels)).astype(np.float64)
    test = (rng.random((n_queries, n_labels)) < 0.05).astype(np.float64)
    test[:5] = 0.0  # unlabelled queries: pyxclib averages their zeros in, we leave them out; the ratio agrees
    scores = rng.random((n_queries, n_labels)) + test * rng.random((n_queries, n_labels))  # tie-free, some signal
    inv_psp = pyxclib_inverse_propensities(train, a, b)

    labels = [f"L{j}" for j in range(n_labels)]
    propensities = jain_propensities(pl.DataFrame({"doc_id": labels, "count": train.sum(axis=0).astype(np.int64)}),
                                     n_train, a, b)
    assert np.allclose(1.0 / propensities["propensity"].to_numpy(), inv_psp, rtol=1e-14, atol=0)
    ranked = pl.DataFrame({"query_id": np.repeat([f"q{i:02d}" for i in range(n_queries)], n_labels),
                           "doc_id": labels * n_queries, "score": scores.ravel()})
    rows, cols = np.nonzero(test)
    qrels = pl.DataFrame({"query_id": [f"q{i:02d}" for i in rows], "doc_id": [labels[j] for j in cols],
                          "relevance": np.ones(len(rows))})
    ks = (1, 3, 5, 10)
    ours = evaluate_rankings(ranked, qrels, ks, propensities)
    reference = pyxclib_psprecision(scores, test, inv_psp, max(ks))
    differences = [abs(ours[f"PSP@{k}"] - reference[k - 1]) for k in ks]
    assert max(differences) < 1e-12, (ours, reference)
    assert 0 < ours["PSP@5"] < 1  # not a degenerate case


def test_the_evaluation_scores_graded_qrels_with_graded_gains_and_says_so(storage_root, tiny_demo):
    """`retrieval_metrics`' scoring (zero-shot model only: no trained model folders) on the tiny demo world, its
    unbiased test labels given grades 1 and 2: that test set's rows use and name graded gains, the click-like
    biased one (grades 1) binary gains."""
    from skim_assets.assets.evaluation import evaluate_models
    from skim_assets.lib.datasets import import_tables, read_spec
    from skim_assets.lib.formats import IMPRESSIONS_SCHEMA
    from skim_assets.resources import EncoderResource, StorageResource, Tables, TrainingView

    tables = import_tables(tiny_demo, read_spec(tiny_demo))
    test_ids = tables.queries.filter(pl.col("split") == "test").select("query_id")
    labels = tables.qrels.join(test_ids, on="query_id")
    graded = labels.sort("query_id", "doc_id").with_columns(relevance=(pl.int_range(pl.len()) % 2 + 1).cast(pl.Float64))
    train = tables.qrels.join(test_ids, on="query_id", how="anti")
    clicks = train.select("query_id", "doc_id", weight=pl.lit(1.0), source=pl.lit("click"))
    view = TrainingView(Tables(clicks, documents=tables.documents, queries=tables.queries, click_pairs=clicks,
                               impressions=pl.DataFrame(schema=IMPRESSIONS_SCHEMA)))
    table, rankings, missing = evaluate_models(
        StorageResource(root=str(storage_root)), EncoderResource(device="cpu"), "tiny", view,
        {"biased": labels, "unbiased": graded}, {}, lambda message: None)
    assert table["model"].unique().to_list() == ["zero_shot"]
    assert dict(zip(table["test_set"], table["ndcg_gains"])) == {"biased": "binary", "unbiased": "graded"}
    ranked = rankings.drop("model")
    unbiased = table.filter(pl.col("test_set") == "unbiased").row(0, named=True)
    assert unbiased["nDCG@10"] == evaluate_rankings(ranked, graded, (10,), gains="graded")["nDCG@10"]
    assert unbiased["nDCG@10"] != evaluate_rankings(ranked, graded, (10,))["nDCG@10"]
    assert unbiased["R@10"] == table.filter(pl.col("test_set") == "biased")["R@10"][0]  # same labels, binary R
