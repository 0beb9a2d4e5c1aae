"""Datasets: canonical tables imported from a registered dataset folder, and click-log drops."""


import time

import dagster as dg

from ..lib.clicklogs import aggregate_click_logs, click_log_files
from ..lib.datasets import CLICKS_FOLDER, TABLE_ASSETS, import_tables, read_spec
from ..partitions import dataset_partitions
from ..resources import StorageResource
from .common import table_metadata

DATASET_TABLES = TABLE_ASSETS


@dg.multi_asset(
    specs=[
        dg.AssetSpec("documents", description="doc_id, title (short text the retriever sees), metadata (long text)."),
        dg.AssetSpec("queries", description="query_id, text, split ('train' / 'test')."),
        dg.AssetSpec("relevance_labels", description="All known labels: query_id, doc_id, relevance."),
    ],
    partitions_def=dataset_partitions,
    group_name="datasets",
    can_subset=False,
)
def dataset_tables(context: dg.AssetExecutionContext, storage: StorageResource):
    """Import the registered dataset (`<root>/inputs/<dataset>/dataset.json`) into canonical Parquet tables.

    The whole input is validated before anything is written, so bad input leaves the previous tables intact; the
    three tables are written as one set (readers and a killed run see all old or all new tables) and only then
    reported to Dagster.
    """
    dataset = context.partition_key
    started = time.monotonic()
    folder = storage.inputs(dataset)
    spec = read_spec(folder)
    tables = import_tables(folder, spec)
    context.log.info(f"imported {dataset} ({spec.format}) in {time.monotonic() - started:.1f}s: "
                     f"{tables.documents.height} documents, {tables.queries.height} queries, {tables.qrels.height} labels")
    for warning in tables.warnings():
        context.log.warning(f"{dataset}: {warning}")
    notes = {k: dg.MetadataValue.int(int(v)) for k, v in (tables.notes or {}).items() if isinstance(v, int)}
    frames = {asset: getattr(tables, attribute) for asset, attribute in DATASET_TABLES.items()}
    paths = storage.write_table_set("dataset_tables", dataset, {asset: {"data": f} for asset, f in frames.items()})
    for asset, frame in frames.items():
        path = paths[asset]["data"]
        metadata = table_metadata(frame, path)
        if asset == "documents":
            metadata |= notes | {"format": spec.format, "source": str(spec.source)}
        if asset == "queries":
            counts = dict(frame.group_by("split").len().iter_rows())
            metadata |= {f"{split}_queries": dg.MetadataValue.int(int(counts.get(split, 0))) for split in ("train", "test")}
        yield dg.MaterializeResult(asset_key=asset, metadata=metadata)


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="datasets",
    deps=["documents", "queries"],
)
def click_log_pairs(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Click-log drops under `<root>/inputs/<dataset>/clicks/` aggregated (DuckDB) into training pairs.

    Every drop is validated first (unknown doc ids, empty queries, bad clicks or timestamps fail the whole
    ingest with the file, row and field named). Queries seen only in click logs are kept in table `queries`.
    """
    dataset = context.partition_key
    files = click_log_files(storage.inputs(dataset) / CLICKS_FOLDER)
    documents = storage.read_table("documents", dataset)
    queries = storage.read_table("queries", dataset)
    pairs, new_queries, aggregate, report = aggregate_click_logs(
        files, documents, queries, cache_dir=storage.root_path / "click_log_cache" / dataset)
    paths = storage.write_table_set("click_log_pairs", dataset, {  # one set: pairs never refer to missing queries
        "click_log_pairs": {"queries": new_queries, "aggregate": aggregate, "data": pairs}})
    path = paths["click_log_pairs"]["data"]
    context.log.info(f"{len(files)} click-log file(s) ({report.files_read} read now, {report.files_reused} from the "
                     f"cache) -> {pairs.height} pairs, {new_queries.height} new queries")
    return dg.MaterializeResult(
        metadata=table_metadata(pairs, path)
        | {
            "files": dg.MetadataValue.int(len(files)),
            "files_read_now": dg.MetadataValue.int(report.files_read),
            "files_from_cache": dg.MetadataValue.int(report.files_reused),
            "rows_read_now": dg.MetadataValue.int(report.rows_read),
            "new_queries": dg.MetadataValue.int(new_queries.height),
            "total_clicks": dg.MetadataValue.int(int(aggregate["clicks"].sum()) if aggregate.height else 0),
        }
    )
