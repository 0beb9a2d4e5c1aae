"""The code location: every asset, job, sensor and resource of skim_assets."""

import dagster as dg

from .assets.datasets import click_log_pairs, dataset_tables
from .assets.evaluation import retrieval_metrics
from .assets.simulation import simulated_clicks
from .assets.training import retriever_assets, train_pairs
from .jobs import skim_pipeline_job
from .resources import EncoderResource, StorageResource
from .sensors import dataset_folder_sensor

ASSETS = [dataset_tables, click_log_pairs, simulated_clicks, train_pairs, *retriever_assets, retrieval_metrics]


def build_resources() -> dict:
    return {"storage": StorageResource(), "encoder": EncoderResource()}


defs = dg.Definitions(
    assets=ASSETS,
    jobs=[skim_pipeline_job],
    sensors=[dataset_folder_sensor],
    resources=build_resources(),
    # each step in its own process, so model memory (and GPU memory) is freed when a step ends
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)
