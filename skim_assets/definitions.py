"""The code location: every asset, job, sensor and resource of skim_assets."""

import os

import dagster as dg

from .assets.baselines import baseline_pair_assets
from .assets.common import GPU_TAGS
from .assets.datasets import click_log_pairs, dataset_tables
from .assets.distillation import base_slm, lora_adapter, lora_adapter_no_metadata, teacher_demonstrations
from .assets.evaluation import comparison_report, retrieval_metrics
from .assets.generation import generation_assets
from .assets.mapping import mapping_assets
from .assets.ova import ova_assets
from .checks import all_checks
from .assets.simulation import simulated_clicks
from .assets.training import retriever_assets, train_pairs
from .jobs import skim_core_job, skim_pipeline_job
from .resources import EncoderResource, GeneratorResource, StorageResource, TeacherResource
from .sensors import dataset_folder_sensor

ASSETS = [
    dataset_tables, click_log_pairs, simulated_clicks, train_pairs, *retriever_assets, *ova_assets,
    retrieval_metrics, comparison_report,
    teacher_demonstrations, base_slm, lora_adapter, lora_adapter_no_metadata, *generation_assets, *mapping_assets,
    *baseline_pair_assets,
]
TEACHER_API_KEY_ENV = "SKIM_TEACHER_API_KEY"


def build_teacher_resource() -> TeacherResource:
    """The teacher from the environment: SKIM_TEACHER (keyphrase | openai | hf-local), SKIM_TEACHER_BASE_URL,
    SKIM_TEACHER_MODEL; the key only ever travels as dg.EnvVar(SKIM_TEACHER_API_KEY)."""
    return TeacherResource(
        kind=os.environ.get("SKIM_TEACHER", "keyphrase"),
        base_url=os.environ.get("SKIM_TEACHER_BASE_URL", ""),
        model=os.environ.get("SKIM_TEACHER_MODEL", ""),
        api_key=dg.EnvVar(TEACHER_API_KEY_ENV) if os.environ.get(TEACHER_API_KEY_ENV) else None,
    )


def build_resources() -> dict:
    return {
        "storage": StorageResource(),
        "encoder": EncoderResource(),
        "teacher": build_teacher_resource(),
        "generator": GeneratorResource(),
    }


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=all_checks,
    jobs=[skim_pipeline_job, skim_core_job],
    sensors=[dataset_folder_sensor],
    resources=build_resources(),
    # each step in its own process, so model memory (and GPU memory) is freed when a step ends
    executor=dg.multiprocess_executor.configured(
        {"max_concurrent": 2,
         "tag_concurrency_limits": [{"key": k, "value": v, "limit": 1} for k, v in GPU_TAGS.items()]}
    ),
)
