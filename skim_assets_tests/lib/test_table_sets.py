"""Table sets under concurrent writers and readers (issue 27): real processes race, and the set stays whole.

The process races are the checks of `benchmarks/table_set_race.py` at a size that runs in seconds; the other
tests pin down the same guarantees deterministically (a write between two reads of one step).
"""

import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks`

from benchmarks.table_set_race import (  # noqa: E402
    ASSETS,
    DATASET,
    STEP,
    import_frames,
    markers,
    race_reader,
    race_writers,
)
from skim_assets.lib.storage import TableSetPins, write_table_set  # noqa: E402
from skim_assets.resources import storage_resources  # noqa: E402


def _versions(root: Path) -> set[str]:
    return {path.name for path in (root / ".sets" / STEP / DATASET).glob("v-*")}


def _linked(root: Path) -> set[str]:
    return markers([pl.read_parquet(root / asset / DATASET / "data.parquet") for asset in ASSETS])


def test_two_writers_of_one_set_at_once_never_lose_it(tmp_path):
    figures = race_writers(tmp_path, iterations=40)
    assert figures["writer_error_examples"] == [] and figures["writer_errors"] == 0
    assert (figures["sets_lost"], figures["sets_mixed"]) == (0, 0)
    assert len(_versions(tmp_path / "again")) <= 2  # current and previous: the rest pruned


def test_a_reader_during_reimports_never_sees_a_mix(tmp_path):
    figures = race_reader(tmp_path, seconds=4, rows=1000)
    assert figures["failed_read_examples"] == [] and figures["failed_reads"] == 0
    assert figures["mixed_reads"] == 0
    assert figures["writer_errors"] == 0
    assert figures["reads"] >= 50 and figures["writes"] >= 10  # a race did happen


def test_a_pinned_version_outlives_later_writes_and_is_pruned_once_released(tmp_path):
    write_table_set(tmp_path, STEP, DATASET, import_frames("a", 3))
    pins = TableSetPins()
    documents = pl.read_parquet(pins.folder(tmp_path / "documents" / DATASET) / "data.parquet")
    for marker in "bcd":
        write_table_set(tmp_path, STEP, DATASET, import_frames(marker, 3))
    rest = [pl.read_parquet(pins.folder(tmp_path / asset / DATASET) / "data.parquet") for asset in ASSETS[1:]]
    assert markers([documents, *rest]) == {"a"}  # one import, however many writes came between
    assert _linked(tmp_path) == {"d"}
    assert len(_versions(tmp_path)) == 3  # the pinned one, the previous (c) and the current (d)

    pins.release()
    write_table_set(tmp_path, STEP, DATASET, import_frames("e", 3))
    assert len(_versions(tmp_path)) == 2 and _linked(tmp_path) == {"e"}


def test_a_step_reads_every_input_of_one_set_from_one_import(tmp_path, monkeypatch):
    partitions = dg.StaticPartitionsDefinition([DATASET])
    specs = [dg.AssetSpec(asset, partitions_def=partitions) for asset in ("documents", "queries")]
    seen = []

    @dg.asset(partitions_def=partitions)
    def both(documents: pl.DataFrame, queries: pl.DataFrame) -> None:
        seen.append((markers([documents]), markers([queries])))

    write_table_set(tmp_path, STEP, DATASET, import_frames("old", 3))
    read_parquet, writes = pl.read_parquet, []

    def read_then_reimport(*args, **kwargs):  # a re-import lands between the step's two inputs
        frame = read_parquet(*args, **kwargs)
        if not writes:
            writes.append(write_table_set(tmp_path, STEP, DATASET, import_frames("new", 3)))
        return frame

    monkeypatch.setattr(pl, "read_parquet", read_then_reimport)
    run = lambda: dg.materialize([*specs, both], selection=[both], partition_key=DATASET,  # noqa: E731
                                 resources=storage_resources(tmp_path))
    assert run().success
    monkeypatch.undo()
    assert writes and seen == [({"old"}, {"old"})]  # not documents of one import with queries of another

    assert run().success  # the next step pins afresh: the new import
    assert seen[-1] == ({"new"}, {"new"})
    for marker in ("x", "y"):  # the runs released their pins: nothing of theirs is kept past the previous version
        write_table_set(tmp_path, STEP, DATASET, import_frames(marker, 3))
    assert len(_versions(tmp_path)) == 2


def test_several_tables_of_one_asset_are_read_from_one_version(tmp_path):
    from skim_assets.resources import StorageResource

    storage = StorageResource(root=str(tmp_path))
    for version in ("old", "new"):
        frames = {table: pl.DataFrame({"version": [version], "table": [table]}) for table in ("data", "raw")}
        storage.write_table_set("teacher_demonstrations", "mini", {"teacher_demonstrations": frames})
    raw, data = storage.read_asset_tables("teacher_demonstrations", "mini", "raw", "data")
    assert raw.row(0) == ("new", "raw") and data.row(0) == ("new", "data")
    with pytest.raises(FileNotFoundError, match="judged.parquet is missing"):
        storage.read_asset_tables("teacher_demonstrations", "mini", "raw", "judged")


def test_a_carried_table_is_linked_not_rewritten_and_survives_its_source_being_replaced(tmp_path):
    """A training view's tables travel as hard links of the stored files: the same bytes, no copy; when the source
    artifact is written again, the carrying artifact keeps the version it was made from."""
    import os

    from skim_assets.resources import Tables, TrainingView

    documents = pl.DataFrame({"doc_id": ["d1", "d2"], "title": ["a", "b"]})
    queries = pl.DataFrame({"query_id": ["q1"], "text": ["x"], "split": ["train"]})
    clicks = pl.DataFrame({"query_id": ["q1"], "doc_id": ["d1"], "weight": [1.0], "source": ["click"]})
    impressions = pl.DataFrame({"query_id": ["q1"], "doc_id": ["d2"], "position": [1], "impressions": [1],
                                "clicks": [0]})
    write_table_set(tmp_path, "train_pairs", "ds", {"train_pairs": {
        "data": clicks, "documents": documents, "queries": queries, "click_pairs": clicks, "impressions": impressions}})
    source = Tables(folder=tmp_path / "train_pairs" / "ds")
    view = TrainingView(source)
    assert view.documents.equals(documents)  # read once: still carried as the stored file below
    mapped = pl.DataFrame({"query_id": ["q1"], "doc_id": ["d2"], "weight": [0.9], "source": ["skim"]})
    carried = view.carried_by(mapped)
    assert carried.stored()["documents"] == source.path("documents")
    write_table_set(tmp_path, "mapped_pairs", "ds", {"mapped_pairs": carried.stored()})
    linked = tmp_path / "mapped_pairs" / "ds" / "documents.parquet"
    assert os.stat(linked).st_ino == os.stat(tmp_path / "train_pairs" / "ds" / "documents.parquet").st_ino

    write_table_set(tmp_path, "train_pairs", "ds", {"train_pairs": {  # new documents: the mapping keeps its own
        "data": clicks, "documents": documents.head(1), "queries": queries, "click_pairs": clicks,
        "impressions": impressions}})
    assert TrainingView(Tables(folder=tmp_path / "mapped_pairs" / "ds")).documents.equals(documents)
    assert TrainingView(Tables(folder=tmp_path / "train_pairs" / "ds")).documents.height == 1
    with pytest.raises(KeyError, match="carries no training view"):
        TrainingView(Tables(mapped))
