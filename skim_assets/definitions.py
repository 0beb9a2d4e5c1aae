"""The code location: every asset, job, sensor and resource of skim_assets."""

import dagster as dg

from .assets.baselines import baseline_pair_assets
from .assets.datasets import click_log_pairs, dataset_checks, dataset_tables
from .assets.distillation import (
    base_slm,
    distillation_checks,
    lora_adapter,
    lora_adapter_no_metadata,
    teacher_demonstrations,
)
from .assets.evaluation import (
    comparison_report,
    duckdb_catalogue,
    evaluation_checks,
    html_report,
    label_repair_report,
    retrieval_metrics,
)
from .assets.generation import generation_assets, generation_checks
from .assets.mapping import mapping_assets, mapping_checks
from .assets.simulation import simulated_clicks
from .assets.sweeps import sweep_assets
from .assets.training import models_assets, train_pairs, training_checks
from .console import step_progress_logger
from .deployment import build_executor
from .jobs import (
    build_demo_jobs,
    click_refresh_job,
    dataset_import_job,
    model_refresh_job,
    skim_core_job,
    skim_pipeline_job,
)
from .resources import EncoderResource, GeneratorResource, StorageResource, TeacherResource, storage_resources
from .sensors import automation_sensor, click_log_sensor, dataset_folder_sensor, with_model_refresh
from .versions import with_code_versions

ASSETS = with_model_refresh(with_code_versions([
    dataset_tables, click_log_pairs, simulated_clicks, train_pairs, *models_assets,
    retrieval_metrics, comparison_report, label_repair_report, duckdb_catalogue, html_report,
    teacher_demonstrations, base_slm, lora_adapter, lora_adapter_no_metadata, *generation_assets, *mapping_assets,
    *baseline_pair_assets, *sweep_assets,
]))
# Every asset check, each defined beside the asset it guards (`assets/<stage>.py`; verdicts in `lib/checks.py`, wiring
# in `assets/common.py`).
all_checks: list = [
    *dataset_checks, *distillation_checks, *generation_checks, *mapping_checks, *training_checks,
    *evaluation_checks,
]


def build_teacher_resource() -> TeacherResource:
    """The teacher: nothing set here, so each field a run does not configure is read from its environment
    variable (SKIM_TEACHER, SKIM_TEACHER_BASE_URL, SKIM_TEACHER_MODEL, SKIM_TEACHER_API_KEY) when the teacher is
    built (`TeacherResource.setting`)."""
    return TeacherResource()


def build_resources() -> dict:
    return {
        **storage_resources(StorageResource().root),
        "encoder": EncoderResource(),
        "teacher": build_teacher_resource(),
        "generator": GeneratorResource(),
    }


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=all_checks,
    jobs=[skim_pipeline_job, skim_core_job, dataset_import_job, click_refresh_job, model_refresh_job,
          *build_demo_jobs(ASSETS)],
    # Dagster's console logger, and the one-line-per-step console of `skim` (`console.py`), which its runs configure:
    # a run the UI re-executes from one of them takes the same config. A run that configures no logger gets
    # Dagster's default console logger, as before.
    loggers={"console": dg.colored_console_logger, "skim_progress": step_progress_logger},
    sensors=[dataset_folder_sensor, click_log_sensor, automation_sensor],
    resources=build_resources(),
    executor=build_executor(),
)
