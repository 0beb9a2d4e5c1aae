"""The scale profile (configs/scale_cpu.yaml) end to end on a generated 20,000-document catalogue: every asset of
`skim_core`, through the `skim` command's own path (import, then a run of the instance), in a few minutes.

What a cluster runs on GPUs is sampled smaller here than in the profile (a tiny random student, 48 documents of
generation, 1,000 pairs per dual encoder, 5 epochs per one-vs-all head), so the CPU stages at 20K documents are
what this test exercises. A query-side fine-tuned dual encoder learns little of opaque titles in one epoch (RESULTS.md),
so the quality bar is the one-vs-all head's."""

import json
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from skim_assets.cli import load_run_config, main, missing_assets
from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset

N_DOCUMENTS = 20_000
NAME = f"catalogue-{N_DOCUMENTS}"
# `skim materialize`'s own path (materialize_dataset, a run of the instance), its steps in one process
RUN_IN_PROCESS = """
import json, sys
from skim_assets.cli import _instance, _use_root, materialize_dataset
root, name, config = sys.argv[1:4]
_use_root(root)
sys.exit(0 if materialize_dataset(name, _instance(), json.load(open(config)), "skim_core", in_process=True) else 1)
"""


@pytest.mark.scale
@pytest.mark.slow
def test_scale_profile_runs_every_core_asset_on_a_20k_catalogue(cli_env, tiny_causal_lm):
    root = cli_env
    folder = root / "inputs" / NAME
    counts = write_demo_dataset(folder, DemoWorldConfig(n_documents=N_DOCUMENTS, world="catalogue", test_fraction=0.5))
    assert counts["documents"] == N_DOCUMENTS
    assert main(["--root", str(root), "import", NAME, str(folder)]) == 0

    run_config = load_run_config("configs/scale_cpu.yaml")
    ops = run_config["ops"]
    ops["lora_adapter"]["config"] |= {"epochs": 1, "min_steps": 0, "micro_batch_size": 8}
    ops["teacher_demonstrations"]["config"]["max_documents"] = 64
    # the random tiny student writes ungrounded text: keep it unfiltered so the mapping has rows to map
    ops["synthetic_queries"]["config"] |= {"max_documents": 48, "max_new_tokens": 12, "quality_filter": False}
    for name, op in ops.items():
        if name.endswith("_models"):  # the profile's anchors: one dict shared by every method, changed once
            op["config"] = {"dual_encoder": op["config"]["dual_encoder"] | {"max_pairs": 1000},
                            "ova_head": op["config"]["ova_head"] | {"epochs": 5}}
        if name == "tau_sweep_report":
            op["config"] = op["config"] | {"epochs": 5}
    run_config["resources"] = {"generator": {"config": {"base_model_path": str(tiny_causal_lm), "device": "cpu",
                                                        "backend": "transformers"}}}
    # the run in a process of its own, as `skim` runs it: the code location's resources read the storage root from
    # the environment when it is first imported, which this test process did long before, for other roots
    config_file = root / "scale_run_config.json"
    config_file.write_text(json.dumps(run_config))
    run = subprocess.run([sys.executable, "-c", RUN_IN_PROCESS, str(root), NAME, str(config_file)],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert missing_assets(root, NAME, "skim_core") == []  # every asset of the job has its artifact
    instance = dg.DagsterInstance.get()

    # the checks ran and none of the blocking ones failed
    run = instance.get_runs(limit=1)[0]
    evaluations = [e.event_specific_data
                   for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                   if e.dagster_event is not None for e in [e.dagster_event]]
    assert evaluations and not [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]

    # the samples are stated where they were taken
    def metadata(asset):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return event.asset_materialization.metadata

    assert metadata("oracle_models")["training_pairs"].value == 1000
    assert metadata("oracle_models")["pairs_available"].value > 10_000
    assert "frozen" in metadata("oracle_models")["document_tower"].value
    assert metadata("click_train_pairs")["exposure_search"].value.startswith("exact")

    # quality: complete labels teach what clicks cannot, for both base models, on the unbiased test set
    metrics = (pl.read_parquet(root / "retrieval_metrics" / NAME / "data.parquet")
               .filter(pl.col("test_set") == "unbiased"))
    recall = dict(zip(metrics["model"], metrics["R@100"]))
    assert recall["oracle_ova_head"] > recall["base_ova_head"] + 0.05
    assert metrics["queries"].max() > 1000  # every test query scored against all documents
    repair = pl.read_parquet(root / "label_repair_report" / NAME / "data.parquet")
    assert "skim" in repair["method"].to_list()
    # SKIM's recall is also judged on the documents its (sampled) generation wrote for
    assert 0 < metadata("label_repair_report")["skim_documents_written_for"].value <= 48
    assert pl.read_parquet(root / "documents" / NAME / "data.parquet").height == N_DOCUMENTS
