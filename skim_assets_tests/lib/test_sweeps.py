"""The sweeps' training-data transforms and curves on toy data with hand-computed expectations."""

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.ova_head import OvaHeadConfig
from skim_assets.lib.sweeps import (
    FrozenFeatures,
    exposure_sweep,
    ips_with_true_propensities,
    tau_sweep,
    true_document_propensities,
)

LABELS = pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4", "q1", "q2", "q5"],
                       "doc_id": ["A", "A", "A", "A", "B", "B", "C"],
                       "relevance": [1.0] * 7})
CLICKS = pl.DataFrame({"query_id": ["q1", "q1", "q2"], "doc_id": ["A", "B", "B"], "weight": [1.0] * 3,
                       "source": ["click"] * 3})


def test_true_propensities_are_observed_over_relevant_labels_per_document():
    got = dict(true_document_propensities(CLICKS, LABELS).iter_rows())
    assert got == pytest.approx({"A": 0.25, "B": 1.0, "C": 0.01})  # C: no click, floored


def test_ips_with_true_propensities_upweights_rarely_exposed_documents():
    pairs = ips_with_true_propensities(CLICKS, LABELS).sort("query_id", "doc_id")
    # 1/p = 4 (A), 1 (B), 1 (B); mean 2 -> 2, 0.5, 0.5
    assert pairs["weight"].to_list() == pytest.approx([2.0, 0.5, 0.5])
    assert set(pairs["source"]) == {"ips"}


def _world(n_docs=12, per_doc=4, seed=0):
    """Queries that sit near their document's vector: a head trained on more of them recalls more."""
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(n_docs, 16))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    query_ids, vectors, labels = [], [], []
    for d in range(n_docs):
        for j in range(per_doc):
            v = docs[d] + 0.35 * rng.normal(size=16)
            query_ids.append(f"q{d}-{j}")
            vectors.append(v / np.linalg.norm(v))
            labels.append((f"q{d}-{j}", f"d{d}", 1.0))
    features = FrozenFeatures(query_ids, np.array(vectors, np.float32), [f"d{d}" for d in range(n_docs)],
                              docs.astype(np.float32))
    labels = pl.DataFrame(labels, schema=["query_id", "doc_id", "relevance"], orient="row")
    return features, labels


def test_tau_sweep_adds_fewer_pairs_as_tau_rises():
    features, labels = _world()
    train = labels.filter(pl.col("query_id").str.ends_with("-0") | pl.col("query_id").str.ends_with("-1"))
    test = labels.join(train.select("query_id"), on="query_id", how="anti")
    clicks = train.filter(pl.col("doc_id").is_in([f"d{i}" for i in range(6)])).select(
        "query_id", "doc_id", pl.lit(1.0).alias("weight"), pl.lit("click").alias("source"))
    # candidates: synthetic query i of doc i%12 near its train queries, with cosines 0.9 / 0.7 / 0.5
    synthetic_doc_ids = [f"d{i}" for i in range(12)]
    candidates = pl.DataFrame({
        "synthetic": [i for i in range(12) for _ in range(3)],
        "query_id": [f"q{i}-{j}" for i in range(12) for j in (0, 1, 0)],
        "cosine": [c for _ in range(12) for c in (0.9, 0.7, 0.5)],
    }, schema={"synthetic": pl.Int64, "query_id": pl.String, "cosine": pl.Float32})
    table = tau_sweep(clicks, candidates, synthetic_doc_ids, [0.7, 0.8, 0.9, 0.99], features, test,
                      OvaHeadConfig(epochs=5), progress=lambda _: None)
    # (1+cos)/2 = 0.95 (q-0), 0.85 (q-1), 0.75 (q-0 again: the max 0.95 is kept) -> per document 2 pairs at
    # tau 0.7 and 0.8, 1 at 0.9, none at 0.99; documents d0-d5 already have both pairs as clicks
    assert table["pairs_added"].to_list() == [12, 12, 6, 0]
    assert table["tau"].to_list() == [0.7, 0.8, 0.9, 0.99]
    assert table["R@10"].is_between(0, 1).all() and table["R@100"].to_list() == pytest.approx([1.0] * 4)


def test_exposure_sweep_scores_four_training_sets_per_window_with_equal_label_budgets():
    features, labels = _world(n_docs=10, per_doc=3)
    train = labels.filter(~pl.col("query_id").str.ends_with("-2"))
    test = labels.filter(pl.col("query_id").str.ends_with("-2"))
    # a ranking that puts doc d(i) at rank i+1 for every query: window K exposes documents d0..d(K-1)
    ranked = pl.DataFrame([(q, f"d{r}", 1.0 - r / 10, r + 1) for q in train["query_id"].unique().sort()
                           for r in range(10)],
                          schema={"query_id": pl.String, "doc_id": pl.String, "score": pl.Float64, "rank": pl.Int32},
                          orient="row")
    mapped = pl.DataFrame({"query_id": ["q9-0"], "doc_id": ["d9"], "weight": [0.9], "source": ["skim"]})
    table = exposure_sweep(ranked, train, mapped, [2, 5, 10], features, test, OvaHeadConfig(epochs=3), seed=1,
                           progress=lambda _: None)
    assert table.height == 12 and table["exposure_k"].unique().sort().to_list() == [2, 5, 10]
    sizes = {(r["exposure_k"], r["method"]): r["training_pairs"] for r in table.to_dicts()}
    for k in (2, 5, 10):
        clicks = 2 * k  # two train queries per exposed document
        assert sizes[(k, "clicks (MNAR)")] == sizes[(k, "MAR sample")] == sizes[(k, "IPS, true propensities")] == clicks
        assert sizes[(k, "SKIM")] == clicks + (1 if k < 10 else 0)  # at K=10 the mapped pair is already a click
    assert table.filter(pl.col("exposure_k") == 10)["labels_kept"].to_list() == pytest.approx([1.0] * 4)
