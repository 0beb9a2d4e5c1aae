"""Dagster layer: the whole graph end to end on a tiny world, import failures, click logs, the sensor."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from skim_assets.assets.datasets import click_log_pairs, dataset_tables
from skim_assets.assets.distillation import (
    LoraAdapterConfig,
    TeacherDemonstrationsConfig,
    base_slm,
    teacher_demonstrations,
)
from skim_assets.assets.generation import SyntheticQueriesConfig, generation_assets
from skim_assets.assets.mapping import MappingConfig
from skim_assets.assets.simulation import simulated_clicks
from skim_assets.assets.sweeps import SlmSizeSweepConfig, slm_size_report
from skim_assets.assets.training import MethodModelsConfig, RetrieverTrainingConfig, train_pairs
from skim_assets.definitions import ASSETS, all_checks, defs
from skim_assets.lib.formats import IMPRESSIONS_SCHEMA
from skim_assets.lib.methods import METHODS, models_asset
from skim_assets.lib.quality import label_repair
from skim_assets.lib.slm import BUNDLED_SLMS, BundledGguf
from skim_assets.partitions import dataset_partitions
from skim_assets.resources import (
    EncoderResource,
    GeneratorResource,
    StorageResource,
    Tables,
    TeacherResource,
    TrainingView,
    storage_resources,
)
from skim_assets.sensors import dataset_folder_sensor
from skim_assets_tests.conftest import TINY_WORLD, materialize_selected

QUICK_TRAINING = MethodModelsConfig(
    dual_encoder=RetrieverTrainingConfig(epochs=2, learning_rate=1e-4, hard_negatives=1))
MODELS = [models_asset(method) for method in METHODS]
MODEL_NAMES = [name for method in METHODS.values() for name in method.model_names.values()]  # as the metrics name them


def _resources(root, base_model_path=""):
    return {
        **storage_resources(root),
        "encoder": EncoderResource(device="cpu"),
        "teacher": TeacherResource(kind="keyphrase"),
        "generator": GeneratorResource(base_model_path=str(base_model_path), device="cpu", backend="transformers"),
    }


def _instance(*datasets):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(dataset_partitions.name, list(datasets))
    return instance


def _materialize(assets, root, dataset, instance=None, base_model_path="", **kwargs):
    return materialize_selected(assets, partition_key=dataset, instance=instance or _instance(dataset),
                                resources=_resources(root, base_model_path), raise_on_error=False, **kwargs)


def test_definitions_load_with_every_asset_and_the_pipeline_job():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"documents", "queries", "relevance_labels", "click_train_pairs", "unbiased_test_qrels",
            "base_models", "oracle_models", "retrieval_metrics"} <= keys
    assert defs.resolve_job_def("skim_pipeline") is not None


@dataclass
class TinyRun:
    """The whole graph materialized once on the tiny world: its storage root, the world's folder, the run, every
    materialization's metadata by asset, and the run config."""

    root: Path
    world: Path
    result: dg.ExecuteInProcessResult
    events: dict
    run_config: dg.RunConfig


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_causal_lm, tiny_causal_lm_wider) -> TinyRun:
    """Every asset and check on the 24-document world with tiny models (the pipeline's student and, in the
    student-size sweep, a wider one); the tests below each read one part of what it wrote."""
    from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset

    storage_root = tmp_path_factory.mktemp("tiny_run") / "root"
    world = storage_root / "inputs" / "tiny"
    write_demo_dataset(world, DemoWorldConfig(**TINY_WORLD))
    run_config = dg.RunConfig(ops={
        # Table 5: the pipeline's own student and a second, wider one distilled and run by the sweep
        "slm_size_report": SlmSizeSweepConfig(student_models=[str(tiny_causal_lm), str(tiny_causal_lm_wider)]),
        # SKIM keeps only pairs whose document sits near one of its query's clicks (the sweeps apply it too)
        "mapped_pairs": MappingConfig(click_neighbour_floor=0.3, examined_positions=3),
        **{name: QUICK_TRAINING for name in MODELS},
        **{name: LoraAdapterConfig(epochs=1, min_steps=0, effective_batch_size=8, micro_batch_size=8)
           for name in ("lora_adapter", "lora_adapter_no_metadata")},
        # a random tiny LM writes ungrounded text: SKIM's own generation keeps it (so the mapping has rows to map),
        # the ablations run the default quality filter
        **{asset.key.path[-1]: SyntheticQueriesConfig(max_new_tokens=12, shard_size=10,
                                                      quality_filter=asset.key.path[-1] != "synthetic_queries",
                                                      samples=2 if asset.key.path[-1] == "synthetic_queries" else 1)
           for asset in generation_assets},
    })
    result = _materialize([*ASSETS, *all_checks], storage_root, "tiny", base_model_path=tiny_causal_lm,
                          run_config=run_config)
    assert result.success
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    return TinyRun(storage_root, world, result, events, run_config)


