"""Asset checks on small hand-written artifacts: a passing and a failing case per check, each called directly
with what the IO manager hands it (the artifact's `Tables`, or a model folder's path), and one partitioned
in-process run showing the IO manager loading the run's partition and blocking at work."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

from skim_assets.assets.datasets import documents_check, queries_check, relevance_labels_check
from skim_assets.assets.distillation import lora_weight_checks, teacher_demonstrations_check
from skim_assets.assets.evaluation import metric_range_check, skim_beats_base_check
from skim_assets.assets.generation import synthetic_queries_checks
from skim_assets.assets.mapping import mapped_pairs_checks
from skim_assets.assets.training import training_checks
from skim_assets.lib.methods import METHODS
from skim_assets.partitions import dataset_partitions
from skim_assets.resources import StorageResource, Tables, storage_resources

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
DATASET = "toy"


@pytest.fixture
def storage(tmp_path) -> StorageResource:
    return StorageResource(root=str(tmp_path))


def run(check, storage: StorageResource) -> dg.AssetCheckResult:
    """The check called with its inputs as the IO manager loads them for DATASET: a table asset's `Tables`, a
    folder asset's path."""
    inputs = {}
    for name, key in check.keys_by_input_name.items():
        folder = storage.artifact_dir(key.path[-1], DATASET)
        inputs[name] = folder if check.op.ins[name].dagster_type.typing_type is Path else Tables(folder=folder)
    result = check(dg.build_asset_check_context(), **inputs)
    assert isinstance(result, dg.AssetCheckResult)
    return result


def spec_of(check) -> dg.AssetCheckSpec:
    (spec,) = check.check_specs
    return spec


def find(group, asset: str, name: str | None = None):
    return next(c for c in group if spec_of(c).asset_key.to_user_string() == asset and name in (None, spec_of(c).name))


def meta(result: dg.AssetCheckResult, key: str):
    return result.metadata[key].value


def write(storage, asset, frame, table="data", dataset=DATASET):
    storage.write_table(asset, dataset, pl.DataFrame(frame) if isinstance(frame, dict) else frame, table)


def documents(n=4, **overrides):
    frame = {"doc_id": [f"d{i}" for i in range(n)], "title": [f"title {i}" for i in range(n)],
             "metadata": [f"meta {i}" for i in range(n)]}
    return pl.DataFrame(frame | overrides)


def queries(**overrides):
    frame = {"query_id": ["q0", "q1", "q2"], "text": ["alpha", "beta", "gamma"], "split": ["train", "train", "test"]}
    return pl.DataFrame(frame | overrides)


def qrels(**overrides):
    frame = {"query_id": ["q0", "q1", "q2"], "doc_id": ["d0", "d1", "d2"], "relevance": [1.0, 1.0, 1.0]}
    return pl.DataFrame(frame | overrides)


@pytest.fixture
def dataset_tables(storage):
    write(storage, "documents", documents())
    write(storage, "queries", queries())
    write(storage, "relevance_labels", qrels())
    return storage


# ----------------------------------------------------------------------------------------------- dataset tables


def test_dataset_table_checks_pass_on_canonical_tables(dataset_tables):
    for check in (documents_check, queries_check, relevance_labels_check):
        result = run(check, dataset_tables)
        assert result.passed, result.description
        assert meta(result, "missing_columns") == [] and meta(result, "extra_columns") == []
    assert meta(run(queries_check, dataset_tables), "test_queries") == 1


def test_documents_check_fails_on_duplicate_ids_and_empty_titles(storage):
    write(storage, "documents", documents(doc_id=["d0", "d0", "d2", "d3"], title=["a", " ", "c", None]))
    result = run(documents_check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "duplicate_doc_ids") == 1
    assert meta(result, "empty_titles") == 2
    assert "duplicate doc ids" in result.description


def test_documents_check_fails_on_non_canonical_columns(storage):
    write(storage, "documents", documents().drop("metadata").with_columns(pl.lit(1).alias("score")))
    result = run(documents_check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "missing_columns") == ["metadata"]
    assert meta(result, "extra_columns") == ["score"]


