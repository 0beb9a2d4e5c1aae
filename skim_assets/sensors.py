"""Sensors: new dataset folders, new click-log drops, eager table refresh, and the model refresh (an automation
condition on a cron)."""

import hashlib
import json
import logging
import os

import dagster as dg

from .jobs import (
    CLICK_REFRESH_ASSETS,
    EAGER_TABLES,
    MODEL_REFRESH,
    REFRESH_ALWAYS,
    click_refresh_job,
    skim_pipeline_job,
)
from .lib.clicklogs import click_log_files
from .lib.datasets import CLICKS_FOLDER, read_spec
from .lib.formats import DataError
from .lib.layout import check_dataset_name
from .partitions import dataset_partitions
from .resources import StorageResource

MODEL_REFRESH_CRON_ENV = "SKIM_MODEL_REFRESH_CRON"
DEFAULT_MODEL_REFRESH_CRON = "0 3 * * 6"  # Saturdays 03:00 UTC


def registered_datasets(instance) -> list[str]:
    """The registered dataset partitions whose names are safe folder names, sorted. A key added by other means
    (the UI, an older version) that fails `check_dataset_name` is skipped, never joined into a path."""
    names = []
    for name in sorted(instance.get_dynamic_partitions(dataset_partitions.name)):
        try:
            names.append(check_dataset_name(name))
        except ValueError:
            continue
    return names


@dg.sensor(job=skim_pipeline_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers every new <root>/inputs/<name>/dataset.json as a `dataset` partition and runs the "
                       "pipeline for it once; a dataset.json with a bad setting is skipped, naming the file and field.")
def dataset_folder_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Adds a `dataset` partition for every new `<root>/inputs/<name>/dataset.json` and requests one pipeline run.

    Datasets already registered (by `skim import` / `skim demo`) are only noted: their runs are the user's call.
    The cursor lists the datasets already seen; run keys make a re-seen dataset never run twice. A new folder whose
    dataset.json is refused (a wrong type or range, damaged JSON) gets no partition: the tick says which file and
    field, and the folder is looked at again next tick, so fixing the file registers it.
    """
    seen = set(filter(None, (context.cursor or "").split(",")))
    existing = set(context.instance.get_dynamic_partitions(dataset_partitions.name))
    found, refused = [], []
    for name in storage.layout.datasets():
        if name not in seen and name not in existing:
            try:
                read_spec(storage.inputs(name))
            except DataError as error:  # its message names the file and the field
                context.log.warning(f"dataset folder {name!r} not registered: {error}")
                refused.append(f"{name}: {error}")
                continue
        found.append(name)
    to_add = [name for name in found if name not in seen and name not in existing]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"register:{name}") for name in to_add],
        dynamic_partitions_requests=[dataset_partitions.build_add_request(to_add)] if to_add else [],
        cursor=",".join(sorted(seen | set(found))),
        skip_reason=f"refused: {'; '.join(refused)}" if refused and not to_add else None,
    )


def materialized_before(storage: StorageResource, dataset: str, assets, always=()) -> list[dg.AssetKey]:
    """The assets of `assets` this dataset already has artifacts of (plus `always`): a refresh renews what
    exists and never starts a branch the user has not run (e.g. the generation ablations)."""
    return [dg.AssetKey(a) for a in assets if a in always or storage.has_artifact(a, dataset)]


def click_drop_state(storage: StorageResource, dataset: str) -> dict:
    return {f.name: f"{f.stat().st_size}:{f.stat().st_mtime_ns}"
            for f in click_log_files(storage.inputs(dataset) / CLICKS_FOLDER)}


@dg.sensor(job=click_refresh_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches <root>/inputs/<dataset>/clicks/ and runs `click_refresh` (click-log pairs, train "
                       "pairs, mapped and baseline pairs; never a model step) when a drop appears, changes or goes.")
def click_log_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Watches every dataset's click-log drop folder (`<root>/inputs/<dataset>/clicks/`) and requests a
    `click_refresh` run of that dataset when a drop appears, changes or vanishes.

    The cursor maps each dataset to the (name, size, mtime) of its drops; the run key is a digest of that
    state, so the same drops never run twice. Datasets not imported yet are left to their first pipeline run.
    """
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for dataset in registered_datasets(context.instance):
        state = click_drop_state(storage, dataset)
        if state == cursor.get(dataset, {}):
            continue
        cursor[dataset] = state
        if not storage.table_path("documents", dataset).exists():
            continue
        digest = hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        requests.append(dg.RunRequest(
            partition_key=dataset, run_key=f"clicks:{dataset}:{digest}",
            asset_selection=materialized_before(storage, dataset, CLICK_REFRESH_ASSETS,
                                              always=REFRESH_ALWAYS["click_refresh"]),
            tags={"skim/trigger": "click-log drop"},
        ))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