def test_every_asset_materializes_and_no_blocking_check_fails(tiny_run):
    result = tiny_run.result
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert len(checks) == len(all_checks)
    blocking_failures = [k for k, e in checks.items() if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    assert blocking_failures == []
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {a.to_user_string() for asset in ASSETS for a in asset.keys}


def test_the_layout_owns_every_folder_under_the_root(tiny_run):
    storage_root = tiny_run.root
    # the layout owns every folder under the root: each holds an asset's artifacts or a kind of state it names,
    # so `skim import --replace` calls only artifacts stale
    from skim_assets.lib.layout import Layout, is_artifact_folder

    assets = {a.path[-1] for asset in ASSETS for a in asset.keys}
    assert {p.name for p in storage_root.iterdir() if p.is_dir() and is_artifact_folder(p.name)} <= assets
    # every asset but the shared ones (the base model, the one DuckDB file of every dataset) has a folder per dataset
    assert set(Layout(storage_root).artifacts_of("tiny")) == assets - {"base_slm", "duckdb_catalogue"}


def test_every_model_is_trained_and_evaluated_on_both_test_sets(tiny_run):
    storage_root, events = tiny_run.root, tiny_run.events
    metrics = pl.read_parquet(storage_root / "retrieval_metrics" / "tiny" / "data.parquet")
    assert set(metrics["model"]) == {"zero_shot", *MODEL_NAMES}
    assert {"base_retriever", "oracle_retriever", "skim_retriever", "skim_ova_head"} <= set(metrics["model"])
    n_models = 1 + len(MODEL_NAMES)
    assert set(metrics["test_set"]) == {"biased", "unbiased"}
    for column in ("P@5", "R@10", "R@25", "R@100", "nDCG@10", "PSP@5"):
        assert metrics[column].is_between(0, 1).all()
    # every model sees the whole (tiny) corpus in its top 100, so unbiased R@100 is exactly 1
    assert metrics.filter(pl.col("test_set") == "unbiased")["R@100"].to_list() == pytest.approx([1.0] * n_models)

    shown = [r.data for r in events["retrieval_metrics"]["metrics"].records]
    assert len(shown) == 2 * n_models and any(r["model"] == "zero_shot" and r["test_set"] == "biased" for r in shown)
    # shares shown as percentages (R@100 is 1 on the unbiased set), rows of SKIM first
    assert {r["R@100"] for r in shown if r["test_set"] == "unbiased"} == {100.0}
    assert shown[0]["model"].startswith("skim")
    assert events["click_train_pairs"]["fraction_of_labels_kept"].value < 1.0  # the bias removed labels
    assert events["oracle_models"]["training_pairs"].value > events["base_models"]["training_pairs"].value
    assert (events["oracle_models"]["ova_head_training_pairs"].value
            > events["base_models"]["ova_head_training_pairs"].value)
    assert (storage_root / "oracle_models" / "tiny" / "encoder" / "model.safetensors").exists()
    assert (storage_root / "oracle_models" / "tiny" / "head.npz").exists()
    assert events["base_models"]["resumed_from_step"].value == 0  # no checkpoint was left to resume
    # the training view travels by hard links: SKIM's repaired training set holds the imported documents' file
    import os

    carried = storage_root / "augmented_train_pairs" / "tiny" / "documents.parquet"
    assert os.stat(carried).st_ino == os.stat(storage_root / "documents" / "tiny" / "data.parquet").st_ino
    assert events["augmented_train_pairs"]["carried_tables"].value == ["click_pairs", "documents", "impressions",
                                                                      "queries"]
    view = TrainingView(Tables(folder=storage_root / "augmented_train_pairs" / "tiny"))
    assert view.clicks.equals(pl.read_parquet(storage_root / "train_pairs" / "tiny" / "data.parquet"))


def test_the_teacher_and_the_student_write_for_every_document_and_are_judged(tiny_run):
    storage_root, events = tiny_run.root, tiny_run.events
    assert events["teacher_demonstrations"]["teacher_backend"].value == "keyphrase"
    assert events["teacher_demonstrations"]["parse_rate"].value > 0.9
    demonstrations = pl.read_parquet(storage_root / "teacher_demonstrations" / "tiny" / "data.parquet")
    assert demonstrations["doc_id"].n_unique() >= 22 and demonstrations.height >= 24 * 3  # a 24-product world
    assert events["lora_adapter"]["holdout_loss_after"].value < events["lora_adapter"]["holdout_loss_before"].value
    assert (storage_root / "lora_adapter" / "tiny" / "adapter" / "adapter_model.safetensors").exists()
    raw = pl.read_parquet(storage_root / "synthetic_queries" / "tiny" / "raw.parquet")
    # two outputs per document (set above): greedy, then one sampled, each in 3 shards of 10 documents
    assert raw.height == 2 * 24 and sorted(raw["sample"].unique()) == [0, 1]
    assert events["synthetic_queries"]["shards"].value == 6
    assert events["synthetic_queries"]["samples_per_document"].value == 2
    assert events["synthetic_queries"]["backend"].value == "transformers"
    assert 0 <= events["mapped_pairs"]["hnsw_recall_at_k"].value <= 1
    # what was written is judged (grounded, junk, distinct), before and after the quality filter
    judged = pl.read_parquet(storage_root / "synthetic_queries_no_metadata" / "tiny" / "judged.parquet")
    kept = pl.read_parquet(storage_root / "synthetic_queries_no_metadata" / "tiny" / "data.parquet")
    assert {"grounded", "junk"} <= set(judged.columns)
    assert kept.height == judged["grounded"].sum() <= judged.height
    no_metadata = events["synthetic_queries_no_metadata"]
    assert no_metadata["quality_filter"].value is True and no_metadata["kept_grounded_share"].value in (0.0, 1.0)
    assert 0 <= events["synthetic_queries"]["written_grounded_share"].value <= 1
    assert 0 <= events["synthetic_queries"]["agreement_f1"].value <= 1
    assert events["teacher_demonstrations"]["teacher_grounded_share"].value == 1.0  # keyphrases: text of the doc


def test_the_mapping_applies_tau_the_click_neighbour_floor_and_the_shown_filter(tiny_run):
    storage_root, events = tiny_run.root, tiny_run.events
    repair = pl.read_parquet(storage_root / "label_repair_report" / "tiny" / "data.parquet")
    assert "skim" in repair["method"].to_list() and "base" not in repair["method"].to_list()
    assert repair["precision"].is_between(0, 1).all() and repair["recall"].is_between(0, 1).all()
    oracle_row = repair.filter(pl.col("method") == "oracle").row(0, named=True)
    assert oracle_row["precision"] == 1.0 and oracle_row["recall"] == 1.0  # all train labels repair everything
    mapped = pl.read_parquet(storage_root / "mapped_pairs" / "tiny" / "data.parquet")
    assert mapped["weight"].is_between(0.8, 1.0).all() and set(mapped["source"]) <= {"skim"}
    # the floor: the kept pairs are exactly the candidates at tau whose document is a neighbour of a click
    candidates = pl.read_parquet(storage_root / "mapped_pairs" / "tiny" / "candidates.parquet")
    written_for = pl.read_parquet(storage_root / "mapped_pairs" / "tiny" / "synthetic.parquet")["doc_id"]
    at_tau = candidates.with_columns(doc_id=written_for.gather(candidates["synthetic"])).filter(
        pl.col("cosine") >= 0.6 - 1e-6)  # (1 + cos) / 2 >= 0.8
    # ... and that the click log did not show on the first 3 positions and leave unclicked (the filter, as set)
    seen = pl.col("unclicked_position").is_null() | (pl.col("unclicked_position") > 3)
    passing = at_tau.filter((pl.col("click_neighbour_cosine") >= 0.3) & seen)
    assert set(mapped.select("query_id", "doc_id").iter_rows()) == set(passing.select("query_id", "doc_id").iter_rows())
    assert events["mapped_pairs"]["settings"].value["click_neighbour_floor"] == 0.3
    below = events["mapped_pairs"]["pairs_below_neighbour_floor"].value
    assert below == at_tau.filter(seen).select("query_id", "doc_id").n_unique() - mapped.height
    passed_over = events["mapped_pairs"]["pairs_shown_not_clicked"].value
    assert passed_over == at_tau.filter(pl.col("click_neighbour_cosine") >= 0.3).select(
        "query_id", "doc_id").n_unique() - mapped.height
    assert events["mapped_pairs"]["shown_not_clicked_filter"].value == "on, positions 1-3"
    # label repair states what the filter removed and the precision without it
    assert events["label_repair_report"]["skim_pairs_shown_not_clicked"].value == passed_over
    assert 0 <= events["label_repair_report"]["skim_precision_without_shown_filter"].value <= 1
    # pairs_added counts the mapped pairs that are not clicks already, as the label-repair report does
    clicks = pl.read_parquet(storage_root / "train_pairs" / "tiny" / "data.parquet")
    assert events["mapped_pairs"]["pairs_mapped"].value == mapped.height
    assert (events["mapped_pairs"]["pairs_added"].value
            == mapped.join(clicks, on=["query_id", "doc_id"], how="anti").height)
    assert events["mapped_pairs"]["pairs_added"].value == repair.filter(pl.col("method") == "skim")["pairs_added"][0]
    augmented = pl.read_parquet(storage_root / "augmented_train_pairs" / "tiny" / "data.parquet")
    assert augmented.height >= pl.read_parquet(storage_root / "train_pairs" / "tiny" / "data.parquet").height


def test_the_simulated_engine_logs_impressions_that_feed_position_propensities(tiny_run):
    storage_root, events = tiny_run.root, tiny_run.events
    # the simulated engine's impressions: its top exposure_k per train query, clicked exactly where relevant
    shown = pl.read_parquet(storage_root / "click_train_pairs" / "tiny" / "impressions.parquet")
    exposure_k = json.loads((tiny_run.world / "dataset.json").read_text())["exposure_k"]
    assert shown.group_by("query_id").len()["len"].max() == exposure_k and shown["position"].min() == 1
    oracle = pl.read_parquet(storage_root / "oracle_train_pairs" / "tiny" / "data.parquet")
    clicked = shown.filter(pl.col("clicks") > 0)
    assert clicked.join(oracle, on=["query_id", "doc_id"], how="anti").height == 0  # deterministic: relevant only
    assert shown.filter(pl.col("clicks") == 0).join(oracle, on=["query_id", "doc_id"], how="semi").height == 0
    assert pl.read_parquet(storage_root / "train_pairs" / "tiny" / "impressions.parquet").height == shown.height
    # position propensities from those impressions, against the truth (deterministic: every shown one examined)
    propensities = pl.read_parquet(storage_root / "ips_position_train_pairs" / "tiny" / "propensities.parquet")
    assert propensities["position"].to_list() == list(range(1, exposure_k + 1))
    assert propensities["true_propensity"].to_list() == [1.0] * exposure_k and propensities["propensity"][0] == 1.0
    assert events["ips_position_train_pairs"]["propensity_mean_abs_error"].value >= 0
    ips_position = pl.read_parquet(storage_root / "ips_position_train_pairs" / "tiny" / "data.parquet")
    assert ips_position["weight"].mean() == pytest.approx(1.0) and ips_position.height == clicks_height(storage_root)


def test_the_sweeps_score_every_tau_floor_and_exposure_window(tiny_run):
    storage_root = tiny_run.root
    mapped = pl.read_parquet(storage_root / "mapped_pairs" / "tiny" / "data.parquet")
    tau_sweep = pl.read_parquet(storage_root / "tau_sweep_report" / "tiny" / "data.parquet")
    assert tau_sweep["tau"].to_list() == sorted(tau_sweep["tau"].to_list()) and tau_sweep.height == 6
    assert tau_sweep["pairs_added"].to_list() == sorted(tau_sweep["pairs_added"].to_list(), reverse=True)
    assert (tau_sweep["pairs_shown_not_clicked"] >= 0).all()
    assert tau_sweep["repair_precision_without_shown_filter"].is_between(0, 1).all()
    # label repair per (tau, floor), no model: a higher floor keeps no more pairs; the mapping's own floor (0.3)
    # keeps what the sweep trained on
    by_floor = pl.read_parquet(storage_root / "tau_sweep_report" / "tiny" / "repair_by_floor.parquet")
    assert by_floor.height == 6 * 5 and by_floor["repair_precision"].is_between(0, 1).all()
    for tau, rows in by_floor.group_by("tau"):
        kept = rows.sort("click_neighbour_floor", nulls_last=False)["pairs_added"].to_list()
        assert kept == sorted(kept, reverse=True)
    at_08 = by_floor.filter((pl.col("tau") == 0.8) & (pl.col("click_neighbour_floor") == 0.3))["pairs_added"][0]
    assert at_08 == label_repair(
        mapped, pl.read_parquet(storage_root / "train_pairs" / "tiny" / "data.parquet"),
        pl.read_parquet(storage_root / "oracle_train_pairs" / "tiny" / "data.parquet"))["pairs_added"]
    exposure = pl.read_parquet(storage_root / "exposure_sweep_report" / "tiny" / "data.parquet")
    assert set(exposure["method"]) == {"clicks (MNAR)", "IPS, true propensities", "SKIM", "MAR sample"}
    assert exposure["R@100"].is_between(0, 1).all()
    assert (storage_root / "figures" / "tiny" / "exposure_sweep_report-exposure_sweep.png").exists()


def test_the_reports_show_their_tables_inline_and_the_html_page_holds_every_one(tiny_run):
    storage_root, events = tiny_run.root, tiny_run.events
    with duckdb.connect(str(storage_root / "skim.duckdb")) as con:
        rows = con.execute("SELECT count(*) FROM retrieval_metrics WHERE dataset = 'tiny'").fetchall()[0][0]
    assert rows == 2 * (1 + len(MODEL_NAMES))  # the zero-shot encoder and every trained model, on both test sets

    report = pl.read_parquet(storage_root / "comparison_report" / "tiny" / "data.parquet")
    assert report["method"].to_list() == list(METHODS)
    assert "ova_head unbiased R@100" in report.columns and "dual_encoder biased P@5" in report.columns
    # in the UI: one inline table per base model, SKIM and base first, shares as percentages of the stored figures
    shown = [r.data for r in events["comparison_report"]["dual_encoder"].records]
    assert [r["method"] for r in shown[:2]] == ["skim", "base"] and len(shown) == len(METHODS)
    stored = dict(zip(report["method"], report["dual_encoder unbiased R@10"]))
    assert all(r["unbiased R@10"] == round(100 * stored[r["method"]], 2) for r in shown)
    assert events["comparison_report"]["chart"].value.startswith("![")  # an inline sketch, not a link
    assert len(events["comparison_report"]["chart"].value) < 1000
    # label repair: a method whose pairs no held-back label can judge reads n/a, with the reason beside it
    repair = {r.data["method"]: r.data for r in events["label_repair_report"]["table"].records}
    assert list(repair)[0] == "skim" and repair["gandalf"]["pairs_added"] > 0
    assert repair["gandalf"]["precision"] == "n/a" and "label" in repair["gandalf"]["note"]
    assert isinstance(repair["skim"]["precision"], float) and repair["skim"]["note"] == ""
    # one HTML page with every report table and every plot drawn for the dataset, embedded
    page = (storage_root / "html_report" / "tiny" / "report.html").read_text()
    assert events["html_report"]["report"].value == str(storage_root / "html_report" / "tiny" / "report.html")
    for heading in ("Every method on both test sets", "Label repair", "Mapping threshold tau", "Exposure window K",
                    "SKIM by student model", "Every model, every metric"):
        assert heading in page
    assert page.count("<img") == events["html_report"]["plots"].value >= 8
    assert page.count("data:image/png;base64,") == page.count("<img")
    # `skim report --html` writes the same page from the stored tables (only the time it was written differs)
    from skim_assets.cli import main

    assert main(["--root", str(storage_root), "report", "tiny", "--html", str(storage_root / "cli.html")]) == 0
    unstamped = [re.sub(r"Written [^.]*UTC", "", text) for text in (page, (storage_root / "cli.html").read_text())]
    assert unstamped[0] == unstamped[1]


def test_skim_by_student_model_runs_a_second_student_and_a_rerun_resumes(tiny_run, tiny_causal_lm,
                                                                         tiny_causal_lm_wider):
    storage_root, events = tiny_run.root, tiny_run.events
    run_config = tiny_run.run_config
    mapped = pl.read_parquet(storage_root / "mapped_pairs" / "tiny" / "data.parquet")
    sizes = pl.read_parquet(storage_root / "slm_size_report" / "tiny" / "data.parquet")
    assert sizes["student"].to_list() == ["none (clicks only)", str(tiny_causal_lm), str(tiny_causal_lm_wider)]
    own, wider = sizes.row(1, named=True), sizes.row(2, named=True)
    assert own["pipeline_student"] and not wider["pipeline_student"]
    assert (own["queries_written"]
            == pl.read_parquet(storage_root / "synthetic_queries" / "tiny" / "judged.parquet").height)
    assert own["pairs_added"] == label_repair(
        mapped, pl.read_parquet(storage_root / "train_pairs" / "tiny" / "data.parquet"),
        pl.read_parquet(storage_root / "oracle_train_pairs" / "tiny" / "data.parquet"))["pairs_added"]
    assert wider["parameters_M"] >= own["parameters_M"] and wider["lora_steps"] > 0
    assert wider["holdout_loss_after"] < wider["holdout_loss_before"]
    assert wider["queries_written"] > 0 and wider["grounded_share"] <= 1
    assert sizes.select("repair_precision", "repair_recall", "R@10", "R@100").drop_nulls().to_numpy().max() <= 1
    assert [r.data["student"] for r in events["comparison_report"]["skim_by_student_model"].records] \
        == sizes["student"].to_list()
    # a rerun resumes: the wider student's adapter and generation shards are reused, the table is the same
    adapter = next((storage_root / "slm_size_students" / "tiny").glob("tiny_lm_wider*/adapter/adapter"))
    stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    rerun = _materialize([slm_size_report], storage_root, "tiny", base_model_path=tiny_causal_lm,
                         run_config=dg.RunConfig(ops={"slm_size_report": run_config.ops["slm_size_report"]}))
    assert rerun.success and (adapter / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert pl.read_parquet(storage_root / "slm_size_report" / "tiny" / "data.parquet").equals(sizes)


def clicks_height(storage_root) -> int:
    return pl.read_parquet(storage_root / "train_pairs" / "tiny" / "data.parquet").height


@pytest.mark.slow
def test_reverse_direction_end_to_end_writes_categories_for_queries_and_maps_them_onto_documents(
        storage_root, tiny_causal_lm, monkeypatch):
    """The categories world (products asked about as queries, their descriptions as query metadata, categories as
    documents): the same assets write for the train queries and map onto real documents."""
    from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset
    from skim_assets.lib.encoders import TextEncoder
    from skim_assets.lib.mapping import MappingSettings, candidates_to_pairs, mapping_candidates

    folder = storage_root / "inputs" / "tinycat"
    write_demo_dataset(folder, DemoWorldConfig(**TINY_WORLD, world="categories"))
    # the random tiny LM's text sits far from every category: a low tau, so the mapping has pairs to write
    spec = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps(spec | {"tau": 0.5}))
    run_config = dg.RunConfig(ops={
        **{name: QUICK_TRAINING for name in MODELS},
        **{name: LoraAdapterConfig(epochs=1, min_steps=0, effective_batch_size=8, micro_batch_size=8)
           for name in ("lora_adapter", "lora_adapter_no_metadata")},
        # the random tiny LM writes ungrounded text: SKIM keeps it, so the mapping has rows to map
        **{asset.key.path[-1]: SyntheticQueriesConfig(max_new_tokens=12, shard_size=10, quality_filter=False)
           for asset in generation_assets},
        # a bundled student whose package is not installed is listed as skipped, not a failed sweep
        "slm_size_report": SlmSizeSweepConfig(student_models=[str(tiny_causal_lm), "absent-lm"]),
    })
    monkeypatch.setitem(BUNDLED_SLMS, "absent-lm", BundledGguf("no_such_package_skim", "absent-lm-gguf"))
    result = _materialize([*ASSETS, *all_checks], storage_root, "tinycat", base_model_path=tiny_causal_lm,
                          run_config=run_config)
    assert result.success
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    read = lambda asset, table="data": pl.read_parquet(storage_root / asset / "tinycat" / f"{table}.parquet")  # noqa: E731
    queries, documents = read("queries"), read("documents")
    train_ids = set(queries.filter(pl.col("split") == "train")["query_id"])

    # the teacher and the student write for the train queries, from their metadata
    demonstrations = read("teacher_demonstrations")
    assert set(demonstrations["doc_id"]) <= train_ids and demonstrations["doc_id"].n_unique() >= 20
    assert events["teacher_demonstrations"]["direction"].value == "documents_for_queries"
    assert events["teacher_demonstrations"]["teacher_grounded_share"].value == 1.0  # phrases of the query metadata
    raw = read("synthetic_queries", "raw")
    assert set(raw["doc_id"]) == train_ids and raw.height == len(train_ids)
    # ...and the mapping pairs each of those queries with real documents
    mapped = read("mapped_pairs")
    assert mapped.height > 0 and set(mapped["query_id"]) <= train_ids
    assert set(mapped["doc_id"]) <= set(documents["doc_id"])
    # the evidence of each candidate: its click-neighbour cosine and where its query was shown it, unclicked
    assert read("mapped_pairs", "candidates").columns == ["synthetic", "doc_id", "cosine", "click_neighbour_cosine",
                                                          "unclicked_position"]
    assert events["mapped_pairs"]["mapped_onto"].value == "documents"
    repair = read("label_repair_report")
    assert "skim" in repair["method"].to_list()
    metrics = read("retrieval_metrics")
    assert {"skim_retriever", "skim_ova_head"} <= set(metrics["model"])
    assert read("tau_sweep_report").height == 6
    sizes = read("slm_size_report")  # the sweep in this direction: its pairs are the mapping's (query, document)s
    assert sizes["student"].to_list() == ["none (clicks only)", str(tiny_causal_lm)]
    assert "pip install absent-lm-gguf" in events["slm_size_report"]["students_skipped"].value["absent-lm"]
    assert (sizes["pairs_added"][1]
            == label_repair(mapped, read("train_pairs"), read("oracle_train_pairs"))["pairs_added"])

    # what the method would map from grounded text: the teacher's phrases, mapped onto the category documents
    # with the click-trained encoder, are mostly held-back labels (the student here is a random tiny LM)
    encoder = TextEncoder(storage_root / "base_models" / "tinycat" / "encoder", device="cpu")
    phrases = encoder.encode(demonstrations["query"].to_list(), max_length=32)
    titles = encoder.encode(documents["title"].to_list(), max_length=32)
    candidates, _ = mapping_candidates(phrases, documents["doc_id"].to_list(), titles, MappingSettings(k=1),
                                       target="doc_id")
    pairs = candidates_to_pairs(candidates, demonstrations["doc_id"].to_list(), 0.0, "teacher")
    figures = label_repair(pairs, read("click_train_pairs"), read("oracle_train_pairs"))
    assert figures["precision"] >= 0.5, figures


def test_reimport_is_idempotent_and_bad_input_keeps_the_previous_tables(storage_root, tiny_demo):
    assert _materialize([dataset_tables], storage_root, "tiny").success
    documents = storage_root / "documents" / "tiny" / "data.parquet"
    before = pl.read_parquet(documents)
    assert _materialize([dataset_tables], storage_root, "tiny").success
    assert pl.read_parquet(documents).equals(before)

    qrels = tiny_demo / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "Q00000\tNO-SUCH-DOC\t1\n")
    result = _materialize([dataset_tables], storage_root, "tiny")
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "train.tsv" in error and "NO-SUCH-DOC" in error and "corpus-id" in error
    assert pl.read_parquet(documents).equals(before)
    assert not list((storage_root / "documents" / "tiny").glob(".*"))  # no temp files left