def test_queries_check_fails_on_wrong_dtype_and_on_empty_text(storage):
    write(storage, "queries", queries(split=[1, 1, 2]))
    result = run(queries_check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "wrong_dtypes") == {"split": "Int64"}

    write(storage, "queries", queries(text=["alpha", "", "gamma"]))
    result = run(queries_check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "empty_texts") == 1 and meta(result, "duplicate_query_ids") == 0


def test_queries_check_accepts_query_metadata_and_no_other_extra_column(storage):
    write(storage, "queries", queries().with_columns(metadata=pl.lit("article text")))
    assert run(queries_check, storage).passed
    write(storage, "queries", queries().with_columns(notes=pl.lit("x")))
    result = run(queries_check, storage)
    assert not result.passed and meta(result, "extra_columns") == ["notes"]


def test_relevance_labels_check_fails_on_unknown_ids(dataset_tables):
    write(dataset_tables, "relevance_labels", qrels(query_id=["q0", "q1", "q9"], doc_id=["d0", "d7", "d7"]))
    result = run(relevance_labels_check, dataset_tables)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "unknown_query_ids") == 1 and meta(result, "unknown_doc_ids") == 1
    assert meta(result, "unknown_doc_id_examples") == ["d7"]


def test_dataset_table_check_reports_a_missing_table_as_error(storage):
    write(storage, "relevance_labels", qrels())  # no documents / queries tables
    result = run(relevance_labels_check, storage)
    assert not result.passed and result.severity == ERROR
    assert "no table 'data'" in result.description and "queries" in result.description


# ----------------------------------------------------------------------------------------------- teacher, generation


def demonstrations(doc_ids):
    return pl.DataFrame({"doc_id": doc_ids, "query": [f"q {i}" for i in range(len(doc_ids))],
                         "rank": list(range(1, len(doc_ids) + 1))}, schema={"doc_id": pl.String, "query": pl.String,
                                                                            "rank": pl.Int32})


def raw_outputs(doc_ids, texts=None):
    return pl.DataFrame({"doc_id": doc_ids, "text": texts or ["1. a query"] * len(doc_ids),
                         "error": [None] * len(doc_ids)},
                        schema={"doc_id": pl.String, "text": pl.String, "error": pl.String})


def test_query_quality_judges_what_the_writer_judged_per_source_it_was_asked_about(storage):
    """The verdicts come from the writer's `judged` table (against its own sources: documents, or queries in the
    documents_for_queries direction); distinct queries per source count every source in `raw`."""
    from skim_assets.assets.distillation import teacher_query_quality_check

    write(storage, "teacher_demonstrations", raw_outputs(["q0", "q1", "q2", "q3"]), "raw")
    judged = pl.DataFrame({"doc_id": ["q0", "q0", "q1", "q2"], "query": ["made in lyon", "lavender", "A: x", "tea"],
                           "rank": [1, 2, 1, 1], "grounded": [True, False, False, True],
                           "junk": [None, "one_word", "prefix", "one_word"]})
    write(storage, "teacher_demonstrations", judged.select("doc_id", "query", "rank"))
    write(storage, "teacher_demonstrations", judged, "judged")
    result = run(teacher_query_quality_check, storage)
    assert result.passed is False and result.severity == WARN
    assert meta(result, "grounded_share") == 0.5 and meta(result, "junk_share") == 0.75
    assert meta(result, "distinct_queries_per_document") == 1.0  # 4 distinct queries over 4 sources asked


@pytest.mark.parametrize("parsed_docs, passed, severity, rate", [
    (["d0", "d0", "d1", "d2", "d3"], True, ERROR, 1.0),
    (["d0", "d1", "d2"], False, WARN, 0.75),
    (["d0"], False, ERROR, 0.25),
])
def test_teacher_parse_rate(storage, parsed_docs, passed, severity, rate):
    write(storage, "teacher_demonstrations", raw_outputs(["d0", "d1", "d2", "d3"]), "raw")
    write(storage, "teacher_demonstrations", demonstrations(parsed_docs))
    result = run(teacher_demonstrations_check, storage)
    assert result.passed is passed
    if not passed:
        assert result.severity == severity
    assert meta(result, "parse_rate") == rate
    assert meta(result, "documents") == 4
    assert meta(result, "parsed_documents") == len(set(parsed_docs))


