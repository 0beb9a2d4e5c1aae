"""Generation fanned out over parallel steps: shard groups run as separate steps of one run, at most as many at once
as the instance's `gpu` pool allows, and their union is the table a one-step run writes."""

import os
from datetime import datetime

import dagster as dg
import polars as pl
import pytest

from skim_assets.definitions import ASSETS, build_resources
from skim_assets.partitions import dataset_partitions
from skim_assets.resources import GeneratorResource, storage_resources
from skim_assets_tests.conftest import materialize_selected

ASSET = "synthetic_queries_udapdr"  # the generation branch without a LoRA adapter: nothing to train first
ROOT_ENV, LM_ENV = "SKIM_FANOUT_ROOT", "SKIM_FANOUT_LM"
GENERATION = {"shard_size": 4, "max_new_tokens": 24, "temperature": 0.8, "seed": 3}  # 24 documents: 6 shards


def _resources(root, lm) -> dict:
    return build_resources() | storage_resources(root) | {
        "generator": GeneratorResource(base_model_path=str(lm), device="cpu", backend="transformers")}


def fanout_job() -> dg.JobDefinition:
    """The generation asset as a job under the multiprocess executor (step processes rebuild it from here)."""
    job = dg.define_asset_job("fanout", selection=[ASSET],
                              executor_def=dg.multiprocess_executor.configured({"max_concurrent": 4}))
    defs = dg.Definitions(assets=ASSETS, jobs=[job], resources=_resources(os.environ[ROOT_ENV], os.environ[LM_ENV]))
    return defs.resolve_job_def("fanout")


def _definitions(*names):
    return [a for a in ASSETS if any(key.path[-1] in names for key in a.keys)]


def _step_windows(instance, run_id, prefix):
    """step key -> (launch, end) timestamps of the steps whose key starts with `prefix`. A step holds its pool slot
    from its launch (the executor claims the slot, then starts the step's process) to its end: measuring from
    STEP_START instead would depend on how long a loaded machine takes to start a process (CI saw 5-18 s)."""
    windows = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not (event.step_key or "").startswith(prefix):
            continue
        if event.event_type_value == "STEP_WORKER_STARTING":
            windows.setdefault(event.step_key, [None, None])[0] = record.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            windows.setdefault(event.step_key, [None, None])[1] = record.timestamp
    return {k: tuple(v) for k, v in windows.items()}


def _most_at_once(windows) -> int:
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


@pytest.mark.slow
def test_shard_groups_run_in_parallel_within_the_pool_and_equal_a_one_step_run(tmp_path, storage_root, tiny_demo,
                                                                               tiny_causal_lm, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 2\n")
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(dataset_partitions.name, ["tiny"])
    upstream = _definitions("documents", "click_log_pairs", "click_train_pairs", "train_pairs", "base_slm")
    assert materialize_selected(upstream, partition_key="tiny", instance=instance,
                                resources=_resources(storage_root, tiny_causal_lm)).success

    monkeypatch.setenv(ROOT_ENV, str(storage_root))
    monkeypatch.setenv(LM_ENV, str(tiny_causal_lm))
    config = {"ops": {ASSET: {"config": GENERATION | {"parallel_shards": 3}}}}
    started = datetime.now()
    with dg.execute_job(dg.reconstructable(fanout_job), instance=instance, run_config=config,
                        tags={"dagster/partition": "tiny"}) as result:
        assert result.success
        run_id = result.run_id
    windows = _step_windows(instance, run_id, f"{ASSET}.{ASSET}__generate[")
    assert len(windows) == 3 and all(start and end for start, end in windows.values())
    # the pool (limit 2) let two shard groups run at once and held the third back
    assert _most_at_once(list(windows.values())) == 2, (windows, datetime.now() - started)
    blocked = [r.dagster_event.step_key for r in instance.all_logs(run_id)
               if r.dagster_event is not None and "blocked by limit for pool gpu" in (r.user_message or "")]
    assert blocked, "no shard group waited for the gpu pool"
    metadata = instance.get_latest_materialization_event(dg.AssetKey(ASSET)).asset_materialization.metadata
    assert metadata["parallel_steps"].value == 3 and metadata["shards"].value == 6
    fanned = pl.read_parquet(storage_root / ASSET / "tiny" / "raw.parquet")

    # the same generation as one step, from scratch in its own root
    single_root = tmp_path / "single"
    for asset in ("documents", "queries", "relevance_labels", "click_log_pairs", "click_train_pairs", "train_pairs"):
        (single_root / asset / "tiny").mkdir(parents=True)
        for table in (storage_root / asset / "tiny").glob("*.parquet"):
            (single_root / asset / "tiny" / table.name).write_bytes(table.read_bytes())
    (single_root / "inputs").symlink_to(storage_root / "inputs")
    one_step = materialize_selected(_definitions("base_slm", ASSET), partition_key="tiny", instance=instance,
                                    resources=_resources(single_root, tiny_causal_lm),
                                    run_config={"ops": {ASSET: {"config": GENERATION}}})
    assert one_step.success
    assert one_step.asset_materializations_for_node(ASSET)[0].metadata["parallel_steps"].value == 1
    single = pl.read_parquet(single_root / ASSET / "tiny" / "raw.parquet")
    assert fanned.height == 24 and fanned.drop("shard").equals(single.drop("shard"))
    assert fanned["shard"].equals(single["shard"])
