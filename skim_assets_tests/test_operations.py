"""Operations: click-log refresh (sensor, incremental work, equality with a full recompute), the model-refresh
schedule, eager table automation, the k8s profile, and a step killed with SIGKILL that resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import polars as pl
import pytest

from skim_assets.assets.datasets import click_log_pairs, dataset_tables
from skim_assets.assets.simulation import simulated_clicks
from skim_assets.assets.training import MethodModelsConfig, OvaHeadTrainingConfig, RetrieverTrainingConfig, train_pairs
from skim_assets.definitions import ASSETS
from skim_assets.jobs import click_refresh_job
from skim_assets.lib.demonstrations import QUERIES_SCHEMA as SYNTHETIC_SCHEMA
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
from skim_assets.sensors import click_log_sensor
from skim_assets_tests.conftest import materialize_selected

ASSET_BY_NAME = {key.path[-1]: asset for asset in ASSETS for key in asset.keys}
REFRESH_CONFIG = {"ops": {"mapped_pairs_udapdr": {"config": {"tau": 0.55}}}}
# the generation branch this test stands up (UDAPDR-style: no LoRA); the other two branches stay unmaterialized
SYNTHETIC = "synthetic_queries_udapdr"


def _resources(root):
    return {
        **storage_resources(root),
        "encoder": EncoderResource(device="cpu"),
        "teacher": TeacherResource(kind="keyphrase"),
        "generator": GeneratorResource(device="cpu", backend="transformers"),
    }


def _write_synthetic_queries(root):
    """Synthetic queries for every document: the first words of each metadata sentence (what a student writes)."""
    documents = pl.read_parquet(root / "documents" / "tiny" / "data.parquet")
    rows = []
    for doc_id, metadata in documents.select("doc_id", "metadata").iter_rows():
        sentences = [s.strip() for s in metadata.split(".") if s.strip()]
        rows += [(doc_id, " ".join(s.split()[:6]).lower(), rank) for rank, s in enumerate(sentences[:3], 1)]
    # carrying the training view of the train pairs, as the generation asset's output does
    storage = StorageResource(root=str(root))
    view = TrainingView(Tables(folder=storage.artifact_dir("train_pairs", "tiny")))
    frame = pl.DataFrame(rows, schema=SYNTHETIC_SCHEMA, orient="row")
    storage.write_table_set(SYNTHETIC, "tiny", {SYNTHETIC: view.carried_by(frame).stored()})


def _refresh_assets(names):
    return [ASSET_BY_NAME[n] for n in names]


@pytest.fixture
def trained_world(storage_root, tiny_demo, tmp_path):
    """A tiny dataset with clicks, train pairs, a base retriever, synthetic queries and every refresh table."""
    # a persistent instance (schedule contexts need an instance reference), not `instance_for_test`, whose
    # teardown leaves Dagster's global definitions-state storage pointing at a closed instance
    (tmp_path / "dagster_home").mkdir()
    yield from _trained_world(storage_root, dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")))


def _trained_world(storage_root, instance):
    instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    resources = _resources(storage_root)
    quick = dg.RunConfig(ops={"base_models": MethodModelsConfig(
        dual_encoder=RetrieverTrainingConfig(epochs=1, hard_negatives=0), ova_head=OvaHeadTrainingConfig(epochs=1))})
    base = [dataset_tables, click_log_pairs, simulated_clicks, train_pairs, ASSET_BY_NAME["base_models"]]
    assert materialize_selected(base, partition_key="tiny", instance=instance, resources=resources,
                                run_config=quick).success
    _write_synthetic_queries(storage_root)
    tables = ["mapped_pairs_udapdr", "augmented_train_pairs_udapdr", "ips_train_pairs", "lever_train_pairs",
              "lever_ips_train_pairs", "gandalf_train_pairs"]
    assert materialize_selected(_refresh_assets(tables), partition_key="tiny", instance=instance, resources=resources,
                          run_config=REFRESH_CONFIG).success
    yield instance, resources


def _drop_new_clicks(root, name="drop-001.csv"):
    documents = pl.read_parquet(root / "documents" / "tiny" / "data.parquet")["doc_id"].to_list()
    clicks = root / "inputs" / "tiny" / "clicks"
    clicks.mkdir(exist_ok=True)
    pl.DataFrame({
        "query": ["herbal sleep tea from the mountains", "vitamin gummies for kids",
                  "herbal sleep tea from the mountains", "organic face cream for dry skin"],
        "doc_id": [documents[0], documents[1], documents[0], documents[2]],
        "clicks": [2, 1, 3, 1],
        "timestamp": ["2026-11-20T10:00:00"] * 4,
    }).write_csv(clicks / name)
    return 3  # new query texts


def _materialization_metadata(result):
    return {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}


@pytest.mark.slow
def test_click_drop_refreshes_only_tables_with_only_new_rows_and_equals_a_full_recompute(storage_root, trained_world,
                                                                                         tmp_path):
    instance, resources = trained_world
    sensor_resources = {"storage": resources["storage"]}
    quiet = click_log_sensor(dg.build_sensor_context(instance=instance, cursor=None, resources=sensor_resources))
    assert quiet.run_requests == []  # no drops yet

    new_texts = _drop_new_clicks(storage_root)
    result = click_log_sensor(dg.build_sensor_context(instance=instance, cursor=quiet.cursor,
                                                      resources=sensor_resources))
    [request] = result.run_requests
    assert request.partition_key == "tiny" and request.run_key.startswith("clicks:tiny:")
    selected = {k.to_user_string() for k in request.asset_selection}
    # what this dataset has: no model step, and not the generation branches it never ran
    assert selected == {"click_log_pairs", "train_pairs", "mapped_pairs_udapdr", "augmented_train_pairs_udapdr",
                        "ips_train_pairs", "lever_train_pairs", "lever_ips_train_pairs", "gandalf_train_pairs"}
    again = click_log_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                                     resources=sensor_resources))
    assert again.run_requests == []  # the cursor remembers the drop

    job = dg.Definitions(assets=ASSETS, jobs=[click_refresh_job], resources=resources).resolve_job_def("click_refresh")
    run = job.execute_in_process(partition_key="tiny", instance=instance, asset_selection=request.asset_selection,
                                 run_config=REFRESH_CONFIG, tags={"dagster/run_key": request.run_key})
    assert run.success
    meta = _materialization_metadata(run)
    assert set(meta) == selected
    assert meta["click_log_pairs"]["files_read_now"].value == 1 and meta["click_log_pairs"]["rows_read_now"].value == 4
    assert meta["mapped_pairs_udapdr"]["incremental"].value is True
    assert meta["mapped_pairs_udapdr"]["targets_searched_now"].value == new_texts
    # only the new query texts are embedded, once: synthetic queries and documents come from the shared cache
    embedded = [meta[a]["texts_embedded_now"].value for a in ("mapped_pairs_udapdr", "lever_train_pairs")]
    assert sum(embedded) == new_texts

    # a full recompute from scratch (no caches, no mapping state) gives the same tables
    fresh = tmp_path / "fresh"
    shutil.copytree(storage_root, fresh)
    for folder in ("click_log_cache", "embedding_cache", "mapping_state", *selected):
        shutil.rmtree(fresh / folder, ignore_errors=True)
    fresh_instance = dg.DagsterInstance.ephemeral()
    fresh_instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    full = materialize_selected(_refresh_assets(sorted(selected)), partition_key="tiny", instance=fresh_instance,
                          resources=_resources(fresh), run_config=REFRESH_CONFIG)
    assert full.success
    full_meta = _materialization_metadata(full)
    assert full_meta["mapped_pairs_udapdr"]["incremental"].value is False
    assert full_meta["click_log_pairs"]["files_read_now"].value == 1
    for asset in sorted(selected):
        incremental = pl.read_parquet(storage_root / asset / "tiny" / "data.parquet").sort(pl.all())
        recomputed = pl.read_parquet(fresh / asset / "tiny" / "data.parquet").sort(pl.all())
        assert incremental.equals(recomputed), asset
    mapped = pl.read_parquet(storage_root / "mapped_pairs_udapdr" / "tiny" / "data.parquet")
    click_queries = set(pl.read_parquet(storage_root / "click_log_pairs" / "tiny" / "queries.parquet")["query_id"])
    assert click_queries & set(mapped["query_id"])  # the new click queries were mapped onto


def _status(instance, defs, asset: str):
    """Dagster's own verdict on an asset of partition `tiny` (what the UI's "unsynced" tag shows)."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey(asset), "tiny")


