"""Sensors: register datasets that appear under `<root>/inputs/` and run the pipeline for them."""


import dagster as dg

from .jobs import skim_pipeline_job
from .lib.datasets import SPEC_FILE, check_dataset_name
from .partitions import dataset_partitions
from .resources import StorageResource


def discover_datasets(storage: StorageResource) -> list[str]:
    """Dataset folders with a dataset.json and a valid partition name, sorted."""
    inputs = storage.root_path / "inputs"
    if not inputs.is_dir():
        return []
    names = []
    for spec in sorted(inputs.glob(f"*/{SPEC_FILE}")):
        try:
            names.append(check_dataset_name(spec.parent.name))
        except ValueError:
            continue
    return names


@dg.sensor(job=skim_pipeline_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def dataset_folder_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Adds a `dataset` partition for every new `<root>/inputs/<name>/dataset.json` and requests one pipeline run.

    Datasets already registered (by `skim import` / `skim demo`) are only noted: their runs are the user's call.
    The cursor lists the datasets already seen; run keys make a re-seen dataset never run twice.
    """
    seen = set(filter(None, (context.cursor or "").split(",")))
    found = discover_datasets(storage)
    existing = set(context.instance.get_dynamic_partitions(dataset_partitions.name))
    to_add = [name for name in found if name not in seen and name not in existing]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"register:{name}") for name in to_add],
        dynamic_partitions_requests=[dataset_partitions.build_add_request(to_add)] if to_add else [],
        cursor=",".join(sorted(seen | set(found))),
    )
