"""Jobs over the asset graph: the whole pipeline, the demo under its profile, and the two refresh paths (cheap
tables on new click logs, models on the model refresh's cron)."""

from collections.abc import Collection, Sequence
from pathlib import Path

import dagster as dg
import yaml

from .lib.methods import METHODS, SIMULATED_PAIRS

# The whole graph for one dataset partition: every method of the comparison.
skim_pipeline_job = dg.define_asset_job(
    "skim_pipeline", selection=dg.AssetSelection.all(),
    description="Every asset for one dataset partition, from import to the comparison report.",
)

# Import and validate a dataset (its tables, click-log drops and the checks on them): what a new dataset or a
# changed input needs first, in seconds.
dataset_import_job = dg.define_asset_job(
    "dataset_import", selection=dg.AssetSelection.groups("datasets"),
    description="The dataset's canonical tables and click-log pairs, with their checks.",
)

# The generation ablations (UDAPDR-style and SKIM without metadata) each cost a LoRA run and a generation pass;
# the core job leaves them out: import, bias simulation, SKIM itself and the training-data baselines.
GENERATION_ABLATIONS = dg.AssetSelection.assets("lora_adapter_no_metadata", "synthetic_queries_udapdr").downstream() - \
    dg.AssetSelection.assets("retrieval_metrics", "comparison_report", "label_repair_report", "duckdb_catalogue",
                             "html_report")
# Metadata-augmented retrieval (Table 4) trains on texts four times as long, and the exposure sweep (Fig. 3) trains
# a head per window and method: both are left to the whole pipeline too.
FULL_PIPELINE_ONLY = dg.AssetSelection.assets(*(m.models for m in METHODS.values() if not m.core),
                                              "exposure_sweep_report", "slm_size_report")
CORE = dg.AssetSelection.all() - GENERATION_ABLATIONS - FULL_PIPELINE_ONLY
skim_core_job = dg.define_asset_job(
    "skim_core", selection=CORE,
    description="The pipeline without the generation ablations, metadata-augmented retrieval and the exposure "
                "sweep (what the `demo` job runs, under its own profile).",
)

# What a click-log drop changes without a model step: the drops' pairs, the training tables, and the mapping
# of the synthetic queries onto the new train queries (embedding caches and mapping candidates make this cost
# grow with the new rows only). These tables also refresh eagerly (automation conditions) when an upstream
# model changes. Models, generation and distillation follow the model refresh condition instead (`sensors.py`).
# The mappings' pairs, then every method's training pairs derived from the click log (`lib.methods`; not the
# simulated oracle and MAR pairs, nor the train pairs themselves).
CLICK_REFRESH_ASSETS = (
    "click_log_pairs", "train_pairs", "mapped_pairs", "mapped_pairs_no_metadata", "mapped_pairs_udapdr",
    *dict.fromkeys(m.pairs for m in METHODS.values() if m.pairs not in (*SIMULATED_PAIRS, "train_pairs")),
)
# A refresh renews what a dataset already has (a branch never run, e.g. an ablation, stays unrun): job -> the
# assets it runs even without an artifact (the click log's pairs follow the drop folder, which always exists).
REFRESH_ALWAYS = {"click_refresh": ("click_log_pairs",), "model_refresh": ()}
EAGER_TABLES = CLICK_REFRESH_ASSETS[1:]  # click_log_pairs itself follows files, which the click-log sensor watches
click_refresh_job = dg.define_asset_job(
    "click_refresh", selection=dg.AssetSelection.assets(*CLICK_REFRESH_ASSETS),
    description="New click-log drops -> pairs -> train pairs -> mapped and baseline pairs (no model step).",
)

# Everything the train pairs feed: teacher, distillation, generation, every model, and the evaluation.
MODEL_REFRESH = dg.AssetSelection.assets("train_pairs").downstream() - dg.AssetSelection.assets("train_pairs")
model_refresh_job = dg.define_asset_job(
    "model_refresh", selection=MODEL_REFRESH,
    description="Retrain from the current train pairs: demonstrations, LoRA, generation, mapping, every model, "
                "metrics.",
)


DEMO_PROFILE = Path(__file__).parent / "configs" / "demo.yaml"  # also `configs/demo.yaml` in a checkout


def demo_run_config(ops: Collection[str]) -> dict:
    """The demo's profile (`configs/demo.yaml`, which says why each setting) for the ops among `ops`."""
    profile = yaml.safe_load(DEMO_PROFILE.read_text())["ops"]
    return {"ops": {name: config for name, config in profile.items() if name in ops}}


def build_demo_jobs(assets: Sequence) -> list:
    """`skim demo`'s jobs: the core job (`demo`) and the whole pipeline (`demo_all_methods`) under the demo profile
    as their default run config, so the UI's launchpad starts from the profile `skim demo` runs. Every step runs
    in the run's own process, one after another: on the demo's 160 documents a process per step would cost ~50 s
    of its 10 minutes. `assets` are the code location's, which the selections resolve against (the profile names
    only ops a job has)."""
    jobs = []
    for name, selection, what in (("demo", CORE, "the core job (skim_core)"),
                                  ("demo_all_methods", dg.AssetSelection.all(), "the whole pipeline")):
        ops = {key.path[-1] for key in selection.resolve(assets)}
        jobs.append(dg.define_asset_job(
            name, selection=selection, config=demo_run_config(ops),
            executor_def=dg.in_process_executor,
            description=f"`skim demo`: {what} under the demo profile (minutes on 2 CPU cores), every step in the "
                        "run's process.",
        ))
    return jobs