def _data_version(instance, asset: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.tags["dagster/data_version"]


@pytest.mark.slow
def test_data_versions_say_what_is_unsynced_and_the_model_refresh_follows_them(storage_root, trained_world):
    """Tables carry their content digest as data version, assets a code version: after new clicks the models read
    as unsynced until retrained; a table rewritten with the same content changes nothing; the model refresh
    (an automation condition on the cron) requests exactly the model steps whose inputs changed."""
    from dagster._core.definitions.data_version import StaleStatus

    from skim_assets.resources.artifacts import tables_data_version
    from skim_assets.versions import code_version

    instance, resources = trained_world
    defs = dg.Definitions(assets=ASSETS, resources=resources)
    storage = resources["storage"]
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("base_models")).code_version == code_version("skim_assets.assets.training")
    folder = storage.artifact_dir("train_pairs", "tiny")
    assert _data_version(instance, "train_pairs") == tables_data_version(
        {p.stem: p for p in folder.glob("*.parquet")}).value
    assert _status(instance, defs, "base_models") == StaleStatus.FRESH

    saturday = __import__("datetime").datetime(2026, 11, 28, 2, 0)  # a Saturday, an hour before the default cron
    hour = __import__("datetime").timedelta(hours=1)
    week = __import__("datetime").timedelta(days=7)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=saturday)
    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=first.cursor,
        evaluation_time=saturday + hour + __import__("datetime").timedelta(minutes=1))
    assert tick.total_requested == 0  # the tick came, but nothing the models read had changed

    # the same train pairs written again: the same data version, nothing unsynced
    before = _data_version(instance, "train_pairs")
    assert materialize_selected([train_pairs], partition_key="tiny", instance=instance, resources=resources).success
    assert _data_version(instance, "train_pairs") == before
    assert _status(instance, defs, "base_models") == StaleStatus.FRESH

    _drop_new_clicks(storage_root)
    assert materialize_selected([click_log_pairs, train_pairs], partition_key="tiny", instance=instance,
                                resources=resources).success
    assert _data_version(instance, "train_pairs") != before
    assert _status(instance, defs, "base_models") == StaleStatus.STALE
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor,
                                              evaluation_time=saturday + 2 * hour)
    # between ticks the cheap tables follow the new train pairs (eager); the models wait for the cron
    assert quiet.get_requested_partitions(dg.AssetKey("lever_train_pairs")) == {"tiny"}
    assert not quiet.get_requested_partitions(dg.AssetKey("base_models"))
    # the sensor's runs do what it asked, and it looks again a minute later (and every minute until the tick)
    assert materialize_selected([ASSET_BY_NAME["lever_train_pairs"]], partition_key="tiny", instance=instance,
                                resources=resources).success
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor,
                                                evaluation_time=saturday + 3 * hour)
    assert settled.total_requested == 0
    refresh = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor,
                                                evaluation_time=saturday + week + 2 * hour)
    requested = {k.to_user_string() for k in graph.get_all_asset_keys() if refresh.get_requested_partitions(k)}
    # the base models (their train pairs changed) and, in the same tick, what reads them; never a step that was
    # not materialized before (lora_adapter, synthetic_queries), nor the click tables the sensor refreshes
    assert {"base_models", "lever_train_pairs"} <= requested
    assert not requested & {"lora_adapter", "synthetic_queries", "teacher_demonstrations", "click_log_pairs",
                            "train_pairs", "documents", "skim_models"}
    assert refresh.get_requested_partitions(dg.AssetKey("base_models")) == {"tiny"}

    quick = dg.RunConfig(ops={"base_models": MethodModelsConfig(
        dual_encoder=RetrieverTrainingConfig(epochs=1, hard_negatives=0), ova_head=OvaHeadTrainingConfig(epochs=1))})
    assert materialize_selected([ASSET_BY_NAME["base_models"]], partition_key="tiny", instance=instance,
                                resources=resources, run_config=quick).success
    assert _status(instance, defs, "base_models") == StaleStatus.FRESH
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=refresh.cursor,
                                              evaluation_time=saturday + 2 * week + 2 * hour)
    assert not after.get_requested_partitions(dg.AssetKey("base_models"))

    # edited code: the UI says unsynced, and the refresh leaves the retraining to the user
    edited = dg.Definitions(assets=[a.map_asset_specs(
        lambda spec: spec.replace_attributes(code_version="edited") if spec.key == dg.AssetKey("base_models") else spec)
        for a in ASSETS], resources=resources)
    assert _status(instance, edited, "base_models") == StaleStatus.STALE
    edited_tick = dg.evaluate_automation_conditions(defs=edited, instance=instance, cursor=after.cursor,
                                                    evaluation_time=saturday + 3 * week + 2 * hour)
    assert not edited_tick.get_requested_partitions(dg.AssetKey("base_models"))