def synthetic(query_texts, doc_ids=None):
    doc_ids = doc_ids or [f"d{i % 4}" for i in range(len(query_texts))]
    return pl.DataFrame({"doc_id": doc_ids, "query": query_texts, "rank": [1] * len(query_texts)},
                        schema={"doc_id": pl.String, "query": pl.String, "rank": pl.Int32})


def synthetic_check(asset="synthetic_queries"):
    return find(synthetic_queries_checks, asset)


def test_synthetic_queries_pass_with_distinct_queries(storage):
    write(storage, "synthetic_queries", synthetic(["red shoes", "blue hat", "green scarf", "tall boots"]))
    write(storage, "synthetic_queries", raw_outputs(["d0", "d1", "d2", "d3"]), "raw")
    result = run(synthetic_check(), storage)
    assert result.passed
    assert meta(result, "duplicate_rate") == 0.0 and meta(result, "empty_output_rate") == 0.0
    assert meta(result, "queries") == 4


def test_synthetic_queries_warn_on_a_collapsed_generator_and_empty_outputs(storage):
    docs = [f"d{i}" for i in range(8)]
    texts = ["Red Shoes", "red  shoes", "red shoes ", "RED SHOES", "red shoes", "red shoes", "blue hat", "tall boots"]
    write(storage, "synthetic_queries", synthetic(texts, docs))
    write(storage, "synthetic_queries", raw_outputs(docs, ["1. x", "", "  ", "", "1. y", "1. z", "1. u", "1. v"]),
          "raw")
    result = run(synthetic_check(), storage)
    assert not result.passed and result.severity == WARN
    assert meta(result, "duplicate_rate") == 0.0  # no document repeats itself
    assert meta(result, "top_query_document_share") == 0.75  # but one text was written for 6 of the 8
    assert meta(result, "empty_output_rate") == 0.375
    assert "one query written for 75.0% > 20% of documents" in result.description
    assert "empty-output rate" in result.description


def test_synthetic_queries_shared_by_a_few_documents_pass_and_repeats_within_one_warn(storage):
    """Documents of one maker are rightly asked for with one query (the demo: "marlowe naturals" for 7 of 160);
    a document whose outputs repeat each other is redundancy."""
    docs = [f"d{i}" for i in range(10)]
    shared = pl.DataFrame({"doc_id": docs, "query": ["acme labs", "acme labs", *[f"query {i}" for i in range(2, 10)]],
                           "rank": [1] * 10}, schema={"doc_id": pl.String, "query": pl.String, "rank": pl.Int32})
    write(storage, "synthetic_queries", shared)
    write(storage, "synthetic_queries", raw_outputs(docs), "raw")
    assert run(synthetic_check(), storage).passed
    repeated = pl.DataFrame({"doc_id": ["d0"] * 4 + ["d1"] * 4, "query": ["a", "A ", "b", "c", "d", "e", "f", "f"],
                             "rank": [1] * 8}, schema={"doc_id": pl.String, "query": pl.String, "rank": pl.Int32})
    write(storage, "synthetic_queries", repeated)
    write(storage, "synthetic_queries", raw_outputs(["d0", "d1"]), "raw")
    result = run(synthetic_check(), storage)
    assert not result.passed and meta(result, "duplicate_rate") == 0.25
    assert "duplicate rate within documents 25.0% > 20%" in result.description


def test_synthetic_queries_error_when_nothing_parsed(storage):
    write(storage, "synthetic_queries_udapdr", synthetic([]))
    write(storage, "synthetic_queries_udapdr", raw_outputs(["d0", "d1"], ["", "???"]), "raw")
    result = run(synthetic_check("synthetic_queries_udapdr"), storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "queries") == 0 and meta(result, "generations") == 2