def test_click_log_drops_become_training_pairs(storage_root, tiny_demo):
    instance = _instance("tiny")
    assert _materialize([dataset_tables], storage_root, "tiny", instance).success
    doc_ids = pl.read_parquet(storage_root / "documents" / "tiny" / "data.parquet")["doc_id"].to_list()
    train_query = pl.read_parquet(storage_root / "queries" / "tiny" / "data.parquet").filter(
        pl.col("split") == "train").row(0, named=True)
    clicks = tiny_demo / "clicks"
    clicks.mkdir()
    pl.DataFrame({
        "query": [train_query["text"], "a brand new query", "a brand new query"],
        "doc_id": [doc_ids[0], doc_ids[1], doc_ids[1]],
        "clicks": [3, 1, 2],
        "timestamp": ["2026-11-01T10:00:00", "2026-11-02T10:00:00", "2026-11-03T10:00:00"],
    }).write_csv(clicks / "drop-001.csv")
    result = _materialize([click_log_pairs], storage_root, "tiny", instance)
    assert result.success
    pairs = pl.read_parquet(storage_root / "click_log_pairs" / "tiny" / "data.parquet")
    assert pairs.height == 2 and set(pairs["source"]) == {"click_log"}
    assert train_query["query_id"] in pairs["query_id"].to_list()  # known text reuses the query id
    aggregate = pl.read_parquet(storage_root / "click_log_pairs" / "tiny" / "aggregate.parquet")
    assert aggregate.filter(pl.col("query") == "a brand new query")["clicks"].to_list() == [3]

    # a bad drop fails the whole ingest, names file, row and field, and keeps the previous pairs
    pl.DataFrame({"query": ["x"], "doc_id": ["NOPE"], "clicks": [1], "timestamp": ["2026-11-04T00:00:00"]}).write_csv(
        clicks / "drop-002.csv")
    result = _materialize([click_log_pairs], storage_root, "tiny", instance)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "drop-002.csv" in error and "row 2" in error and "doc_id" in error
    assert pl.read_parquet(storage_root / "click_log_pairs" / "tiny" / "data.parquet").equals(pairs)


