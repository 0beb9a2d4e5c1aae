"""The `skim` command: import validates before it registers anything; report needs metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from skim_assets.cli import UsageError, main
from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset


def test_import_validates_then_registers_the_partition(cli_env, tmp_path, capsys):
    source = tmp_path / "raw"
    write_demo_dataset(source, DemoWorldConfig(n_documents=20))
    assert main(["--root", str(cli_env), "import", "mini", str(source), "--exposure-k", "5"]) == 0
    spec = json.loads((cli_env / "inputs" / "mini" / "dataset.json").read_text())
    assert spec["source"] == str(source) and spec["exposure_k"] == 5
    assert "registered dataset 'mini': 20 documents" in capsys.readouterr().out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("dataset") == ["mini"]


def test_import_of_query_side_metadata_sets_the_direction(cli_env, tmp_path, capsys):
    """A BEIR folder whose queries carry their text in a named field, imported for the reverse direction."""
    import polars as pl

    source = tmp_path / "raw"
    write_demo_dataset(source, DemoWorldConfig(n_documents=20, world="categories"))
    assert main(["--root", str(cli_env), "import", "cats", str(source), "--prompt-style", "wiki-categories",
                 "--query-metadata-field", "description"]) == 0
    spec = json.loads((cli_env / "inputs" / "cats" / "dataset.json").read_text())
    assert spec["query_metadata_field"] == "description" and spec["generate"] == ""  # by the prompt style
    assert main(["--root", str(cli_env), "import", "cats2", str(source), "--generate", "documents_for_queries",
                 "--query-metadata-field", "metadata.kind"]) == 0
    from skim_assets.lib.datasets import import_tables, read_spec

    assert read_spec(cli_env / "inputs" / "cats").direction == "documents_for_queries"
    queries = import_tables(cli_env / "inputs" / "cats2").queries
    assert set(queries["metadata"]) == {"product"}  # `metadata.kind` of every demo query
    assert isinstance(queries, pl.DataFrame)


def test_import_of_bad_data_names_the_problem_and_registers_nothing(cli_env, tmp_path, capsys):
    source = tmp_path / "raw"
    write_demo_dataset(source, DemoWorldConfig(n_documents=20))
    corpus = source / "corpus.jsonl"
    corpus.write_bytes(corpus.read_bytes() + b'{"_id": "D00001", "title": "dup", "text": "x"}\n')
    assert main(["--root", str(cli_env), "import", "mini", str(source)]) == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl" in err and "row 21" in err and "_id" in err
    assert not (cli_env / "inputs" / "mini").exists()


def test_bad_dataset_name_is_refused(cli_env, tmp_path, capsys):
    assert main(["--root", str(cli_env), "import", "../escape", str(tmp_path)]) == 2
    assert "dataset name '../escape'" in capsys.readouterr().err


def test_report_without_metrics_fails_clearly(cli_env, capsys):
    assert main(["--root", str(cli_env), "report", "nothing"]) == 1
    assert "no metrics for dataset 'nothing'" in capsys.readouterr().err


def test_demo_profile_is_valid_run_config_for_the_pipeline():
    import dagster as dg

    from skim_assets.cli import demo_run_config
    from skim_assets.definitions import defs

    for job in ("skim_core", "skim_pipeline"):
        config = demo_run_config(job)
        assert config["ops"]["skim_models"]["config"]["dual_encoder"]["epochs"] == 3
        assert config["ops"]["synthetic_queries"]["config"]["samples"] == 2
        dg.validate_run_config(defs.resolve_job_def(job), config)  # raises on unknown ops or fields
    assert "synthetic_queries_udapdr" not in demo_run_config("skim_core")["ops"]
    assert "synthetic_queries_udapdr" in demo_run_config("skim_pipeline")["ops"]
    # metadata-augmented retrieval and the exposure sweep are left to the whole pipeline
    core = set(defs.resolve_job_def("skim_core").graph.node_dict)
    assert not {"ra_models", "skim_ra_models", "exposure_sweep_report"} & core
    assert "skim_ra_models" in demo_run_config("skim_pipeline")["ops"]


def test_the_demo_jobs_carry_the_demo_profile_the_launchpad_loads():
    """`skim demo` runs the `demo` job (or `demo_all_methods`), whose config for a partition is the demo profile:
    the UI's launchpad loads it, so a launch from the UI runs what `skim demo` runs."""
    from skim_assets.cli import demo_job, demo_run_config
    from skim_assets.definitions import defs

    for all_methods, same_ops_as in ((False, "skim_core"), (True, "skim_pipeline")):
        job = defs.resolve_job_def(demo_job(all_methods))
        config = job.partitioned_config.get_run_config_for_partition_key("demo")
        assert config == demo_run_config(job.name) == demo_run_config(same_ops_as)
        assert set(job.graph.node_dict) == set(defs.resolve_job_def(same_ops_as).graph.node_dict)
        assert job.executor_def.name == "in_process"  # the demo's 160 documents: no process per step
        dg.validate_run_config(job, config)
    assert demo_job(False) == "demo"
    assert defs.resolve_job_def("demo").partitioned_config.get_run_config_for_partition_key("x") == demo_run_config()


