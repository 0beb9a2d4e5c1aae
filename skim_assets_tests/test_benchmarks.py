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