def test_a_drop_with_impressions_feeds_train_pairs_and_position_propensities(storage_root, tiny_demo):
    """A real log's impressions (one row per impression, with positions) reach train_pairs beside the simulated
    engine's; position propensities are estimated from both, with no truth to compare (a real log's)."""
    from skim_assets.assets.baselines import ips_position_train_pairs

    instance = _instance("tiny")
    assert _materialize([dataset_tables], storage_root, "tiny", instance).success
    doc_ids = pl.read_parquet(storage_root / "documents" / "tiny" / "data.parquet")["doc_id"].to_list()
    (tiny_demo / "clicks").mkdir()
    pl.DataFrame({"query": ["sleepy tea"] * 3 + ["lavender balm"] * 2, "doc_id": doc_ids[:3] + doc_ids[:2],
                  "clicked": [1, 0, 0, 0, 1], "position": [1, 2, 3, 1, 2],
                  "timestamp": ["2026-11-01T10:00:00"] * 5}).write_parquet(tiny_demo / "clicks" / "log.parquet")
    result = _materialize([click_log_pairs, simulated_clicks, train_pairs, ips_position_train_pairs], storage_root,
                          "tiny", instance)
    assert result.success
    drop_shown = pl.read_parquet(storage_root / "click_log_pairs" / "tiny" / "impressions.parquet")
    assert drop_shown.height == 5 and drop_shown["clicks"].sum() == 2
    pairs = pl.read_parquet(storage_root / "click_log_pairs" / "tiny" / "data.parquet")
    assert sorted(pairs["doc_id"].to_list()) == sorted([doc_ids[0], doc_ids[1]])  # only clicked rows are pairs
    simulated = pl.read_parquet(storage_root / "click_train_pairs" / "tiny" / "impressions.parquet")
    together = pl.read_parquet(storage_root / "train_pairs" / "tiny" / "impressions.parquet")
    assert together["impressions"].sum() == simulated.height + 5
    metadata = result.asset_materializations_for_node("ips_position_train_pairs")[0].metadata
    assert metadata["truth"].value.startswith("unknown") and "propensity_mean_abs_error" not in metadata
    propensities = pl.read_parquet(storage_root / "ips_position_train_pairs" / "tiny" / "propensities.parquet")
    assert propensities["true_propensity"].is_null().all() and propensities["propensity"][0] == 1.0


