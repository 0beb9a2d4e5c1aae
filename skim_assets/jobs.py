"""Jobs over the asset graph: the whole pipeline, and the two refresh paths (cheap tables on new click logs,
models on a schedule)."""

import dagster as dg

from .partitions import dataset_partitions

# The whole graph for one dataset partition: every method of the comparison.
skim_pipeline_job = dg.define_asset_job(
    "skim_pipeline", selection=dg.AssetSelection.all(), partitions_def=dataset_partitions,
    description="Every asset for one dataset partition, from import to the comparison report.",
)

# Import and validate a dataset (its tables, click-log drops and the checks on them): what a new dataset or a
# changed input needs first, in seconds.
dataset_import_job = dg.define_asset_job(
    "dataset_import", selection=dg.AssetSelection.groups("datasets"), partitions_def=dataset_partitions,
    description="The dataset's canonical tables and click-log pairs, with their checks.",
)

# The generation ablations (UDAPDR-style and SKIM without metadata) each cost a LoRA run and a generation pass;
# the core job leaves them out: import, bias simulation, SKIM itself and the training-data baselines.
GENERATION_ABLATIONS = dg.AssetSelection.assets("lora_adapter_no_metadata", "synthetic_queries_udapdr").downstream() - \
    dg.AssetSelection.assets("retrieval_metrics", "comparison_report", "label_repair_report", "duckdb_catalogue")
# Metadata-augmented retrieval (Table 4) trains on texts four times as long, and the exposure sweep (Fig. 3) trains
# a head per window and method: both are left to the whole pipeline too.
FULL_PIPELINE_ONLY = dg.AssetSelection.assets("ra_retriever", "ra_ova_head", "skim_ra_retriever", "skim_ra_ova_head",
                                              "exposure_sweep_report", "slm_size_report")
skim_core_job = dg.define_asset_job(
    "skim_core", selection=dg.AssetSelection.all() - GENERATION_ABLATIONS - FULL_PIPELINE_ONLY,
    partitions_def=dataset_partitions,
    description="The pipeline without the generation ablations, metadata-augmented retrieval and the exposure "
                "sweep (what `skim demo` runs).",
)

# What a click-log drop changes without a model step: the drops' pairs, the training tables, and the mapping
# of the synthetic queries onto the new train queries (embedding caches and mapping candidates make this cost
# grow with the new rows only). These tables also refresh eagerly (automation conditions) when an upstream
# model changes. Models, generation and distillation are on the model-refresh schedule instead.
CLICK_REFRESH_ASSETS = (
    "click_log_pairs", "train_pairs",
    "mapped_pairs", "augmented_train_pairs",
    "mapped_pairs_no_metadata", "augmented_train_pairs_no_metadata",
    "mapped_pairs_udapdr", "augmented_train_pairs_udapdr",
    "ips_train_pairs", "ips_position_train_pairs", "lever_train_pairs", "lever_ips_train_pairs",
    "gandalf_train_pairs",
)
EAGER_TABLES = CLICK_REFRESH_ASSETS[1:]  # click_log_pairs itself follows files, which the click-log sensor watches
click_refresh_job = dg.define_asset_job(
    "click_refresh", selection=dg.AssetSelection.assets(*CLICK_REFRESH_ASSETS), partitions_def=dataset_partitions,
    description="New click-log drops -> pairs -> train pairs -> mapped and baseline pairs (no model step).",
)

# Everything the train pairs feed: teacher, distillation, generation, every model, and the evaluation.
MODEL_REFRESH = dg.AssetSelection.assets("train_pairs").downstream() - dg.AssetSelection.assets("train_pairs")
model_refresh_job = dg.define_asset_job(
    "model_refresh", selection=MODEL_REFRESH, partitions_def=dataset_partitions,
    description="Retrain from the current train pairs: demonstrations, LoRA, generation, mapping, every model, metrics.",
)
