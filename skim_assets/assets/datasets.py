"""Datasets: canonical tables imported from a registered dataset folder, and click-log drops."""


import time

import dagster as dg
import polars as pl

from ..lib.checks import (
    ERROR,
    Outcome,
    duplicate_count,
    empty_text_count,
    evaluate_safely,
    examples,
    fail,
    ok,
    schema_problems,
    unknown_values,
)
from ..lib.clicklogs import aggregate_click_logs, check_click_log_folder, click_log_files
from ..lib.datasets import CLICKS_FOLDER, IMPORT_SOURCE, TABLE_ASSETS, import_tables, source_digest
from ..lib.formats import DOCUMENTS_SCHEMA, QRELS_SCHEMA, SPLITS, queries_schema
from ..lib.layout import CLICK_LOG_CACHE, IMPORT_STATE
from ..lib.storage import peak_rss_mib, write_json_atomic
from ..partitions import dataset_partitions
from ..resources import StorageResource, Tables
from ..resources.artifacts import DATA, table_metadata, tables_data_version
from .common import asset_check, build_check, check_result, partition_of

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
    three tables are written as one set (readers and a killed run see all old or all new tables), which is why this
    step stores them itself rather than through the IO manager (that stores one output at a time); the IO manager
    hands them downstream like any other table.
    """
    dataset = context.partition_key
    started = time.monotonic()
    spec = storage.dataset_spec(dataset)
    digest = source_digest(storage.inputs(dataset), spec)  # before reading: an edit during the import shows later
    tables = import_tables(storage.inputs(dataset), spec)
    context.log.info(f"imported {dataset} ({spec.format}) in {time.monotonic() - started:.1f}s: "
                     f"{tables.documents.height} documents, {tables.queries.height} queries, "
                     f"{tables.qrels.height} labels")
    for warning in tables.warnings():
        context.log.warning(f"{dataset}: {warning}")
    notes = {k: int(v) for k, v in (tables.notes or {}).items() if isinstance(v, int)}
    frames = {asset: getattr(tables, attribute) for asset, attribute in DATASET_TABLES.items()}
    paths = storage.write_table_set("dataset_tables", dataset, {asset: {DATA: f} for asset, f in frames.items()})
    write_json_atomic({"digest": digest}, storage.step_dir(IMPORT_STATE, dataset, IMPORT_SOURCE))
    for asset, frame in frames.items():
        metadata = table_metadata(frame, paths[asset][DATA])
        if asset == "documents":
            metadata |= notes | {"format": spec.format, "source": str(spec.source)}
        if asset == "queries":
            counts = dict(frame.group_by("split").len().iter_rows())
            metadata |= {f"{split}_queries": int(counts.get(split, 0)) for split in ("train", "test")}
        # no value goes through the IO manager here, so the step's peak memory is recorded by hand
        yield dg.MaterializeResult(asset_key=asset, metadata=metadata | {"peak_rss_mib": peak_rss_mib()},
                                   data_version=tables_data_version(paths[asset]))


@dg.asset(partitions_def=dataset_partitions, group_name="datasets")
def click_log_pairs(context: dg.AssetExecutionContext, storage: StorageResource, documents: pl.DataFrame,
                    queries: pl.DataFrame) -> dg.MaterializeResult:
    """Click-log drops under `<root>/inputs/<dataset>/clicks/` aggregated (DuckDB) into training pairs.

    Every drop is validated first (unknown doc ids, empty queries, bad clicks, impressions, positions or timestamps
    fail the whole ingest with the file, row and field named). Queries seen only in click logs are kept in side
    table `queries` (stored with the pairs as one set: pairs never refer to missing queries); drops that record
    impressions add side table `impressions` (what was shown per query and position, clicked or not).
    """
    dataset = context.partition_key
    folder = storage.inputs(dataset) / CLICKS_FOLDER
    not_drops = check_click_log_folder(folder)
    if not_drops:
        context.log.warning(f"{len(not_drops)} file(s) in {folder} are not click-log drops (.parquet or .csv) and "
                            f"were left out: {', '.join(not_drops[:10])}")
    files = click_log_files(folder)
    ingest = aggregate_click_logs(files, documents, queries, cache_dir=storage.step_dir(CLICK_LOG_CACHE, dataset))
    report = ingest.report
    context.log.info(f"{len(files)} click-log file(s) ({report.files_read} read now, {report.files_reused} from the "
                     f"cache) -> {ingest.pairs.height} pairs, {ingest.new_queries.height} new queries")
    if ingest.test_text_pairs:
        context.log.warning(f"{ingest.test_text_pairs} clicked (query, document) pair(s), {ingest.test_text_clicks} "
                            "click(s), set aside: their query text is a test query's, so they would train on test "
                            "labels")
    return dg.MaterializeResult(
        value=Tables(ingest.pairs, queries=ingest.new_queries, aggregate=ingest.aggregate,
                     impressions=ingest.impressions),
        metadata={
            "files": len(files),
            "files_left_out": len(not_drops),
            "files_read_now": report.files_read,
            "files_from_cache": report.files_reused,
            "rows_read_now": report.rows_read,
            "new_queries": ingest.new_queries.height,
            "total_clicks": int(ingest.aggregate["clicks"].sum()) if ingest.aggregate.height else 0,
            "impressions": int(ingest.impressions["impressions"].sum()) if ingest.impressions.height else 0,
            "impressions_clicked": int(ingest.impressions["clicks"].sum()) if ingest.impressions.height else 0,
            "pairs_set_aside_test_text": ingest.test_text_pairs,
            "clicks_set_aside_test_text": ingest.test_text_clicks,
        },
    )


# ----------------------------------------------------------------------------------------------- asset checks


def _table_outcome(what: str, frame: pl.DataFrame, schema: dict, counts: dict, extra: dict | None = None) -> Outcome:
    """Schema problems first (nothing else is meaningful without the columns), then the named bad-row counts."""
    problems = schema_problems(frame, schema)
    metadata = {"rows": frame.height, **problems}
    if any(problems.values()):
        return fail(ERROR, f"{what}: columns differ from the canonical schema {list(schema)}", **metadata)
    metadata |= counts | (extra or {})
    bad = {name: n for name, n in counts.items() if n}
    if bad:
        return fail(ERROR, f"{what}: " + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in bad.items()),
                    **metadata)
    return ok(f"{what}: {frame.height} rows, canonical schema, unique ids, no empty text", **metadata)


def evaluate_documents(documents: Tables) -> Outcome:
    documents = documents.data
    if schema_problems(documents, DOCUMENTS_SCHEMA)["missing_columns"]:
        return _table_outcome("documents", documents, DOCUMENTS_SCHEMA, {})
    return _table_outcome("documents", documents, DOCUMENTS_SCHEMA, {
        "empty_doc_ids": empty_text_count(documents["doc_id"]),
        "duplicate_doc_ids": duplicate_count(documents, ["doc_id"]),
        "empty_titles": empty_text_count(documents["title"]),
    })


def evaluate_queries(queries: Tables) -> Outcome:
    queries = queries.data
    schema = queries_schema(queries)  # with the query-metadata column when the dataset has one
    if schema_problems(queries, schema)["missing_columns"]:
        return _table_outcome("queries", queries, schema, {})
    splits = dict(queries.group_by("split").len().iter_rows())
    return _table_outcome("queries", queries, schema, {
        "empty_query_ids": empty_text_count(queries["query_id"]),
        "duplicate_query_ids": duplicate_count(queries, ["query_id"]),
        "empty_texts": empty_text_count(queries["text"]),
        "unknown_splits": int((~queries["split"].cast(pl.String).is_in(list(SPLITS)).fill_null(False)).sum()),
    }, {f"{split}_queries": int(splits.get(split, 0)) for split in SPLITS})


def evaluate_relevance_labels(relevance_labels: Tables, queries: Tables, documents: Tables) -> Outcome:
    """Labels of known queries and documents (the three tables of one import: the IO manager pins a step's
    inputs of one table set to one version)."""
    qrels, queries, documents = relevance_labels.data, queries.data, documents.data
    if schema_problems(qrels, QRELS_SCHEMA)["missing_columns"]:
        return _table_outcome("relevance_labels", qrels, QRELS_SCHEMA, {})
    unknown_queries = unknown_values(qrels["query_id"], queries["query_id"])
    unknown_docs = unknown_values(qrels["doc_id"], documents["doc_id"])
    return _table_outcome("relevance_labels", qrels, QRELS_SCHEMA, {
        "duplicate_labels": duplicate_count(qrels, ["query_id", "doc_id"]),
        "unknown_query_ids": unknown_queries.len(),
        "unknown_doc_ids": unknown_docs.len(),
    }, {
        "labelled_queries": qrels["query_id"].n_unique(),
        "unknown_query_id_examples": examples(unknown_queries),
        "unknown_doc_id_examples": examples(unknown_docs),
    })


documents_check = build_check(
    "documents", "documents_valid", evaluate_documents, blocking=True,
    description="Canonical columns (doc_id, title, metadata), unique non-empty doc ids, non-empty titles.",
)
queries_check = build_check(
    "queries", "queries_valid", evaluate_queries, blocking=True,
    description="Canonical columns (query_id, text, split), unique non-empty query ids, non-empty text, known splits.",
)


@asset_check("relevance_labels", "relevance_labels_valid", blocking=True,
             additional_ins={"queries": dg.AssetIn("queries"), "documents": dg.AssetIn("documents")},
             description="Canonical columns (query_id, doc_id, relevance), unique pairs, every query and doc id known.")
def relevance_labels_check(context: dg.AssetCheckExecutionContext, relevance_labels: Tables, queries: Tables,
                           documents: Tables) -> dg.AssetCheckResult:
    return check_result(evaluate_safely(evaluate_relevance_labels, relevance_labels, queries, documents),
                        partition_of(context))


dataset_checks = [documents_check, queries_check, relevance_labels_check]