def test_train_pairs_union_clicks_and_click_logs():
    clicks = pl.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "weight": [1.0, 1.0],
                           "source": ["click", "click"]})
    click_log = pl.DataFrame({"query_id": ["q2", "q3"], "doc_id": ["d2", "d3"], "weight": [1.0, 1.0],
                              "source": ["click_log", "click_log"]})
    shown = pl.DataFrame({"query_id": ["q2", "q2"], "doc_id": ["d2", "d4"], "position": [1, 2], "impressions": [1, 1],
                          "clicks": [1, 0]}, schema=IMPRESSIONS_SCHEMA)
    documents = pl.DataFrame({"doc_id": ["d1", "d2", "d3", "d4"], "title": ["a", "b", "c", "d"]})
    queries = pl.DataFrame({"query_id": ["q1", "q2"], "text": ["x", "y"], "split": ["train", "train"],
                            "metadata": ["m1", "m2"]})
    logged_query = pl.DataFrame({"query_id": ["q3"], "text": ["z"], "split": ["train"]})
    result = train_pairs(click_train_pairs=Tables(clicks, impressions=shown),
                         click_log_pairs=Tables(click_log, impressions=shown.head(1), queries=logged_query),
                         documents=Tables(documents), queries=queries)
    assert result.value.data.sort("query_id").rows() == [("q1", "d1", 1.0, "click"), ("q2", "d2", 1.0, "click"),
                                                         ("q3", "d3", 1.0, "click_log")]
    assert result.metadata["pairs_click"] == 2
    # the impressions of both logs add up per (query, document, position)
    assert sorted(result.value["impressions"].rows()) == [("q2", "d2", 1, 2, 2), ("q2", "d4", 2, 1, 0)]
    assert result.metadata["impressions"] == 3 and result.metadata["impressions_clicked"] == 2
    # the training view it starts: every query (click-log ones carry no metadata), the documents, its own pairs
    view = TrainingView(result.value)
    assert view.queries.rows() == [("q1", "x", "train", "m1"), ("q2", "y", "train", "m2"), ("q3", "z", "train", None)]
    assert view.documents.equals(documents) and view.clicks.equals(result.value.data)
    no_log = train_pairs(click_train_pairs=Tables(clicks), click_log_pairs=Tables(click_log),
                         documents=Tables(documents), queries=queries)
    assert no_log.value["impressions"].height == 0 and no_log.metadata["impressions"] == 0
    assert TrainingView(no_log.value).impressions is None and TrainingView(no_log.value).queries.height == 2


