"""The `gpu` pool holds across runs with the shipped dagster.yaml, and a killed `skim` run does not hold it forever."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import dagster as dg
import pytest

from skim_assets.cli import CLI_HOST_TAG, CLI_PID_TAG, reap_dead_cli_runs
from skim_assets.deployment import install_instance_config

# A model step in the `gpu` pool that records when it ran; run in its own process, as two launched runs are. It
# holds until the other run's step has started too (then half a second more), or `seconds` have passed: two
# unlimited runs overlap however unevenly their processes start on a busy machine, and a limited one waits it out.
CHILD = """
import json, os, socket, sys, time
import dagster as dg
from skim_assets.assets.common import GPU_POOL
from skim_assets.cli import CLI_HOST_TAG, CLI_PID_TAG
home, spans, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

@dg.asset(pool=GPU_POOL)
def model_step():
    start = time.time()
    with open(spans + ".started", "a") as f:
        f.write(str(os.getpid()) + "\\n")
    while time.time() < start + seconds:
        with open(spans + ".started") as f:
            if len(f.read().split()) >= 2:
                break
        time.sleep(0.05)
    time.sleep(0.5)
    with open(spans, "a") as f:
        f.write(json.dumps([start, time.time()]) + "\\n")

tags = {CLI_PID_TAG: str(os.getpid()), CLI_HOST_TAG: socket.gethostname()}
assert dg.materialize([model_step], instance=dg.DagsterInstance.from_config(home), tags=tags).success
"""


def _start(home, spans, seconds):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(spans), str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _spans(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.slow
def test_the_shipped_instance_config_runs_one_model_step_at_a_time_across_runs(tmp_path):
    limited, unlimited = tmp_path / "limited", tmp_path / "unlimited"
    assert install_instance_config(limited) and not install_instance_config(limited)  # an existing one stays
    unlimited.mkdir()
    for home in (limited, unlimited):
        dg.DagsterInstance.from_config(str(home)).get_runs()  # storage created once, not raced by two processes
        runs = [_start(home, home / "spans.jsonl", 15.0) for _ in range(2)]
        assert [run.wait(timeout=120) for run in runs] == [0, 0]
    first, second = sorted(_spans(limited / "spans.jsonl"))
    assert not _overlap(first, second)  # the second run's model step waited for the first
    assert _overlap(*_spans(unlimited / "spans.jsonl"))  # without the pool limit, both ran at once


@pytest.mark.slow
def test_a_killed_skim_run_gives_its_pool_slot_back(tmp_path):
    home, spans = tmp_path / "home", tmp_path / "spans.jsonl"
    install_instance_config(home)
    killed = _start(home, spans, 60.0)
    deadline = time.time() + 60
    while not (tmp_path / "spans.jsonl.started").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "spans.jsonl.started").exists(), "the first run's model step never started"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    instance = dg.DagsterInstance.from_config(str(home))
    [stuck] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert stuck.tags[CLI_PID_TAG] == str(killed.pid) and stuck.tags[CLI_HOST_TAG] == socket.gethostname()

    assert reap_dead_cli_runs(instance) == [stuck.run_id]
    assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _start(home, spans, 0.5).wait(timeout=120) == 0  # the next model step gets the slot
    assert len(_spans(spans)) == 1


def test_every_step_that_runs_a_model_is_in_the_gpu_pool():
    """Steps that run an encoder or LM over many texts share the `gpu` pool, so two of them never compete for the
    same cores (at 1M documents the offline teacher beside a training step slowed both 4x)."""
    from skim_assets.assets.common import GPU_POOL
    from skim_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for name in ["teacher_demonstrations", "lora_adapter", "click_train_pairs", "oracle_models", "skim_models",
                 "retrieval_metrics"]:
        assert graph.get(dg.AssetKey(name)).assets_def.op.pool == GPU_POOL, name


def test_steps_in_flight_on_one_machine_follow_skim_max_concurrent(monkeypatch):
    import pytest

    from skim_assets.deployment import LOCAL_MAX_CONCURRENT, MAX_CONCURRENT_ENV, build_executor, local_max_concurrent

    monkeypatch.delenv(MAX_CONCURRENT_ENV, raising=False)
    assert local_max_concurrent() == LOCAL_MAX_CONCURRENT
    monkeypatch.setenv(MAX_CONCURRENT_ENV, "1")
    assert local_max_concurrent() == 1
    build_executor()  # the local executor is built with it
    for bad in ["0", "-1", "two"]:
        monkeypatch.setenv(MAX_CONCURRENT_ENV, bad)
        with pytest.raises(ValueError, match="SKIM_MAX_CONCURRENT"):
            local_max_concurrent()


# A `skim`-like process: a run through the multiprocess executor (each step a process of its own) whose model step
# writes its pid and then works for a minute; SIGTERM is handled as `skim materialize` handles it.
SLOW_JOB = """
import os, time
import dagster as dg

