"""Jobs over the asset graph."""

import dagster as dg

from .partitions import dataset_partitions

# The whole graph for one dataset partition (what `skim demo` and the dataset sensor run).
skim_pipeline_job = dg.define_asset_job(
    "skim_pipeline", selection=dg.AssetSelection.all(), partitions_def=dataset_partitions,
    description="Every asset for one dataset partition, from import to evaluation.",
)