def test_dataset_sensor_registers_new_folders_once(storage_root, tiny_demo):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"storage": StorageResource(root=str(storage_root))}
    context = dg.build_sensor_context(instance=instance, cursor=None, resources=resources)
    result = dataset_folder_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["tiny"]
    assert result.run_requests[0].run_key == "register:tiny"
    assert result.dynamic_partitions_requests[0].partition_keys == ["tiny"]
    assert result.cursor == "tiny"

    again = dataset_folder_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources=resources))
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    (storage_root / "inputs" / "bad name!").mkdir()
    (storage_root / "inputs" / "bad name!" / "dataset.json").write_text(json.dumps({"format": "beir"}))
    ignored = dataset_folder_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                                            resources=resources))
    assert ignored.run_requests == []

    # a dataset registered by `skim import` is noted in the cursor but not run again by the sensor
    registered = dg.DagsterInstance.ephemeral()
    registered.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    noted = dataset_folder_sensor(dg.build_sensor_context(instance=registered, cursor=None, resources=resources))
    assert noted.run_requests == [] and noted.dynamic_partitions_requests == [] and noted.cursor == "tiny"


def test_teacher_demonstrations_from_an_openai_compatible_server_are_cached(storage_root, tiny_demo, httpserver,
                                                                            tiny_causal_lm):
    """A real local HTTP server stands in for the API; the second materialization sends no request."""
    answer = {"choices": [{"message": {"role": "assistant",
                                       "content": "Queries:\n1. soothing evening drink\n- calm sleep aid\n"}}],
              "usage": {"prompt_tokens": 300, "completion_tokens": 12}}
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_json(answer)
    instance = _instance("tiny")
    assert _materialize([dataset_tables, click_log_pairs, simulated_clicks, train_pairs], storage_root, "tiny",
                        instance).success
    secret = "sk-test-secret-0123456789"
    resources = _resources(storage_root, tiny_causal_lm) | {"teacher": TeacherResource(
        kind="openai", base_url=httpserver.url_for("/v1"), model="gpt-test", api_key=secret,
        usd_per_1k_prompt_tokens=0.01, usd_per_1k_completion_tokens=0.03, concurrency=2)}
    config = dg.RunConfig(ops={"teacher_demonstrations": TeacherDemonstrationsConfig(max_documents=10)})

    def run():
        return materialize_selected([teacher_demonstrations, base_slm], partition_key="tiny", instance=instance,
                                    resources=resources, run_config=config)

    first = run().asset_materializations_for_node("teacher_demonstrations")[0].metadata
    assert len(httpserver.log) == 10
    assert first["teacher_backend"].value == "openai" and first["teacher_model"].value == "gpt-test"
    assert first["parse_rate"].value == 1.0 and first["dagster/row_count"].value == 20
    assert first["cost_usd"].value == pytest.approx(10 * (0.3 * 0.01 + 0.012 * 0.03), abs=1e-4)
    assert all(request.headers["Authorization"] == f"Bearer {secret}" for request, _ in httpserver.log)

    second = run().asset_materializations_for_node("teacher_demonstrations")[0].metadata
    assert len(httpserver.log) == 10  # every answer came from the cache
    assert second["cached_answers"].value == 10
    cached_text = "".join(p.read_text() for p in (storage_root / "teacher_cache").rglob("*") if p.is_file())
    assert cached_text and secret not in cached_text
    assert secret not in str(first) and secret not in str(second)


