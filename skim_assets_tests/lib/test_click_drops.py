"""Click-log drop folders: what is read, what is refused with the file named, and when a cached drop is read again."""

import os

import polars as pl
import pytest

from skim_assets.lib.clicklogs import aggregate_click_logs, check_click_log_folder, click_log_files
from skim_assets.lib.formats import QUERIES_SCHEMA, DataError

DOCS = pl.DataFrame({"doc_id": ["d1", "d2"], "title": ["a", "b"], "metadata": ["", ""]})
QUERIES = pl.DataFrame({"query_id": ["q1"], "text": ["known query"], "split": ["train"]}, schema=QUERIES_SCHEMA)
HEADER = "query,doc_id,clicks,timestamp\n"


@pytest.fixture
def clicks(tmp_path):
    folder = tmp_path / "inputs" / "mini" / "clicks"
    folder.mkdir(parents=True)
    return folder


def test_csv_counts_written_as_whole_floats_are_accepted_as_in_parquet(clicks):
    (clicks / "a.csv").write_text(HEADER + "known query,d1,1.0,2026-01-01\nknown query,d2, 3 ,2026-01-01\n")
    ingest = aggregate_click_logs(click_log_files(clicks), DOCS, QUERIES)
    assert sorted(ingest.aggregate.select("doc_id", "clicks").rows()) == [("d1", 1), ("d2", 3)]
    (clicks / "a.csv").write_text(HEADER + "known query,d1,2.5,2026-01-01\n")
    with pytest.raises(DataError, match=r"a\.csv, row 2, field 'clicks'"):
        aggregate_click_logs(click_log_files(clicks), DOCS, QUERIES)


def test_a_symbolic_link_out_of_the_inputs_is_refused_and_one_inside_is_read(clicks, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(HEADER + "secret,d1,1,2026-01-01\n")
    inside = clicks.parent / "kept.csv"
    inside.write_text(HEADER + "known query,d2,1,2026-01-01\n")
    (clicks / "in.csv").symlink_to(inside)
    assert check_click_log_folder(clicks) == [] and [p.name for p in click_log_files(clicks)] == ["in.csv"]
    (clicks / "out.csv").symlink_to(outside)
    with pytest.raises(DataError, match=r"out\.csv: a symbolic link to .*elsewhere\.csv, outside the dataset's inputs"):
        check_click_log_folder(clicks)
    assert [p.name for p in click_log_files(clicks)] == ["in.csv"]  # never read, also by the sensor


def test_a_compressed_drop_is_refused_and_other_files_are_named(clicks):
    (clicks / "README.txt").write_text("notes")
    (clicks / ".hidden.csv").write_text("")
    assert check_click_log_folder(clicks) == ["README.txt"]
    (clicks / "day1.csv.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match=r"day1\.csv\.gz: compressed drops are not read; decompress"):
        check_click_log_folder(clicks)


def test_a_drop_whose_name_is_not_utf8_is_refused_by_name(clicks):
    name = os.fsencode(clicks) + b"/caf\xe9.csv"
    with open(name, "wb") as handle:
        handle.write(HEADER.encode() + b"known query,d1,1,2026-01-01\n")
    with pytest.raises(DataError, match=r"caf\\xe9\.csv: the file name is not UTF-8") as error:
        check_click_log_folder(clicks)
    str(error.value).encode("utf-8")  # the message itself prints anywhere
    assert click_log_files(clicks) == []


def test_a_drop_corrected_in_place_with_the_same_size_and_mtime_is_read_again(clicks, tmp_path):
    drop = clicks / "a.csv"
    drop.write_text(HEADER + "known query,d1,4,2026-01-01\n")
    stat = drop.stat()
    first = aggregate_click_logs([drop], DOCS, QUERIES, cache_dir=tmp_path / "cache")
    drop.write_text(HEADER + "known query,d2,4,2026-01-01\n")  # same size
    os.utime(drop, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert drop.stat().st_size == stat.st_size and drop.stat().st_mtime_ns == stat.st_mtime_ns
    second = aggregate_click_logs([drop], DOCS, QUERIES, cache_dir=tmp_path / "cache")
    assert first.aggregate["doc_id"].to_list() == ["d1"] and second.aggregate["doc_id"].to_list() == ["d2"]
    assert second.report.files_read == 1


def test_drops_with_impressions_aggregate_shown_and_clicked_per_position(clicks):
    """Aggregated rows and one-row-per-impression drops add up per (query, document, position); only clicked
    rows become pairs; a text only ever shown is still a train query; a test query's text is set aside."""
    queries = pl.concat([QUERIES, pl.DataFrame({"query_id": ["t1"], "text": ["test query"], "split": ["test"]},
                                               schema=QUERIES_SCHEMA)])
    (clicks / "a.csv").write_text("query,doc_id,clicks,impressions,position,timestamp\n"
                                  "known query,d1,2,10,1,2026-01-01\n"
                                  "known query,d2,0,10,2,2026-01-01\n"
                                  "test query,d1,1,1,1,2026-01-01\n")
    pl.DataFrame({"query": ["known query", "known query", "only shown"], "doc_id": ["d2", "d2", "d1"],
                  "clicked": [1, 0, 0], "position": [2, 2, 1],
                  "timestamp": ["2026-01-02"] * 3}).write_parquet(clicks / "b.parquet")
    (clicks / "c.csv").write_text(HEADER + "known query,d1,4,2026-01-03\n")  # no impressions: unknown, not 0
    ingest = aggregate_click_logs(click_log_files(clicks), DOCS, queries)
    assert sorted(ingest.pairs.select("query_id", "doc_id").rows()) == [("q1", "d1"), ("q1", "d2")]
    assert sorted(ingest.aggregate.select("doc_id", "clicks").rows()) == [("d1", 6), ("d2", 1)]
    shown_only = ingest.new_queries.row(0, named=True)
    assert (shown_only["text"], shown_only["split"], ingest.new_queries.height) == ("only shown", "train", 1)
    assert sorted(ingest.impressions.rows()) == [
        (shown_only["query_id"], "d1", 1, 1, 0), ("q1", "d1", 1, 10, 2), ("q1", "d2", 2, 12, 1)]
    assert (ingest.test_text_pairs, ingest.test_text_clicks) == (1, 1)


def test_a_drop_cached_before_impressions_were_read_is_still_read(clicks, tmp_path):
    (clicks / "a.csv").write_text(HEADER + "known query,d1,1,2026-01-01\n")
    cache = tmp_path / "cache"
    aggregate_click_logs(click_log_files(clicks), DOCS, QUERIES, cache_dir=cache)
    for cached in cache.glob("*.parquet"):  # as an older version wrote it
        pl.read_parquet(cached).drop("impressions", "position").write_parquet(cached)
    again = aggregate_click_logs(click_log_files(clicks), DOCS, QUERIES, cache_dir=cache)
    assert (again.report.files_reused, again.pairs.height, again.impressions.height) == (1, 1, 0)