# ----------------------------------------------------------------------------------------------- mapped pairs


def pairs(weights, doc_ids=None):
    doc_ids = doc_ids or [f"d{i % 4}" for i in range(len(weights))]
    return pl.DataFrame({"query_id": ["q0"] * len(weights), "doc_id": doc_ids, "weight": weights,
                         "source": ["skim"] * len(weights)},
                        schema={"query_id": pl.String, "doc_id": pl.String, "weight": pl.Float64, "source": pl.String})


def mapped_check(asset="mapped_pairs"):
    return find(mapped_pairs_checks, asset)


def write_mapped(storage, asset, weights, tau=0.8, doc_ids=None):
    """A mapping's artifact: its pairs, the settings it ran with and the documents its training view carries."""
    from skim_assets.assets.common import settings_table
    from skim_assets.lib.mapping import MappingSettings

    write(storage, asset, pairs(weights, doc_ids))
    write(storage, asset, settings_table(MappingSettings(tau=tau)), table="settings")
    write(storage, asset, documents(n=4), table="documents")


def test_mapped_pairs_pass_within_the_tau_their_run_used(storage):
    write_mapped(storage, "mapped_pairs", [0.75, 0.9, 1.0], tau=0.7, doc_ids=["d0", "d1", "d1"])
    result = run(mapped_check(), storage)
    assert result.passed, result.description
    assert meta(result, "tau") == 0.7
    assert meta(result, "document_coverage") == 0.5 and meta(result, "covered_documents") == 2
    assert meta(result, "min_weight") == 0.75 and meta(result, "weights_outside_range") == 0


def test_mapped_pairs_fail_below_their_tau_and_above_one(storage):
    write_mapped(storage, "mapped_pairs", [0.79, 0.9, 1.01, float("nan")], tau=0.8)
    result = run(mapped_check(), storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "tau") == 0.8
    assert meta(result, "weights_outside_range") == 3
    write_mapped(storage, "mapped_pairs", [0.72, 0.9], tau=0.7)  # the same weights pass a run at 0.7
    assert run(mapped_check(), storage).passed


def test_mapped_pairs_without_stored_settings_are_an_error(storage):
    write(storage, "mapped_pairs", pairs([0.9]))
    write(storage, "mapped_pairs", documents(n=4), table="documents")
    result = run(mapped_check(), storage)
    assert not result.passed and result.severity == ERROR
    assert "settings" in result.description and "materialize it again" in result.description


def test_mapped_pairs_warn_when_no_pair_was_mapped(storage):
    write_mapped(storage, "mapped_pairs_no_metadata", [])
    result = run(mapped_check("mapped_pairs_no_metadata"), storage)
    assert not result.passed and result.severity == WARN
    assert meta(result, "pairs") == 0 and meta(result, "document_coverage") == 0.0


# ----------------------------------------------------------------------------------------------- model weights


def retriever_file(storage, name="skim_models"):
    folder = storage.artifact_dir(name, DATASET) / "encoder"
    folder.mkdir(parents=True)
    return folder / "model.safetensors"


def test_retriever_weights_finite_pass(storage):
    save_file({"embeddings.weight": np.ones((3, 4), dtype=np.float32), "position_ids": np.arange(4)},
              str(retriever_file(storage)))
    result = run(find(training_checks, "skim_models", "weights_finite"), storage)
    assert result.passed
    assert meta(result, "tensors") == 2 and meta(result, "parameters") == 16
    assert meta(result, "nonfinite_values") == 0


def test_retriever_weights_with_nan_fail(storage):
    weight = np.ones((3, 4), dtype=np.float32)
    weight[1, 2] = np.nan
    weight[0, 0] = np.inf
    save_file({"embeddings.weight": weight, "bias": np.zeros(4, dtype=np.float32)}, str(retriever_file(storage)))
    result = run(find(training_checks, "skim_models", "weights_finite"), storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "nonfinite_values") == 2
    assert meta(result, "nonfinite_tensor_examples") == ["embeddings.weight"]