def test_comparison_report_of_a_partial_run_leaves_untrained_models_blank(storage_root):
    from skim_assets.assets.evaluation import comparison_report

    rows = []
    for model, method, base_model in [("zero_shot", "zero_shot", "zero_shot"),
                                      ("base_retriever", "base", "dual_encoder"),
                                      ("base_ova_head", "base", "ova_head"), ("skim_ova_head", "skim", "ova_head")]:
        for test_set in ("biased", "unbiased"):
            rows.append({"model": model, "method": method, "base_model": base_model, "test_set": test_set,
                         "P@5": 0.1, "R@10": 0.2, "R@25": 0.3, "R@100": 0.4 if method != "skim" else 0.5})
    result = comparison_report(dg.build_asset_context(partition_key="x"),
                               storage=StorageResource(root=str(storage_root)), retrieval_metrics=pl.DataFrame(rows))
    skim = result.value.filter(pl.col("method") == "skim").row(0, named=True)
    assert skim["dual_encoder unbiased R@100"] is None and skim["ova_head unbiased R@100"] == 0.5
    assert "skim_minus_base_unbiased_R@100" not in result.metadata  # no SKIM dual encoder to compare
    assert (storage_root / "figures" / "x" / "comparison_report-chart.png").exists()


def test_evaluation_of_a_partial_run_skips_what_was_not_materialized(storage_root, tiny_demo):
    """The optional inputs of the reports: a method never materialized is listed, not an error."""
    from skim_assets.assets.baselines import gandalf_train_pairs
    from skim_assets.assets.evaluation import label_repair_report

    result = _materialize([dataset_tables, click_log_pairs, simulated_clicks, train_pairs, gandalf_train_pairs,
                           label_repair_report], storage_root, "tiny")
    assert result.success
    metadata = result.asset_materializations_for_node("label_repair_report")[0].metadata
    missing = metadata["methods_not_materialized"].value
    assert "gandalf" not in missing and "skim" in missing and "ips" not in missing  # IPS re-weights, adds nothing
    repair = pl.read_parquet(storage_root / "label_repair_report" / "tiny" / "data.parquet")
    assert sorted(repair["method"]) == ["gandalf", "mar", "oracle"]