@pytest.mark.slow
def test_cheap_tables_follow_their_upstream_eagerly_and_models_do_not(storage_root, tiny_demo):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    resources = _resources(storage_root)
    defs = dg.Definitions(assets=ASSETS, resources=resources)
    assert materialize_selected([dataset_tables, click_log_pairs, simulated_clicks, train_pairs,
                           ASSET_BY_NAME["ips_train_pairs"], ASSET_BY_NAME["gandalf_train_pairs"]],
                          partition_key="tiny", instance=instance, resources=resources).success
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # everything is up to date

    _drop_new_clicks(storage_root)
    assert materialize_selected([click_log_pairs], partition_key="tiny", instance=instance, resources=resources).success
    after_drop = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    # one tick plans the cascade: train pairs and the tables that follow them, never a model step
    requested = {name for name in ASSET_BY_NAME if after_drop.get_requested_partitions(dg.AssetKey(name)) == {"tiny"}}
    assert {"train_pairs", "ips_train_pairs", "gandalf_train_pairs"} <= requested
    assert not any(name.endswith("_models") or name.startswith(("synthetic", "lora", "teacher"))
                   for name in requested)
    assert materialize_selected([train_pairs, ASSET_BY_NAME["ips_train_pairs"], ASSET_BY_NAME["gandalf_train_pairs"]],
                          partition_key="tiny", instance=instance, resources=resources).success
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_drop.cursor)
    assert settled.total_requested == 0