def model_refresh_cron() -> tuple[str, str | None]:
    """(the model refresh's cron, why SKIM_MODEL_REFRESH_CRON was refused or None). A bad value must not break the
    code location (every `skim materialize` loads it): the refresh then keeps the default cron and its sensor starts
    stopped, saying why in its description."""
    from dagster._utils.schedules import is_valid_cron_string

    value = os.environ.get(MODEL_REFRESH_CRON_ENV, "").strip()
    if not value:
        return DEFAULT_MODEL_REFRESH_CRON, None
    if is_valid_cron_string(value):
        return value, None
    return DEFAULT_MODEL_REFRESH_CRON, (f"{MODEL_REFRESH_CRON_ENV}={value!r} is not a cron string (e.g. "
                                        f"'{DEFAULT_MODEL_REFRESH_CRON}'): the model refresh is stopped until it is "
                                        "fixed")


_CRON, _CRON_REFUSED = model_refresh_cron()
if _CRON_REFUSED:
    logging.getLogger(__name__).warning(_CRON_REFUSED)


def model_refresh_condition(cron: str) -> dg.AutomationCondition:
    """A model step is refreshed at the cron tick when the data it was computed from changed since it last ran
    (a dependency's data version: content digests of tables, so a click refresh that leaves the train pairs as they
    were changes nothing), or when a dependency is refreshed in the same tick; only where it was materialized
    before (a refresh never starts a branch the user has not run, e.g. an ablation). A code change shows in the
    UI as unsynced but retrains nothing by itself: an edit of a shared module would otherwise retrain every model
    at the next tick, which is the user's call."""
    AC = dg.AutomationCondition
    changed = AC.any_deps_match(AC.data_version_changed()).since_last_handled()
    cascade = AC.any_deps_match(AC.will_be_requested())
    return (AC.cron_tick_passed(cron, cron_timezone="UTC") & ~AC.missing() & (changed | cascade)
            & ~AC.in_progress() & ~AC.any_deps_in_progress()).with_label(f"model refresh (cron '{cron}', UTC)")


def with_model_refresh(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """`assets`, each model step (`MODEL_REFRESH`, the cheap eager tables aside) with `model_refresh_condition`;
    none when SKIM_MODEL_REFRESH_CRON was refused (the models then wait for a manual `model_refresh` run)."""
    if _CRON_REFUSED:
        return assets
    model_steps = {k for k in MODEL_REFRESH.resolve(assets)} - {dg.AssetKey(t) for t in EAGER_TABLES}
    condition = model_refresh_condition(_CRON)
    return [a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition)
                              if spec.key in model_steps else spec) for a in assets]


# One sensor evaluates both conditions, so a model refresh cascades within one tick through the cheap tables
# between model steps (base_models -> mapped_pairs -> augmented_train_pairs -> skim_models): a condition only sees
# what will be requested among the targets of its own sensor.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor", target=MODEL_REFRESH | dg.AssetSelection.assets(*EAGER_TABLES),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60,
    description="Evaluates the assets' automation conditions: the cheap training tables follow their upstream "
                "eagerly (a click drop never starts a model step); the model steps retrain "
                + (f"at cron '{_CRON}' (UTC, set by {MODEL_REFRESH_CRON_ENV}) when the data they were computed from "
                   "changed since they ran (Dagster data versions), where they were materialized before."
                   if not _CRON_REFUSED else f"only when asked: {_CRON_REFUSED}."),
)
