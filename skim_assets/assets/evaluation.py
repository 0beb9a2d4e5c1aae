"""Evaluation: every retriever on the biased (click-log) and the unbiased (complete-label) test sets."""


import time

import dagster as dg
import polars as pl

from ..lib.catalogue import refresh_catalogue
from ..lib.datasets import read_spec
from ..lib.dual_encoder import rank_documents
from ..lib.baselines import click_propensities
from ..lib.metrics import evaluate_rankings, metrics_table_markdown
from ..lib.plots import bar_plot, markdown_image
from ..partitions import dataset_partitions
from ..resources import EncoderResource, StorageResource
from .training import RETRIEVER_FOLDER, RETRIEVERS

EVAL_KS = (1, 5, 10, 25, 100)
TABLE_COLUMNS = ["model", "test_set", "P@1", "P@5", "R@10", "R@25", "R@100", "nDCG@10", "PSP@5", "queries"]
TEST_SETS = {"biased": "biased_test_qrels", "unbiased": "unbiased_test_qrels"}


def evaluate_models(models: dict, storage: StorageResource, encoder: EncoderResource, dataset: str, log) -> pl.DataFrame:
    """Rank the test queries with each model and score both test sets; `models` maps name -> encoder path or None."""
    spec = read_spec(storage.inputs(dataset))
    documents = storage.read_table("documents", dataset)
    test_sets = {name: storage.read_table(asset, dataset) for name, asset in TEST_SETS.items()}
    test_query_ids = pl.concat([t.select("query_id") for t in test_sets.values()]).unique()
    queries = storage.read_table("queries", dataset).join(test_query_ids, on="query_id").sort("query_id")
    propensities = click_propensities(documents, storage.read_table("train_pairs", dataset),
                                      spec.propensity_a, spec.propensity_b)
    rows, rankings = [], []
    for model_name, path in models.items():
        started = time.monotonic()
        ranked = rank_documents(encoder.load(path), queries, documents, max(EVAL_KS),
                                query_max_length=encoder.query_max_length, doc_max_length=encoder.doc_max_length)
        rankings.append(ranked.with_columns(pl.lit(model_name).alias("model")))
        for test_name, qrels in test_sets.items():
            metrics = evaluate_rankings(ranked, qrels, EVAL_KS, propensities)
            rows.append({"model": model_name, "test_set": test_name, **metrics})
        log(f"evaluated {model_name} in {time.monotonic() - started:.1f}s")
    return pl.DataFrame(rows), pl.concat(rankings)


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="evaluation",
    deps=[*RETRIEVERS, *TEST_SETS.values(), "train_pairs"],
)
def retrieval_metrics(context: dg.AssetExecutionContext, storage: StorageResource, encoder: EncoderResource):
    """P@k, R@k, nDCG@k and PSP@k (Jain propensities from the click pairs) of the zero-shot encoder and every
    trained retriever, on the biased and the unbiased test sets. Queries without labels are excluded."""
    dataset = context.partition_key
    models = {"zero_shot": None} | {
        name: str(storage.artifact_dir(name, dataset) / RETRIEVER_FOLDER) for name in RETRIEVERS
    }
    table, rankings = evaluate_models(models, storage, encoder, dataset, context.log.info)
    path = storage.write_table("retrieval_metrics", dataset, table)
    storage.write_table("retrieval_metrics", dataset, rankings, "rankings")
    markdown = metrics_table_markdown(table.to_dicts(), TABLE_COLUMNS)
    context.log.info(f"retrieval metrics for {dataset}:\n{markdown}")
    unbiased = table.filter(pl.col("test_set") == "unbiased")
    chart = bar_plot(unbiased["model"].to_list(), {m: unbiased[m].to_list() for m in ("R@10", "R@100")},
                     f"{dataset}: unbiased test", "recall", storage.artifact_dir("retrieval_metrics", dataset) / "chart.png")
    try:
        views = refresh_catalogue(storage.root_path)
    except Exception as error:  # a user holding the DuckDB file open must not fail the evaluation
        context.log.warning(f"DuckDB catalogue not refreshed: {error}")
        views = []
    return dg.MaterializeResult(
        metadata={
            "metrics": dg.MetadataValue.md(markdown),
            "chart": dg.MetadataValue.md(markdown_image(chart, "unbiased recall")),
            "path": dg.MetadataValue.path(str(path)),
            "catalogue_views": dg.MetadataValue.int(len(views)),
            **{f"unbiased_R@100/{r['model']}": dg.MetadataValue.float(round(r["R@100"], 4)) for r in unbiased.to_dicts()},
        }
    )
