"""Jobs over the asset graph."""

import dagster as dg

from .partitions import dataset_partitions

# The whole graph for one dataset partition: every method of the comparison.
skim_pipeline_job = dg.define_asset_job(
    "skim_pipeline", selection=dg.AssetSelection.all(), partitions_def=dataset_partitions,
    description="Every asset for one dataset partition, from import to the comparison report.",
)

# The generation ablations (UDAPDR-style and SKIM without metadata) each cost a LoRA run and a generation pass;
# the core job leaves them out: import, bias simulation, SKIM itself and the training-data baselines.
GENERATION_ABLATIONS = dg.AssetSelection.assets("lora_adapter_no_metadata", "synthetic_queries_udapdr").downstream() - \
    dg.AssetSelection.assets("retrieval_metrics", "comparison_report")
skim_core_job = dg.define_asset_job(
    "skim_core", selection=dg.AssetSelection.all() - GENERATION_ABLATIONS, partitions_def=dataset_partitions,
    description="The pipeline without the generation ablations (what `skim demo` runs).",
)