@dg.asset(pool="gpu")  # skim_assets' GPU_POOL, named here so that the step process imports no torch
def slow_model_step():
    with open(os.environ["STEP_PID_FILE"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)

def slow_job():
    return dg.define_asset_job("slow", [slow_model_step]).resolve(
        asset_graph=dg.Definitions(assets=[slow_model_step]).resolve_asset_graph())
"""

SKIM_LIKE = """
import os, socket, sys
import dagster as dg
from skim_assets.cli import CLI_HOST_TAG, CLI_PID_TAG, _terminate_as_interrupt
tags = {CLI_PID_TAG: str(os.getpid()), CLI_HOST_TAG: socket.gethostname()}
job = dg.build_reconstructable_job("slow_module", "slow_job")
with _terminate_as_interrupt(), dg.execute_job(job, instance=dg.DagsterInstance.from_config(sys.argv[1]),
                                               tags=tags) as result:
    pass
"""


def _start_skim_like(tmp_path, home):
    (tmp_path / "slow_module.py").write_text(SLOW_JOB)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               STEP_PID_FILE=str(tmp_path / "step.pid"))
    process = subprocess.Popen([sys.executable, "-c", SKIM_LIKE, str(home)], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while not (tmp_path / "step.pid").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "step.pid").exists(), "the model step never started"
    time.sleep(0.5)
    return process, int((tmp_path / "step.pid").read_text())


def _wait_gone(pid, seconds):
    from skim_assets.lib.storage import process_alive

    deadline = time.time() + seconds
    while process_alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    return not process_alive(pid)


@pytest.mark.slow
def test_a_killed_skims_step_still_running_keeps_the_pool_slot_and_sigterm_stops_the_steps(tmp_path):
    home = tmp_path / "home"
    install_instance_config(home)
    skim, step = _start_skim_like(tmp_path, home)
    os.kill(skim.pid, signal.SIGKILL)  # nothing can be handled: the step process lives on
    skim.wait()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert reap_dead_cli_runs(instance) == []  # its step still trains: the slot stays held
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
    finally:
        os.kill(step, signal.SIGKILL)
    assert _wait_gone(step, 10)
    assert reap_dead_cli_runs(instance) == [run.run_id]

    (tmp_path / "step.pid").unlink()
    skim, step = _start_skim_like(tmp_path, home)
    skim.send_signal(signal.SIGTERM)  # as `kill PID` or a supervisor stops skim: its steps stop with it
    skim.wait(timeout=60)
    assert _wait_gone(step, 30), "the step process outlived the skim process it belonged to"


def test_slots_held_by_a_finished_run_are_freed(tmp_path):
    """A run marked failed by its own dying process while a step held a `gpu` slot (kill the step, then the
    orchestrator): the slot is given back, else every later model step waits forever (seen at 1M documents)."""
    from skim_assets.cli import _free_slots_of_finished_runs

    home = tmp_path / "home"
    install_instance_config(home)
    instance = dg.DagsterInstance.from_config(str(home))

    @dg.asset
    def anything():
        return 1

    finished = instance.create_run_for_job(dg.Definitions(assets=[anything]).resolve_implicit_global_asset_job_def())
    running = instance.create_run_for_job(dg.Definitions(assets=[anything]).resolve_implicit_global_asset_job_def())
    instance.event_log_storage.set_concurrency_slots("gpu", 2)
    for run in (finished, running):
        assert instance.event_log_storage.claim_concurrency_slot("gpu", run.run_id, "anything").is_claimed
    instance.report_run_failed(finished, "killed")
    instance.handle_run_event(running.run_id, dg.DagsterEvent(
        event_type_value="PIPELINE_START", job_name=running.job_name, message="started"))
    assert _free_slots_of_finished_runs(instance) == [finished.run_id]
    held = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    assert [slot.run_id for slot in held] == [running.run_id]  # a live run keeps its slot
