"""Smoke tests of the benchmark scripts' core functions at tiny sizes, so the scripts cannot rot.

No timing assertions: only that figures come out finite and positive and recall lies in [0, 1].
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `benchmarks`

from benchmarks import _common, mapping, scaling  # noqa: E402


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_measure_reports_time_and_memory_growth():
    with _common.measure() as m:
        block = np.ones(4_000_000)  # 30 MiB, touched
    assert block.sum() > 0
    assert _finite_positive(m.seconds) and m.peak_mib >= 0 and m.method


def test_clustered_space_gives_unit_vectors():
    vectors = _common.ClusteredSpace(dim=32, n_clusters=10, center_dim=8, latent_dim=4).sample(100, seed=1)
    assert vectors.shape == (100, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_mapping_benchmark_figures_are_sane():
    space = _common.ClusteredSpace(dim=32, n_clusters=20, center_dim=8, latent_dim=4)
    result = mapping.benchmark_vectors(space.sample(2000, seed=1), space.sample(500, seed=2), m=8, ef_construction=40,
                                       ef_sweep=(10, 40), exact_sample=200, sweep_sample=300, say=lambda _: None)
    for key in ("exact_qps", "build_seconds", "hnsw_qps", "speedup", "end_to_end_speedup"):
        assert _finite_positive(result[key]), key
    assert 0.0 <= result["recall"] <= 1.0 and result["ef"] in (10, 40)
    assert all(0.0 <= s["recall"] <= 1.0 and _finite_positive(s["qps"]) for s in result["sweep"])
    assert result["exact_peak_mib"] >= 0 and result["build_peak_mib"] >= 0
    mapping.print_tables([result | {"name": "tiny"}])


def test_scaling_stages_growth_exponent_and_plot(tmp_path):
    results = [scaling.run_size(n, tmp_path) for n in (200, 400)]
    for r in results:
        assert set(r["seconds"]) == set(scaling.STAGES)
        assert all(math.isfinite(v) and v >= 0 for v in r["seconds"].values())
        assert all(v >= 0 for v in r["peak_mib"].values())
        assert 0.0 <= r["hnsw_recall"] <= 1.0 and 0.0 <= r["unbiased_R@100"] <= 1.0
    assert scaling.growth_exponent([1, 10, 100], [2, 20, 200]) == pytest.approx(1.0)
    out = scaling.plot(results, tmp_path / "scaling.png")
    assert out.stat().st_size > 0


def test_training_and_orchestration_inputs_are_consistent():
    from benchmarks import orchestration, training
    from skim_assets.definitions import defs

    pairs, queries, documents, _ = training.world_tables(24)
    assert pairs.height > 0 and set(pairs["query_id"]) <= set(queries["query_id"])
    assert set(pairs["doc_id"]) <= set(documents["doc_id"])
    prompts, targets = training.lora_examples(4)
    assert len(prompts) == len(targets) == 4 and all(targets)
    # the Dagster side materializes exactly this subset of the `skim_core` job
    job_assets = {k.to_user_string() for k in defs.resolve_job_def("skim_core").asset_layer.executable_asset_keys}
    assert set(orchestration.SUBSET) <= job_assets



def test_encoder_benchmark_ways_agree_including_sentence_transformers():
    from benchmarks import encoder

    texts, _ = encoder.load_texts(24)
    result = encoder.run(texts[:24], batch_size=8)
    assert all(_finite_positive(r["per_s"]) for r in result["ways"].values())
    assert result["max_abs_diff"] < 1e-4  # every way, the saved folder under sentence-transformers too
    if importlib.util.find_spec("sentence_transformers"):
        assert any(name.startswith("sentence-transformers") for name in result["ways"])


def test_dual_encoder_labels_benchmark_rows_on_a_tiny_world():
    import polars as pl

    from benchmarks import dual_encoder_labels
    from skim_assets.lib.encoders import TextEncoder

    documents = pl.DataFrame({"doc_id": ["a", "b", "c", "d"], "title": ["Zorvex 1142", "Quillan 4210", "Marlo 9921",
                                                                      "Tessik 3310"]})
    queries = pl.DataFrame({"query_id": ["q1", "q2", "q3", "t1"], "text": ["remedy for migraine", "made in Lyon",
                                                                         "contains lavender", "migraine relief"]})
    labels = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q3"], "doc_id": ["a", "b", "b", "c"], "weight": [1.0] * 4})
    clicks = labels.filter((pl.col("query_id") != "q1") | (pl.col("doc_id") != "b"))  # (q1, b) held back
    test = pl.DataFrame({"query_id": ["t1"], "doc_id": ["a"], "relevance": [1]})
    rows = dual_encoder_labels.label_table({"clicks": clicks}, queries, documents, test, labels, [1e-4], True,
                                           lambda: TextEncoder(device="cpu"),
                                           {"epochs": 2, "batch_size": 4, "hard_negatives": 0}, batches=5)
    assert [(r["pairs"], r["masked"]) for r in rows] == [("none (zero-shot)", ""), ("clicks", "no"), ("clicks", "yes")]
    # a full batch of the clicks: q1's negatives b (relevant, unlabelled) and c; q2's a and c; q3's a and b
    assert rows[1]["false_negative_share"] == pytest.approx(1 / 6)
    assert all(0.0 <= r["R@10"] <= 1.0 and r["R@100"] == 1.0 for r in rows)  # 4 documents: all within 100


def test_neighbour_floor_benchmark_rows_on_two_topics():
    import polars as pl

    from benchmarks import neighbour_floor
    from skim_assets.lib.mapping import ClickNeighbours
    from skim_assets.lib.ova_head import OvaHeadConfig
    from skim_assets.lib.sweeps import FrozenFeatures, score_training_pairs

    # two topics of 12 documents; 4 train queries per topic, relevant to every document of their topic; the clicks
    # keep 2 per query; each document's synthetic query lands on a random train query of either topic
    rng = np.random.default_rng(0)
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    doc_ids = [f"D{t}{i:02d}" for t in range(2) for i in range(12)]
    doc_vectors = unit(np.repeat(np.eye(6)[:2], 12, axis=0) + 0.15 * rng.normal(size=(24, 6)))
    query_ids = [f"Q{t}{j}" for t in range(2) for j in range(4)]
    query_vectors = unit(np.repeat(np.eye(6)[:2], 4, axis=0) + 0.3 * rng.normal(size=(8, 6)))
    oracle = pl.DataFrame([(q, d, 1.0, "oracle") for q in query_ids for d in doc_ids if q[1] == d[1]],
                          schema=["query_id", "doc_id", "weight", "source"], orient="row")
    clicks = oracle.group_by("query_id", maintain_order=True).head(2).with_columns(source=pl.lit("click"))
    candidates = pl.DataFrame({"synthetic": np.arange(24, dtype=np.int64),
                               "query_id": [query_ids[j] for j in rng.integers(0, 8, size=24)],
                               "cosine": np.full(24, 0.9, dtype=np.float32)})
    candidates = ClickNeighbours(clicks, doc_ids, doc_vectors).annotate(candidates, doc_ids)
    features = FrozenFeatures(query_ids, query_vectors, doc_ids, doc_vectors)
    test = oracle.select("query_id", "doc_id", pl.lit(1).alias("relevance"))
    rows = neighbour_floor.floor_table(
        clicks, oracle, candidates, doc_ids, [0.8], [None, 0.5], [0],
        lambda pairs, seed: score_training_pairs(pairs, features, test, OvaHeadConfig(seed=seed)))
    assert [r["floor"] for r in rows] == ["clicks only", "none", "0.5"]
    unfloored, floored = rows[1], rows[2]
    assert 0.2 < unfloored["repair_precision"] < 0.8 and floored["repair_precision"] == 1.0
    assert 0 < floored["pairs_added"] < unfloored["pairs_added"]
    assert all(0.0 <= r["R@10"] <= 1.0 for r in rows)
