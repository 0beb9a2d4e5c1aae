"""The library's loggers reach a run's event log through the shipped instance config (python_logs), and the same
block is in the Kubernetes instance config and the Helm values."""

from pathlib import Path

import dagster as dg
import yaml

from skim_assets.deployment import INSTANCE_CONFIG
from skim_assets.lib.teachers.cache import ResponseCache
from skim_assets.lib.teachers.protocol import _Progress

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def shipped_python_logs() -> dict:
    return yaml.safe_load(INSTANCE_CONFIG.read_text())["python_logs"]


def run_and_read_event_log(tmp_path, python_logs: dict) -> list[tuple[int, str]]:
    """Materialize a tiny asset whose library code logs a warning (a damaged teacher cache entry, through the
    `skim_assets.lib.teachers.cache` logger) and an INFO progress line given to the step's log; (level, message)
    of every record in the run's event log."""
    cache = ResponseCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_text('{"text": ')  # truncated

    @dg.asset
    def reads_the_teacher_cache(context: dg.AssetExecutionContext) -> None:
        assert ResponseCache(tmp_path / "cache").get(key) is None
        _Progress(context.log.info, "teacher test:model", 1, every_s=0).emit()

    instance = dg.DagsterInstance.ephemeral(settings={"python_logs": python_logs})
    result = dg.materialize([reads_the_teacher_cache], instance=instance)
    assert result.success
    return [(entry.level, entry.user_message) for entry in instance.all_logs(result.run_id)]


def test_library_warnings_reach_the_event_log_with_the_shipped_instance_config(tmp_path):
    logs = run_and_read_event_log(tmp_path, shipped_python_logs())
    warnings = [message for level, message in logs if "ignoring unreadable teacher cache entry" in message]
    assert len(warnings) == 1 and str(tmp_path / "cache" / "ab") in warnings[0]
    assert [level for level, message in logs if message == warnings[0]] == [30]  # logging.WARNING
    # a progress line handed to the step's log is not logged a second time through the library's logger
    assert sum("teacher test:model: 0/1 done" in message for _, message in logs) == 1


def test_without_the_managed_logger_the_warning_never_reaches_the_event_log(tmp_path):
    unmanaged = {key: value for key, value in shipped_python_logs().items() if key != "managed_python_loggers"}
    logs = run_and_read_event_log(tmp_path, unmanaged)
    assert not any("ignoring unreadable teacher cache entry" in message for _, message in logs)
    assert any("teacher test:model" in message for _, message in logs)  # the step's own log still does


def test_the_kubernetes_instance_and_helm_values_manage_the_same_loggers():
    shipped = shipped_python_logs()
    assert shipped["managed_python_loggers"] == ["skim_assets"]
    k8s = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["python_logs"]
    assert k8s == shipped
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())["pythonLogs"]
    assert values == {"pythonLogLevel": shipped["python_log_level"],
                      "managedPythonLoggers": shipped["managed_python_loggers"]}