def test_retriever_weights_missing_file_fail(storage):
    storage.artifact_dir("base_models", DATASET).mkdir(parents=True)
    result = run(find(training_checks, "base_models", "weights_finite"), storage)
    assert not result.passed and result.severity == ERROR
    assert "no weights file" in result.description


def lora_file(storage):
    folder = storage.artifact_dir("lora_adapter", DATASET) / "adapter"
    folder.mkdir(parents=True)
    return folder / "adapter_model.safetensors"


def test_lora_adapter_bf16_weights_pass(storage):
    save_torch_file({"lora_A.weight": torch.ones(2, 8, dtype=torch.bfloat16)}, str(lora_file(storage)))
    result = run(find(lora_weight_checks, "lora_adapter"), storage)
    assert result.passed and meta(result, "parameters") == 16


def test_lora_adapter_inf_weights_fail(storage):
    tensor = torch.ones(2, 8, dtype=torch.bfloat16)
    tensor[1, 1] = float("-inf")
    save_torch_file({"lora_A.weight": tensor, "lora_B.weight": torch.zeros(8, 2)}, str(lora_file(storage)))
    result = run(find(lora_weight_checks, "lora_adapter"), storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "nonfinite_values") == 1 and meta(result, "nonfinite_tensors") == 1


def ova_file(storage, name="base_models"):
    folder = storage.artifact_dir(name, DATASET)
    folder.mkdir(parents=True)
    return folder / "head.npz"


def test_ova_head_finite_pass(storage):
    np.savez(ova_file(storage), weights=np.ones((4, 3), dtype=np.float32), biases=np.zeros(4, dtype=np.float32),
             doc_ids=np.array(["d0", "d1", "d2", "d3"]))
    result = run(find(training_checks, "base_models", "head_weights_finite"), storage)
    assert result.passed
    assert meta(result, "tensors") == 2 and meta(result, "parameters") == 16  # doc_ids (strings) skipped


def test_ova_head_nonfinite_or_incomplete_fail(storage):
    path = ova_file(storage)
    np.savez(path, weights=np.full((4, 3), np.nan, dtype=np.float32), biases=np.zeros(4, dtype=np.float32))
    check = find(training_checks, "base_models", "head_weights_finite")
    result = run(check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "nonfinite_values") == 12

    np.savez(path, weights=np.ones((4, 3), dtype=np.float32))
    result = run(check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "missing_tensors") == ["biases"]


# ----------------------------------------------------------------------------------------------- retrieval metrics


def metrics(skim_r100=0.6, base_r100=0.5, **overrides):
    rows = [
        {"model": model, "method": model.removesuffix("_retriever"), "base_model": "dual_encoder", "test_set": test_set,
         "P@1": 0.5, "P@5": 0.3, "R@10": 0.4, "R@100": r100, "nDCG@10": 0.45, "PSP@5": 0.2, "queries": 10}
        for model, r100 in (("skim_retriever", skim_r100), ("base_retriever", base_r100))
        for test_set in ("biased", "unbiased")
    ]
    return pl.DataFrame(rows).with_columns(**{k: pl.lit(v) for k, v in overrides.items()})


def test_metrics_in_unit_interval_pass(storage):
    write(storage, "retrieval_metrics", metrics())
    result = run(metric_range_check, storage)
    assert result.passed
    assert "queries" not in meta(result, "metric_columns")
    assert meta(result, "values_outside_0_1") == 0


def test_metrics_outside_unit_interval_fail(storage):
    frame = metrics().with_columns(
        pl.when(pl.col("test_set") == "biased").then(1.2).otherwise(pl.col("P@1")).alias("P@1"),
        pl.lit(float("nan")).alias("nDCG@10"))
    write(storage, "retrieval_metrics", frame)
    result = run(metric_range_check, storage)
    assert not result.passed and result.severity == ERROR
    assert meta(result, "bad_columns") == {"P@1": 2, "nDCG@10": 4}