LINEAGE_EDGE_BOUND = 120  # issue 29: 256 edges in 58 assets before the training view and the per-method models


def test_the_lineage_is_a_graph_a_person_can_read():
    """Each training artifact carries the texts it refers to (the training view), and each method is one models
    asset: the dataset tables feed a handful of assets instead of 40+ each, and the graph stays under the bound."""
    graph = defs.resolve_asset_graph()
    edges = [(parent.to_user_string(), key.to_user_string()) for key in graph.get_all_asset_keys()
             for parent in graph.get(key).parent_keys]
    assert len(edges) < LINEAGE_EDGE_BOUND, len(edges)
    fan_out = {table: sum(parent == table for parent, _ in edges)
               for table in ("documents", "queries", "click_log_pairs", "train_pairs")}
    assert max(fan_out.values()) <= 15, fan_out
    # what trains a model reads its texts through its pairs: no model or method table reads a dataset table directly
    readers = {child for parent, child in edges if parent in ("documents", "queries", "click_log_pairs")}
    assert not {r for r in readers if r.endswith("_models") or "train_pairs_" in r or r.startswith("augmented")}
    # the held-back labels reach only the simulation and what judges against them, never a method's training set
    label_readers = {child for parent, child in edges if parent == "relevance_labels"}
    assert label_readers == {"click_train_pairs", "mar_train_pairs", "oracle_train_pairs", "biased_test_qrels",
                             "unbiased_test_qrels", "exposure_sweep_report"}