@pytest.mark.parametrize("profile", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_shipped_run_profiles_are_valid_run_config_for_the_pipeline(profile):
    """A profile under configs/ names ops and fields the pipeline has: a renamed field fails here, not an hour into
    a run."""
    import dagster as dg

    from skim_assets.cli import load_run_config
    from skim_assets.definitions import defs

    config = load_run_config(str(Path(__file__).parents[1] / "configs" / profile))
    assert config["ops"], profile
    dg.validate_run_config(defs.resolve_job_def("skim_pipeline"), config)  # raises on unknown ops or fields


def test_only_missing_selects_assets_without_artifacts_and_everything_they_feed(tmp_path):
    from skim_assets.cli import missing_assets
    from skim_assets.definitions import defs

    root = tmp_path / "root"
    every = {k.path[-1] for k in defs.resolve_job_def("skim_pipeline").asset_layer.executable_asset_keys}
    for asset in every - {"skim_models", "base_slm"}:
        (root / asset / "ds").mkdir(parents=True)
    (root / "base_slm").mkdir()  # unpartitioned: one folder for every dataset
    (root / "skim.duckdb").touch()  # the catalogue: one database for every dataset
    missing = {k.to_user_string() for k in missing_assets(root, "ds", "skim_pipeline")}
    assert missing == {"skim_models", "retrieval_metrics", "comparison_report", "duckdb_catalogue", "html_report"}
    (root / "skim_models" / "ds").mkdir(parents=True)
    assert missing_assets(root, "ds", "skim_pipeline") == []
    assert (len(missing_assets(root, "other", "skim_core"))
            == len(defs.resolve_job_def("skim_core").asset_layer.executable_asset_keys) - 1)


def test_materialize_takes_several_datasets_and_a_run_config_file(tmp_path):
    from skim_assets.cli import build_parser, load_run_config

    args = build_parser().parse_args(["materialize", "a", "b", "--config", "configs/scifact_cpu.yaml",
                                      "--only-missing"])
    assert args.names == ["a", "b"] and args.only_missing and args.job == "skim_pipeline"
    config = load_run_config(args.config)
    assert config["ops"]["skim_models"]["config"]["dual_encoder"]["epochs"] == 2
    from skim_assets.definitions import defs

    assert set(config["ops"]) <= set(defs.resolve_job_def("skim_pipeline").graph.node_dict)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        load_run_config(str(bad))


def test_the_console_prints_one_line_per_step_and_long_steps_progress_at_most_every_interval(tmp_path, capsys):
    """What `skim demo` prints: `[n] <step> done in <s>` per step, no Dagster event stream."""
    import io
    import logging
    import re

    import dagster as dg

    from skim_assets.console import StepProgressHandler, step_progress_logger
    from skim_assets.definitions import defs
    from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset
    from skim_assets.partitions import dataset_partitions
    from skim_assets.resources import storage_resources

    root = tmp_path / "root"
    write_demo_dataset(root / "inputs" / "tiny", DemoWorldConfig(n_documents=20))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    job = dg.Definitions(assets=defs.assets, jobs=defs.jobs, resources=defs.resources | storage_resources(root)
                         ).resolve_job_def("skim_pipeline").with_logger_defs({"skim_progress": step_progress_logger})
    selection = [dg.AssetKey(name) for name in ("documents", "queries", "relevance_labels", "click_log_pairs")]
    result = job.execute_in_process(partition_key="tiny", instance=instance, asset_selection=selection,
                                    run_config={"loggers": {"skim_progress": {}}})
    assert result.success
    lines = capsys.readouterr().out.strip().splitlines()
    steps = [re.fullmatch(r"\d\d:\d\d:\d\d (.+) done in [\d.]+s", line) for line in lines]
    assert all(steps), lines
    assert [m[1] for m in steps] == ["documents, queries, relevance_labels", "click_log_pairs"]

    # a long step's own messages: the first, then none until the interval passed; warnings always
    handler = StepProgressHandler(io.StringIO(), interval_s=3600)
    logger = logging.Logger("t")
    logger.addHandler(handler)
    for i in range(5):
        logger.info(f"epoch {i}\nsecond line",
                    extra={"dagster_meta": {"step_key": "train", "orig_message": f"epoch {i}"}})
    logger.warning("disk almost full",
                   extra={"dagster_meta": {"step_key": "train", "orig_message": "disk almost full"}})
    assert handler.stream.getvalue().splitlines() == ["  train: epoch 0", "  train: warning: disk almost full"]


@pytest.mark.slow
def test_materialize_prints_why_a_step_failed(cli_env, tmp_path):
    """A failed step's own error (file, row and field of a bad click drop) is on the console, not only in the UI."""
    source = tmp_path / "source"
    write_demo_dataset(source, DemoWorldConfig(n_documents=20))
    assert main(["--root", str(cli_env), "import", "mini", str(source)]) == 0
    clicks = cli_env / "inputs" / "mini" / "clicks"
    clicks.mkdir(parents=True, exist_ok=True)
    (clicks / "bad.csv").write_text("query,doc_id,clicks,timestamp\nred teapot,NO-SUCH-DOC,1,2026-01-01\n")
    # a process of its own, as a user runs it (the executor's forkserver of this test process would keep the
    # storage root of the first test that started it)
    done = subprocess.run([sys.executable, "-m", "skim_assets.cli", "--root", str(cli_env), "materialize", "mini",
                           "--job", "dataset_import"], capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    out = done.stdout
    assert "FAILED click_log_pairs" in out
    assert "bad.csv" in out and "row 2" in out and "doc_id" in out and "NO-SUCH-DOC" in out, out


@pytest.mark.slow
def test_materialize_runs_through_the_instance_and_the_jobs_executor(cli_env, tmp_path, capfd):
    """`skim materialize` launches a run like the UI does: recorded in the instance, each step a process of its own
    (the multiprocess executor, so pools and tag limits apply), and a quiet console."""
    source = tmp_path / "source"
    write_demo_dataset(source, DemoWorldConfig(n_documents=20))
    assert main(["--root", str(cli_env), "import", "mini", str(source)]) == 0
    capfd.readouterr()
    assert main(["--root", str(cli_env), "materialize", "mini", "--job", "dataset_import"]) == 0
    out = capfd.readouterr().out
    workspace = yaml.safe_load((Path(__file__).parents[1] / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]["location_name"]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "dataset_import"
        assert run.tags["dagster/partition"] == "mini" and run.tags["skim/cli_pid"] == str(os.getpid())
        # filed under the job of the workspace's code location, as a UI launch is: the job's page lists the runs
        # of its name and repository label, and Overview groups runs by the same origin
        assert run.remote_job_origin.location_name == location and run.remote_job_origin.job_name == "dataset_import"
        assert instance.get_runs(filters=dg.RunsFilter(job_name="dataset_import", tags={
            ".dagster/repository": f"__repository__@{location}"})) == [run]
        workers = {r.dagster_event.step_key: r.dagster_event.pid for r in instance.all_logs(run.run_id)
                   if r.dagster_event and r.dagster_event.event_type_value == "STEP_WORKER_STARTED"}
        assert_checks_passed_on_what_the_run_wrote(instance, run.run_id)
    assert {"dataset_tables", "click_log_pairs"} <= set(workers) and os.getpid() not in workers.values()
    assert "documents, queries, relevance_labels done in" in out and "click_log_pairs done in" in out
    assert "STEP_WORKER_STARTED" not in out and "DEBUG" not in out


def assert_checks_passed_on_what_the_run_wrote(instance, run_id: str) -> None:
    """Every check the run planned was evaluated, passed (no WARN either), and judged the materialization this run
    had just written: its target is that materialization, and it was evaluated after it."""
    planned, evaluations, written = set(), {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type_value == "ASSET_CHECK_EVALUATION_PLANNED":
            planned.add((event.event_specific_data.asset_key, event.event_specific_data.check_name))
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluations[(event.event_specific_data.asset_key, event.event_specific_data.check_name)] = (
                record.timestamp, event.event_specific_data)
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            written[event.asset_key] = record.timestamp
    assert planned and set(evaluations) == planned
    for (asset, name), (evaluated_at, evaluation) in evaluations.items():
        assert evaluation.passed, (asset, name, evaluation.severity, evaluation.description)
        target = evaluation.target_materialization_data
        assert target is not None and target.run_id == run_id and target.timestamp == written[asset], (asset, name)
        assert evaluated_at >= target.timestamp, (asset, name)


def test_a_given_config_overrides_the_job_profile_setting_by_setting():
    """`--config` over the demo profile: naming one model of a method keeps the profile's settings of the other."""
    from skim_assets.cli import merged_config

    profile = {"skim_models": {"config": {"dual_encoder": {"epochs": 3, "learning_rate": 1e-4}}},
               "synthetic_queries": {"config": {"samples": 2}}}
    given = {"skim_models": {"config": {"dual_encoder": {"epochs": 1}, "ova_head": {"epochs": 5}}},
             "mapped_pairs": {"config": {"tau": 0.7}}}
    assert merged_config(profile, given) == {
        "skim_models": {"config": {"dual_encoder": {"epochs": 1, "learning_rate": 1e-4}, "ova_head": {"epochs": 5}}},
        "synthetic_queries": {"config": {"samples": 2}}, "mapped_pairs": {"config": {"tau": 0.7}}}
    assert profile["skim_models"]["config"]["dual_encoder"]["epochs"] == 3  # the profile itself is left as it was


def test_the_refresh_jobs_renew_only_what_a_dataset_has(tmp_path):
    """`--job click_refresh` / `model_refresh` run the job's assets the dataset already has artifacts of (the click
    log always): a `skim_core` dataset's refresh does not start the generation ablations."""
    from skim_assets.cli import existing_assets
    from skim_assets.definitions import defs

    root = tmp_path / "root"
    core = {k.path[-1] for k in defs.resolve_job_def("skim_core").asset_layer.executable_asset_keys}
    for asset in core - {"base_slm", "duckdb_catalogue"}:
        (root / asset / "ds").mkdir(parents=True)
    clicks = {k.path[-1] for k in existing_assets(root, "ds", "click_refresh")}
    assert {"click_log_pairs", "train_pairs", "mapped_pairs", "augmented_train_pairs", "lever_train_pairs"} <= clicks
    assert not clicks & {"mapped_pairs_udapdr", "augmented_train_pairs_no_metadata"}
    models = {k.path[-1] for k in existing_assets(root, "ds", "model_refresh")}
    assert {"base_models", "skim_models", "synthetic_queries", "retrieval_metrics"} <= models
    assert not models & {"synthetic_queries_udapdr", "skim_ra_models", "train_pairs", "click_log_pairs"}
    assert {k.path[-1] for k in existing_assets(tmp_path / "empty", "ds", "click_refresh")} == {"click_log_pairs"}


def test_import_formats_are_the_importer_registry_and_an_unknown_one_is_refused(cli_env, tmp_path, capsys):
    """`--format` offers exactly the registered importers (with their descriptions); any other is refused before
    anything is read or registered, naming it and the known ones."""
    from skim_assets.cli import build_parser
    from skim_assets.lib.importers import FORMATS, IMPORTERS

    imp = build_parser()._subparsers._group_actions[0].choices["import"]
    action = next(a for a in imp._actions if a.dest == "format")
    assert tuple(action.choices) == FORMATS == tuple(IMPORTERS) and action.default == "beir"
    assert all(importer.description in " ".join(action.help.split()) for importer in IMPORTERS.values())
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(cli_env), "import", "mini", str(tmp_path), "--format", "parquet"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'parquet'" in err and all(repr(f) in err for f in FORMATS)
    assert not (cli_env / "inputs" / "mini").exists()