def _definitions_summary(env: dict) -> dict:
    script = textwrap.dedent("""
        import json
        from skim_assets.definitions import defs
        graph = defs.resolve_asset_graph()
        ops = {}
        for key in graph.get_all_asset_keys():
            node = defs.resolve_assets_def(key).node_def
            # a graph-backed asset (generation): the tags of its model ops
            inner = list(node.iterate_op_defs()) if hasattr(node, "iterate_op_defs") else [node]
            tags = {}
            for op in inner:
                tags |= dict(op.tags)
            ops[key.to_user_string()] = tags
        executor = defs.resolve_job_def("skim_pipeline").executor_def
        print(json.dumps({"executor": executor.name, "ops": ops}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_k8s_profile_runs_steps_as_kubernetes_jobs_with_a_gpu_on_model_steps():
    pytest.importorskip("dagster_k8s")
    k8s = _definitions_summary({"SKIM_DEPLOYMENT": "k8s", "SKIM_K8S_NAMESPACE": "research"})
    assert k8s["executor"] == "skim_k8s_executor"
    gpu_config = json.loads(k8s["ops"]["skim_models"]["dagster-k8s/config"])
    assert gpu_config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for model_step in ("base_models", "lora_adapter", "synthetic_queries", "skim_models", "retrieval_metrics"):
        assert "dagster-k8s/config" in k8s["ops"][model_step], model_step
    for table in ("documents", "train_pairs", "mapped_pairs", "comparison_report"):
        assert "dagster-k8s/config" not in k8s["ops"][table], table

    local = _definitions_summary({"SKIM_DEPLOYMENT": "local"})
    assert local["executor"] == "skim_local_executor"
    assert local["ops"]["skim_models"] == {"skim/resource": "gpu"}
    bad = subprocess.run([sys.executable, "-c", "import skim_assets.definitions"], capture_output=True, text=True,
                         env={**os.environ, "SKIM_DEPLOYMENT": "moon"}, timeout=300)
    assert bad.returncode != 0 and "SKIM_DEPLOYMENT='moon'" in bad.stderr


KILLABLE_STEP = """
import json
import sys
import dagster as dg
from skim_assets.definitions import ASSETS, build_resources
from skim_assets.partitions import dataset_partitions
from skim_assets.resources import GeneratorResource, storage_resources
root, lm, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
config = {"ops": {"synthetic_queries_udapdr": {"config": {"max_new_tokens": 24, "shard_size": 2, "seed": seed,
                                                          "temperature": 0.8}}}}
result = dg.materialize(ASSETS, selection=["base_slm", "synthetic_queries_udapdr"], partition_key="tiny",
                        instance=instance, run_config=config, resources={
                            **build_resources(), **storage_resources(root),
                            "generator": GeneratorResource(base_model_path=lm, device="cpu", backend="transformers")})
if result.success:
    metadata = result.asset_materializations_for_node("synthetic_queries_udapdr")[0].metadata
    print(json.dumps({"shards_reused": metadata["shards_reused"].value}))
sys.exit(0 if result.success else 1)
"""


def _generation_step(root, lm, seed):
    """The generation asset materialized in a process of its own (its log goes to a file: no pipe to fill)."""
    log = open(root.parent / f"generation-{seed}-{time.monotonic_ns()}.log", "w+")
    return subprocess.Popen([sys.executable, "-c", KILLABLE_STEP, str(root), str(lm), str(seed)],
                            stdout=subprocess.PIPE, stderr=log, text=True)


def _finish(process) -> dict:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"exit {process.returncode}: {out[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_generation_step_killed_with_sigkill_keeps_the_previous_artifact_and_resumes(storage_root, tiny_demo,
                                                                                       tiny_causal_lm, tmp_path):
    resources = _resources(storage_root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    assert materialize_selected([dataset_tables, click_log_pairs, simulated_clicks, train_pairs], partition_key="tiny",
                          instance=instance, resources=resources).success
    first = _generation_step(storage_root, tiny_causal_lm, seed=1)
    _finish(first)
    artifact = storage_root / SYNTHETIC / "tiny" / "raw.parquet"
    previous = artifact.read_bytes()

    # a new run (another seed) killed after its first checkpointed shard: no cleanup code runs
    shards = storage_root / f"{SYNTHETIC}_shards" / "tiny"
    started = time.monotonic()
    killed = _generation_step(storage_root, tiny_causal_lm, seed=2)
    manifests = lambda: [p for p in shards.glob("shard-*.json") if json.loads(p.read_text()).get("fingerprint")]  # noqa: E731
    baseline = {p.name: p.stat().st_mtime_ns for p in manifests()}
    while time.monotonic() - started < 300 and killed.poll() is None:
        fresh = [p for p in manifests() if baseline.get(p.name) != p.stat().st_mtime_ns]
        if fresh:
            os.kill(killed.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the step finished before it could be killed"
    done_before_kill = len([p for p in manifests() if baseline.get(p.name) != p.stat().st_mtime_ns])
    assert 1 <= done_before_kill < 12  # 24 documents in shards of 2
    assert artifact.read_bytes() == previous  # the killed step left the previous good artifact in place

    # the rerun reuses the shards finished before the kill, and equals an uninterrupted run
    resumed = _generation_step(storage_root, tiny_causal_lm, seed=2)
    assert _finish(resumed)["shards_reused"] == done_before_kill
    clean_root = tmp_path / "clean"
    shutil.copytree(storage_root, clean_root, ignore=shutil.ignore_patterns(f"{SYNTHETIC}*"))
    clean = _generation_step(clean_root, tiny_causal_lm, seed=2)
    assert _finish(clean)["shards_reused"] == 0
    resumed_raw = pl.read_parquet(artifact).drop("shard")
    assert resumed_raw.equals(pl.read_parquet(clean_root / SYNTHETIC / "tiny" / "raw.parquet").drop("shard"))
    assert pl.read_parquet(storage_root / SYNTHETIC / "tiny" / "data.parquet").equals(
        pl.read_parquet(clean_root / SYNTHETIC / "tiny" / "data.parquet"))
    assert artifact.read_bytes() != previous


def test_dg_names_the_code_location_as_the_workspace_and_the_ui_do():
    import tomllib
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    workspace = yaml.safe_load((root / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert pyproject["tool"]["dg"]["project"]["code_location_name"] == workspace["location_name"] \
        == pyproject["tool"]["dagster"]["code_location_name"] == "skim_assets"
    assert pyproject["tool"]["dg"]["project"]["code_location_target_module"] == workspace["module_name"]
    # the exact torch is a constraint of the install, not a pin of the package
    assert not any(d.startswith("torch==") for d in pyproject["project"]["dependencies"])
    assert "torch==2.13.0" in (root / "constraints.txt").read_text().splitlines()
