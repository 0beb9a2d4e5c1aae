"""The pure parts of benchmarks/graph_scaling.py: growth exponents, tables, the JSON document. No pipeline runs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks`

from benchmarks import graph_scaling as gs  # noqa: E402


def _size(n, **seconds):
    return {"documents": n, "total_seconds": sum(seconds.values()),
            "peak_rss_mib": 100.0 + n / 1000,
            "assets": {a: {"seconds": s, "peak_rss_mib": 50.0 + n / 1000} for a, s in seconds.items()}}


SIZES = {  # train grows as N^1.5 from 20 s, documents linearly from 1 s (noise-sized at the small end)
    "1000000": _size(1_000_000, train=20 * 1000**1.5, documents=1000.0),
    "1000": _size(1_000, train=20.0, documents=1.0),
    "10000": _size(10_000, train=20 * 10**1.5, documents=10.0),
}


def test_growth_exponent_recovers_a_power_law():
    sizes = [1e4, 1e5, 1e6]
    assert gs.growth_exponent(sizes, [3 * n**1.5 for n in sizes]) == pytest.approx(1.5)
    assert gs.growth_exponent(sizes, [7.0, 7.0, 7.0]) == pytest.approx(0.0)
    assert gs.growth_exponent([1e4, 1e5], [2.0, 20.0]) == pytest.approx(1.0)


def test_growth_exponent_needs_two_sizes_with_positive_seconds():
    assert gs.growth_exponent([1e4], [5.0]) is None
    assert gs.growth_exponent([1e4, 1e4], [5.0, 6.0]) is None
    assert gs.growth_exponent([1e4, 1e5], [5.0, 0.0]) is None  # a zero cannot be on a log-log line
    assert gs.growth_exponent([1e4, 1e5, 1e6], [1.0, None, 100.0]) == pytest.approx(1.0)


def test_exponents_per_asset():
    exponents = gs.exponents(SIZES)
    assert exponents["train"] == pytest.approx(1.5)
    assert exponents["documents"] == pytest.approx(1.0)
    assert gs.noise_sized(SIZES, "documents") and not gs.noise_sized(SIZES, "train")


def test_results_table_rows_by_asset_then_size_then_totals():
    lines = gs.results_table(SIZES).splitlines()
    assert lines[0] == "| asset | documents | seconds | peak_rss_mib |"
    assert lines[1] == "|---|---:|---:|---:|"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("documents", "1,000"), ("documents", "10,000"), ("documents", "1,000,000"),
        ("train", "1,000"), ("train", "10,000"), ("train", "1,000,000"),
        ("**total**", "1,000"), ("**total**", "10,000"), ("**total**", "1,000,000")]
    assert rows[0][2:] == ["1.00", "51.0"]
    assert rows[-1][2] == f"{20 * 1000**1.5 + 1000:,.2f}"


def test_results_table_shows_missing_figures_as_dashes():
    sizes = {"1000": {"documents": 1000, "total_seconds": 3.0, "peak_rss_mib": None,
                      "assets": {"documents": {"seconds": 3.0, "peak_rss_mib": None}}}}
    assert "| documents | 1,000 | 3.00 | - |" in gs.results_table(sizes)


def test_exponents_table_marks_noise_and_missing_fits():
    table = gs.exponents_table(SIZES)
    assert "| train | 1.50 |  |" in table
    assert "| documents | 1.00 | noise-sized" in table
    assert "| **total** |" in table
    single = gs.exponents_table({"1000": SIZES["1000"]})
    assert "| train | n/a |" in single


def test_step_group_of_graph_asset_ops():
    assert gs.step_group("synthetic_queries.synthetic_queries__write") == "synthetic_queries"
    assert gs.step_group("synthetic_queries.synthetic_queries__generate[shards_0]") == "synthetic_queries"
    assert gs.step_group("dataset_tables") == "dataset_tables"


def test_size_summary_counts_a_shared_step_once_and_adds_the_prelude():
    read = {"assets": {
        "documents": {"seconds": 4.0, "peak_rss_mib": 300.0, "step": "dataset_tables", "run_id": "r1"},
        "queries": {"seconds": 4.0, "peak_rss_mib": 300.0, "step": "dataset_tables", "run_id": "r1"},
        "base_retriever": {"seconds": 60.0, "peak_rss_mib": 900.0, "step": "base_retriever", "run_id": "r2"},
        "skim_retriever": {"seconds": None, "peak_rss_mib": None, "step": "skim_retriever", "run_id": "r2"},
    }, "missing": ["retrieval_metrics"], "check_seconds": 1.5}
    prelude = {"world_seconds": 2.0, "world_peak_rss_mib": 120.0, "import_seconds": 6.0, "import_peak_rss_mib": 200.0}
    size = gs.size_summary(1000, read, prelude, 75.123, failed=False)
    assert size["total_seconds"] == pytest.approx(4.0 + 60.0 + 2.0 + 6.0)
    assert size["peak_rss_mib"] == 900.0
    assert size["assets"]["world"] == {"seconds": 2.0, "peak_rss_mib": 120.0}
    assert size["assets"]["import"] == {"seconds": 6.0, "peak_rss_mib": 200.0}
    assert size["missing"] == ["retrieval_metrics"]
    assert size["last_invocation_wall_seconds"] == 75.12 and size["failed"] is False


def test_report_json_shape(tmp_path):
    document = gs.report(SIZES)
    assert set(document) == {"sizes", "exponents"}
    assert list(document["sizes"]) == ["1000", "10000", "1000000"]
    for size in document["sizes"].values():
        assert {"total_seconds", "peak_rss_mib", "assets"} <= set(size)
        for figures in size["assets"].values():
            assert {"seconds", "peak_rss_mib"} <= set(figures)
    assert set(document["exponents"]) == {"documents", "train"}
    assert document["exponents"]["train"] == pytest.approx(1.5)
    assert gs.report({"1000": SIZES["1000"]})["exponents"] == {"documents": None, "train": None}
    path = gs.write_json_atomic(document, tmp_path / "out" / "scaling.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(document))
    assert [p.name for p in path.parent.iterdir()] == ["scaling.json"]  # no temp file left


def test_import_flags_reproduce_the_world_spec():
    flags = gs.import_flags({"format": "beir", "source": ".", "exposure_k": 10, "simulate_bias": True,
                             "prompt_style": "wiki-categories", "generate": "documents_for_queries",
                             "query_metadata_field": "description", "demo_world": {"n_documents": 5}})
    assert flags == ["--format", "beir", "--exposure-k", "10", "--prompt-style", "wiki-categories",
                     "--generate", "documents_for_queries", "--query-metadata-field", "description"]
    assert "--no-simulate-bias" in gs.import_flags({"simulate_bias": False})
    assert gs.import_flags({"click_model": "position", "eta": 1.0}) == ["--click-model", "position", "--eta", "1.0"]


def test_plot_writes_a_png(tmp_path):
    out = gs.plot(SIZES, tmp_path / "scaling.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isfinite(out.stat().st_size) and out.stat().st_size > 1000


def test_peak_rss_mib_of_a_fresh_process_follows_what_it_touches():
    """In a fresh process (a long test process's peak is already far above a small block): the high-water mark
    rises by what the process touches."""
    code = """
from skim_assets.lib.storage import peak_rss_mib
before = peak_rss_mib()
block = bytearray(256 * 2**20)
block[:: 4096] = b"x" * len(block[:: 4096])
print(before, peak_rss_mib())
"""
    before, after = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert before > 0 and after >= before + 200 and after == round(after, 1)


def test_default_test_fraction_aims_at_a_fixed_number_of_test_queries():
    assert gs.default_test_fraction(2_000) == 1.0  # fewer fact values than the target: all of them
    large = gs.default_test_fraction(1_000_000)
    assert 0 < large < 0.1
    assert gs.default_test_fraction(100_000) > large


def test_main_writes_what_it_has_and_fails_on_a_failed_run(tmp_path, monkeypatch, capsys):
    """The harness around the pipeline, with world, import, materialize and the instance read stubbed out."""
    config = tmp_path / "scale.yaml"
    config.write_text("ops: {}\n")
    runs = []

    def prepare(root, documents, test_fraction):
        return {"world_seconds": 0.5, "world_peak_rss_mib": 90.0, "import_seconds": 5.0, "import_peak_rss_mib": 180.0}

    def materialize(root, documents, config_path, job):
        runs.append(documents)
        return documents < 5000, 10.0 * documents / 1000

    def collect(root, documents, job, prelude, wall, failed, extra):
        figures = {"seconds": documents / 1000, "peak_rss_mib": 500.0, "step": "train_pairs", "run_id": "r"}
        read = {"assets": {"train_pairs": figures}, "missing": [] if documents < 5000 else ["retrieval_metrics"]}
        return gs.size_summary(documents, read, prelude, wall, failed=failed, **extra)

    monkeypatch.setattr(gs, "prepare", prepare)
    monkeypatch.setattr(gs, "materialize", materialize)
    monkeypatch.setattr(gs, "collect", collect)
    out = tmp_path / "out.json"
    code = gs.main(["--sizes", "2000", "1000", "9000", "5000", "--root", str(tmp_path / "roots"), "--json", str(out),
                    "--config", str(config), "--plot", str(tmp_path / "plot.png")])
    assert code == 1 and runs == [1000, 2000, 5000]  # ascending; 9000 not started after 5000 failed
    document = json.loads(out.read_text())
    assert list(document["sizes"]) == ["1000", "2000", "5000"]
    assert document["sizes"]["5000"]["failed"] is True and document["sizes"]["5000"]["missing"] == ["retrieval_metrics"]
    assert document["exponents"]["train_pairs"] == pytest.approx(1.0)
    assert document["sizes"]["1000"]["total_seconds"] == pytest.approx(1.0 + 0.5 + 5.0)
    assert (tmp_path / "plot.png").exists()
    printed = capsys.readouterr().out
    assert "| asset | documents | seconds | peak_rss_mib |" in printed and "retrieval_metrics" in printed