def test_metrics_one_up_to_float_rounding_pass(storage):
    # PSP@k of a perfect ranking is a ratio of equal means: 1.0000000000000002 must not fail the run
    write(storage, "retrieval_metrics", metrics().with_columns(pl.lit(1.0000000000000002).alias("P@1")))
    assert run(metric_range_check, storage).passed


def test_skim_beats_base_passes(storage):
    write(storage, "retrieval_metrics", metrics(skim_r100=0.62, base_r100=0.5))
    result = run(skim_beats_base_check, storage)
    assert result.passed
    assert meta(result, "skim_minus_base") == 0.12


def test_skim_not_beating_base_warns(storage):
    write(storage, "retrieval_metrics", metrics(skim_r100=0.5, base_r100=0.5))
    result = run(skim_beats_base_check, storage)
    assert not result.passed and result.severity == WARN
    assert meta(result, "skim_retriever") == 0.5 and meta(result, "base_retriever") == 0.5
    assert spec_of(skim_beats_base_check).blocking is False


# ----------------------------------------------------------------------------------------------- partitions, wiring


def test_an_unreadable_artifact_is_an_error_verdict(storage):
    path = storage.table_path("documents", DATASET)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    result = run(documents_check, storage)
    assert not result.passed and result.severity == ERROR
    assert "unreadable" in result.description


def test_partitioned_run_checks_its_partition_and_a_failing_blocking_check_skips_downstream(storage):
    write(storage, "teacher_demonstrations", raw_outputs(["d0", "d1"]), "raw", dataset="good")
    write(storage, "teacher_demonstrations", demonstrations(["d0", "d1"]), dataset="good")
    write(storage, "teacher_demonstrations", raw_outputs(["d0", "d1"]), "raw", dataset="bad")
    write(storage, "teacher_demonstrations", demonstrations([]), dataset="bad")

    @dg.asset(name="teacher_demonstrations", partitions_def=dataset_partitions)
    def stub() -> None:  # the tables are already on disk
        pass

    @dg.asset(partitions_def=dataset_partitions, deps=["teacher_demonstrations"])
    def downstream() -> None:
        pass

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(dataset_partitions.name, ["good", "bad"])
    outcomes = {}
    for dataset in ("good", "bad"):
        # the check's input is the artifact, loaded by the IO manager for the run's partition
        result = dg.materialize([stub, downstream, teacher_demonstrations_check], partition_key=dataset,
                                instance=instance, resources=storage_resources(storage.root),
                                raise_on_error=False)
        (evaluation,) = result.get_asset_check_evaluations()
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        outcomes[dataset] = (evaluation.passed, evaluation.metadata["dataset"].value, "downstream" in materialized)
    assert outcomes == {"good": (True, "good", True), "bad": (False, "bad", False)}


def test_every_model_asset_has_a_blocking_weights_check_and_all_checks_load():
    from skim_assets.definitions import ASSETS, all_checks, build_resources

    specs = [spec_of(c) for c in all_checks]
    weight_checked = {s.asset_key.to_user_string() for s in specs if s.name == "weights_finite" and s.blocking}
    head_checked = {s.asset_key.to_user_string() for s in specs if s.name == "head_weights_finite" and s.blocking}
    models = {method.models for method in METHODS.values()}
    assert models | {"lora_adapter", "lora_adapter_no_metadata"} <= weight_checked and models <= head_checked
    assert all(s.partitions_def == dataset_partitions for s in specs)
    blocking = {s.key.to_user_string() for s in specs if s.blocking}
    assert {"documents:documents_valid", "teacher_demonstrations:parse_rate", "mapped_pairs:weights_within_tau",
            "skim_models:weights_finite", "skim_models:head_weights_finite",
            "retrieval_metrics:metrics_in_unit_interval"} <= blocking
    assert "retrieval_metrics:skim_beats_base_unbiased_r100" not in blocking
    defs = dg.Definitions(assets=ASSETS, asset_checks=all_checks, resources=build_resources())
    assert len(defs.resolve_asset_graph().asset_check_keys) == len(all_checks)
