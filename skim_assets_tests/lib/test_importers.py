"""Importers: exact frames on tiny files, and DataErrors that name file, row and field for every bad input."""

from __future__ import annotations

import gzip
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from skim_assets.lib.formats import CLICKS_SCHEMA, DOCUMENTS_SCHEMA, QRELS_SCHEMA, QUERIES_SCHEMA, DataError
from skim_assets.lib.importers import read_beir, read_click_log, read_jsonl, read_xc_bow, read_xc_raw

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write(path: Path, content: str | bytes, gz: bool = False) -> Path:
    """Write text or bytes to `path` (+ '.gz', gzipped, when gz)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def jsonl(records: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def where(name: str, row: int | None = None, field: str | None = None) -> str:
    """Regex for DataError's '<path>, row <row>, field '<field>'' prefix."""
    text = name + (f", row {row}" if row is not None else "") + (f", field '{field}'" if field is not None else "")
    return re.escape(text)


def frame(rows: list[tuple], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


# ------------------------------------------------------------------------------------------------------------ BEIR

CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "alpha text"},
    {"_id": "d2", "title": "  ", "text": "one two three four five"},
    {"_id": "d3", "title": "Gamma", "text": ""},
]
QUERIES = [
    {"_id": "q1", "text": "first"},
    {"_id": "q2", "text": "second"},
    {"_id": "q3", "text": "third"},
    {"_id": "q4", "text": "dev only"},
    {"_id": "q5", "text": "unlabelled"},
]
HEADER = "query-id\tcorpus-id\tscore\n"
TRAIN = HEADER + "q1\td1\t1\nq1\td2\t2\nq2\td3\t0\n"
TEST = HEADER + "q3\td3\t1\n"
DEV = HEADER + "q4\td1\t1\n"


def make_beir(root: Path, gz: bool = False, **overrides: str | bytes | None) -> Path:
    """A tiny BEIR folder; overrides replace a file's content by key (None removes the file)."""
    files = {"corpus": jsonl(CORPUS), "queries": jsonl(QUERIES), "train": TRAIN, "test": TEST, "dev": DEV} | overrides
    paths = {"corpus": "corpus.jsonl", "queries": "queries.jsonl",
             "train": "qrels/train.tsv", "test": "qrels/test.tsv", "dev": "qrels/dev.tsv"}
    for key, content in files.items():
        if content is not None:
            write(root / paths[key], content, gz)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_beir_happy_path(tmp_path: Path, gz: bool) -> None:
    tables = read_beir(make_beir(tmp_path, gz), title_words=3)
    assert_frame_equal(tables.documents, frame([
        ("d1", "Alpha", "alpha text"), ("d2", "one two three", "one two three four five"), ("d3", "Gamma", ""),
    ], DOCUMENTS_SCHEMA))
    # q2's only label has score 0, q4 is dev-only (ignored), q5 has no labels: all dropped.
    assert_frame_equal(tables.queries, frame([("q1", "first", "train"), ("q3", "third", "test")], QUERIES_SCHEMA))
    assert_frame_equal(tables.qrels, frame([("q1", "d1", 1.0), ("q1", "d2", 2.0), ("q3", "d3", 1.0)], QRELS_SCHEMA))
    assert tables.notes == {"derived_titles": 1, "dropped_unlabeled_queries": 3, "dropped_nonpositive_qrels": 1,
                            "ignored_dev_qrels": 1}


def test_beir_derived_titles_use_title_words(tmp_path: Path) -> None:
    corpus = [{"_id": "d1", "title": "", "text": " many   words\there and more"},
              {"_id": "d2", "text": "no title key"},
              {"_id": "d3", "title": None, "text": "null title"}]
    folder = make_beir(tmp_path, corpus=jsonl(corpus), train=HEADER + "q1\td1\t1\n", test=HEADER + "q3\td2\t1\n")
    tables = read_beir(folder, title_words=2)
    assert tables.documents["title"].to_list() == ["many words", "no title", "null title"]
    assert tables.notes["derived_titles"] == 3


def test_beir_without_header_and_without_dev(tmp_path: Path) -> None:
    tables = read_beir(make_beir(tmp_path, train="q1\td1\t1\n", dev=None))
    assert tables.qrels.rows() == [("q1", "d1", 1.0), ("q3", "d3", 1.0)]
    assert tables.notes["ignored_dev_qrels"] == 0


@pytest.mark.parametrize(("dev_split", "q4_split"), [("ignore", None), ("train", "train"), ("test", "test")])
def test_beir_dev_split(tmp_path: Path, dev_split: str, q4_split: str | None) -> None:
    tables = read_beir(make_beir(tmp_path, gz=True), dev_split=dev_split)
    splits = dict(tables.queries.select("query_id", "split").iter_rows())
    assert splits.get("q4") == q4_split
    assert (("q4", "d1", 1.0) in tables.qrels.rows()) == (q4_split is not None)
    assert tables.notes["ignored_dev_qrels"] == (1 if dev_split == "ignore" else 0)


def test_beir_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dev_split"):
        read_beir(make_beir(tmp_path), dev_split="validation")
    with pytest.raises(ValueError, match="title_words"):
        read_beir(tmp_path, title_words=0)


def test_beir_dev_mapped_onto_other_split_conflicts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=where("dev.tsv", 2, "query-id") + ".*train.tsv line 2"):
        read_beir(make_beir(tmp_path, dev=HEADER + "q1\td3\t1\n"), dev_split="test")


BAD_UTF8 = (jsonl(CORPUS[:1]) + '{"_id": "d2", "title": "x", "text": "').encode() + b"\xff\xfe\"}\n"
BEIR_ERRORS = [
    # (override, file name, row, field, message fragment)
    ({"corpus": BAD_UTF8}, "corpus.jsonl", 2, None, "invalid UTF-8"),
    ({"queries": jsonl(QUERIES[:2]) + "{not json\n"}, "queries.jsonl", 3, None, "invalid JSON"),
    ({"queries": jsonl(QUERIES) + "[1, 2]\n"}, "queries.jsonl", 6, None, "JSON object"),
    ({"corpus": jsonl(CORPUS + [{"title": "no id", "text": "x"}])}, "corpus.jsonl", 4, "_id", "missing"),
    ({"queries": jsonl([{"_id": "", "text": "x"}])}, "queries.jsonl", 1, "_id", "missing or empty"),
    ({"corpus": jsonl(CORPUS + [CORPUS[1]])}, "corpus.jsonl", 4, "_id", "duplicate _id 'd2'"),
    ({"queries": jsonl(QUERIES + [QUERIES[0]])}, "queries.jsonl", 6, "_id", "duplicate _id 'q1'"),
    ({"queries": jsonl(QUERIES[:1] + [{"_id": "q2", "text": "  "}])}, "queries.jsonl", 2, "text", "empty"),
    ({"queries": jsonl(QUERIES[:1] + [{"_id": "q2"}])}, "queries.jsonl", 2, "text", "missing key"),
    ({"corpus": jsonl(CORPUS + [{"_id": "d4", "title": "", "text": " "}])}, "corpus.jsonl", 4, "title", "both empty"),
    ({"corpus": jsonl(CORPUS + [{"_id": "d4", "title": 5}])}, "corpus.jsonl", 4, "title", "must be a string"),
    ({"train": TRAIN + "qX\td1\t1\n"}, "train.tsv", 5, "query-id", "unknown query id 'qX'"),
    ({"test": TEST + "q3\tdX\t1\n"}, "test.tsv", 3, "corpus-id", "unknown corpus id 'dX'"),
    ({"dev": DEV + "q4\tdX\t1\n"}, "dev.tsv", 3, "corpus-id", "unknown corpus id"),  # ignored rows are checked too
    ({"train": TRAIN + "q1\td3\n"}, "train.tsv", 5, "score", "3 tab-separated columns"),
    ({"train": TRAIN + "q1\n"}, "train.tsv", 5, "corpus-id", "3 tab-separated columns"),
    ({"train": TRAIN + "q1\td3\t1\textra\n"}, "train.tsv", 5, "score", "found 4"),
    ({"train": TRAIN + "q1\td3\thigh\n"}, "train.tsv", 5, "score", "not a number"),
    ({"train": TRAIN + "q1\td3\tnan\n"}, "train.tsv", 5, "score", "not finite"),
    ({"test": TEST + "q1\td3\t1\n"}, "test.tsv", 3, "query-id", "for test here but for train in train.tsv"),
    ({"train": TRAIN + "q1\td1\t3\n"}, "train.tsv", 5, "corpus-id", "duplicate label"),
]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("override", "name", "row", "field", "fragment"), BEIR_ERRORS)
def test_beir_errors(tmp_path: Path, gz: bool, override: dict, name: str, row: int, field: str | None,
                     fragment: str) -> None:
    with pytest.raises(DataError, match=where(name + (".gz" if gz else ""), row, field) + ".*" + re.escape(fragment)):
        read_beir(make_beir(tmp_path, gz, **override))


@pytest.mark.parametrize(("missing", "name"), [("corpus", "corpus.jsonl"), ("queries", "queries.jsonl"),
                                               ("train", "train.tsv"), ("test", "test.tsv")])
def test_beir_missing_files(tmp_path: Path, missing: str, name: str) -> None:
    with pytest.raises(DataError, match=re.escape(name) + ": file not found"):
        read_beir(make_beir(tmp_path, **{missing: None}))


def test_beir_plain_and_gz_both_present(tmp_path: Path) -> None:
    make_beir(tmp_path)
    write(tmp_path / "corpus.jsonl", jsonl(CORPUS), gz=True)
    with pytest.raises(DataError, match="corpus.jsonl: both"):
        read_beir(tmp_path)


def test_truncated_gzip_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.jsonl", jsonl(CORPUS * 50), gz=True)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=where("corpus.jsonl.gz") + ", row \\d+: cannot read"):
        list(read_jsonl(path))


def test_read_jsonl_skips_blank_lines_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '\ufeff{"a": 1}\r\n\n  \n{"a": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.shared_data
def test_beir_scifact() -> None:
    folder = SHARED_DATA / "scifact"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    tables = read_beir(folder)
    assert tables.documents.height == 5183
    assert dict(tables.queries["split"].value_counts().iter_rows()) == {"train": 809, "test": 300}
    splits = tables.qrels.join(tables.queries, on="query_id")["split"].value_counts()
    assert dict(splits.iter_rows()) == {"train": 919, "test": 339}
    assert tables.notes["derived_titles"] == 0


@pytest.mark.shared_data
def test_beir_nfcorpus() -> None:
    folder = SHARED_DATA / "nfcorpus"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    tables = read_beir(folder)
    assert tables.documents.height == 3633
    assert tables.notes["derived_titles"] == 3633
    first_words = tables.documents["metadata"].str.extract_all(r"\S+").list.head(12).list.join(" ")
    assert (tables.documents["title"] == first_words).all()
    assert dict(tables.queries["split"].value_counts().iter_rows()) == {"train": 2590, "test": 323}
    assert tables.notes["ignored_dev_qrels"] == 11385


# ---------------------------------------------------------------------------------------------------- XC (LF raw)

LABELS = [{"uid": "L0", "title": "zero", "content": "about zero", "target_ind": [], "target_rel": []},
          {"uid": "L1", "title": "one", "content": "about one"},
          {"uid": 2, "title": "two", "content": ""}]
TRN = [{"uid": "A", "title": "query a", "content": "", "target_ind": [2, 0], "target_rel": [1.0, 0.5]},
       {"uid": "B", "title": "query b", "content": "", "target_ind": [1]},
       {"uid": "C", "title": "query c", "content": "", "target_ind": [1], "target_rel": [0.0]}]
TST = [{"uid": "D", "title": "query d", "content": "", "target_ind": [], "target_rel": []}]


def make_xc_raw(root: Path, gz: bool = True, **overrides: list | bytes) -> Path:
    files = {"lbl": LABELS, "trn": TRN, "tst": TST} | overrides
    for stem, content in files.items():
        write(root / f"{stem}.json", content if isinstance(content, bytes) else jsonl(content), gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_xc_raw_happy_path(tmp_path: Path, gz: bool) -> None:
    tables = read_xc_raw(make_xc_raw(tmp_path, gz))
    assert_frame_equal(tables.documents, frame([("L0", "zero", "about zero"), ("L1", "one", "about one"),
                                                ("2", "two", "")], DOCUMENTS_SCHEMA))
    assert_frame_equal(tables.queries, frame([("A", "query a", "train"), ("B", "query b", "train"),
                                              ("C", "query c", "train"), ("D", "query d", "test")], QUERIES_SCHEMA))
    assert_frame_equal(tables.qrels, frame([("A", "2", 1.0), ("A", "L0", 0.5), ("B", "L1", 1.0)], QRELS_SCHEMA))
    assert tables.notes == {"dropped_nonpositive_qrels": 1, "queries_without_labels": 2}


XC_RAW_ERRORS = [
    ({"trn": TRN + [{"uid": "E", "title": "e", "target_ind": [3]}]}, "trn.json.gz", 4, "target_ind", "outside"),
    ({"tst": [{"uid": "E", "title": "e", "target_ind": [-1]}]}, "tst.json.gz", 1, "target_ind", "outside"),
    ({"trn": [{"uid": "E", "title": "e", "target_ind": [0, 0]}]}, "trn.json.gz", 1, "target_ind", "repeated"),
    ({"trn": [{"uid": "E", "title": "e", "target_ind": ["0"]}]}, "trn.json.gz", 1, "target_ind", "list of integers"),
    ({"trn": [{"uid": "E", "title": "e", "target_ind": [0], "target_rel": [True]}]}, "trn.json.gz", 1, "target_rel",
     "list of numbers"),
    ({"trn": [{"uid": "E", "title": "e", "target_ind": [0], "target_rel": [float("nan")]}]}, "trn.json.gz", 1,
     "target_rel", "not finite"),
    ({"trn": [{"uid": "E", "title": "e", "target_ind": [0, 1], "target_rel": [1.0]}]}, "trn.json.gz", 1, "target_rel",
     "target_rel has 1 values but target_ind has 2"),
    ({"trn": [{"uid": "E", "title": "e", "target_ind": [0], "target_rel": []}]}, "trn.json.gz", 1, "target_rel",
     "has 0"),
    ({"lbl": LABELS + [{"uid": "L1", "title": "dup"}]}, "lbl.json.gz", 4, "uid", "duplicate uid 'L1'"),
    ({"tst": [{"uid": "A", "title": "again", "target_ind": []}]}, "tst.json.gz", 1, "uid",
     "first in trn.json.gz line 1"),
    ({"lbl": [{"title": "no uid"}]}, "lbl.json.gz", 1, "uid", "missing"),
    ({"lbl": [{"uid": "L0"}]}, "lbl.json.gz", 1, "title", "missing key 'title'"),
    ({"trn": [{"uid": "E", "target_ind": []}]}, "trn.json.gz", 1, "title", "missing key 'title'"),
    ({"trn": [{"uid": "E", "title": " ", "target_ind": []}]}, "trn.json.gz", 1, "title", "empty"),
    ({"tst": [{"uid": "E", "title": "e"}]}, "tst.json.gz", 1, "target_ind", "missing key 'target_ind'"),
    ({"tst": jsonl(TST).encode() + b'{"uid": "\xc3\x28"}\n'}, "tst.json.gz", 2, None, "invalid UTF-8"),
    ({"lbl": jsonl(LABELS).encode() + b"{oops}\n"}, "lbl.json.gz", 4, None, "invalid JSON"),
]


@pytest.mark.parametrize(("override", "name", "row", "field", "fragment"), XC_RAW_ERRORS)
def test_xc_raw_errors(tmp_path: Path, override: dict, name: str, row: int, field: str | None, fragment: str) -> None:
    with pytest.raises(DataError, match=where(name, row, field) + ".*" + re.escape(fragment)):
        read_xc_raw(make_xc_raw(tmp_path, **override))


def test_xc_raw_query_content_of_another_type_names_the_row(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=where("trn.json.gz", 2, "content") + ".*must be a string"):
        read_xc_raw(make_xc_raw(tmp_path, trn=[TRN[0], dict(TRN[1], content=["a", "list"])]))


def test_xc_raw_missing_file(tmp_path: Path) -> None:
    make_xc_raw(tmp_path)
    (tmp_path / "tst.json.gz").unlink()
    with pytest.raises(DataError, match="tst.json: file not found"):
        read_xc_raw(tmp_path)


# ---------------------------------------------------------------------------------------------- XC (text + sparse)

BOW = {
    "Y.txt": "label zero\nlabel one\nlabel two\n",
    "Y_metadata.txt": "long zero\n\nlong two\n",
    "trn_X.txt": "query a\nquery b\nquery c\n",
    "trn_X_Y.txt": "3 3\n2:1 0:0.5\n\n1:1.0 2:0\n",
    "tst_X.txt": "query d\n",
    "tst_X_Y.txt": "1 3\n0:1\n",
}


def make_bow(root: Path, **overrides: str | bytes | None) -> Path:
    for name, content in (BOW | {k.replace("_txt", ".txt"): v for k, v in overrides.items()}).items():
        if content is not None:
            write(root / name, content)
    return root


def test_xc_bow_happy_path(tmp_path: Path) -> None:
    tables = read_xc_bow(make_bow(tmp_path))
    assert_frame_equal(tables.documents, frame([("0", "label zero", "long zero"), ("1", "label one", ""),
                                                ("2", "label two", "long two")], DOCUMENTS_SCHEMA))
    assert_frame_equal(tables.queries, frame([("trn-0", "query a", "train"), ("trn-1", "query b", "train"),
                                              ("trn-2", "query c", "train"), ("tst-0", "query d", "test")],
                                             QUERIES_SCHEMA))
    assert_frame_equal(tables.qrels, frame([("trn-0", "2", 1.0), ("trn-0", "0", 0.5), ("trn-2", "1", 1.0),
                                            ("tst-0", "0", 1.0)], QRELS_SCHEMA))
    assert tables.notes == {"dropped_nonpositive_qrels": 1, "queries_without_labels": 1}


def test_xc_bow_without_metadata(tmp_path: Path) -> None:
    tables = read_xc_bow(make_bow(tmp_path, Y_metadata_txt=None))
    assert tables.documents["metadata"].to_list() == ["", "", ""]


XC_BOW_ERRORS = [
    ({"trn_X_Y_txt": "3 3\n0:1\n1:1\n"}, "trn_X_Y.txt", 1, "rows", "header says 3 rows but 2 lines follow"),
    ({"trn_X_Y_txt": "3 3\n0:1\n1:1\n\n\n"}, "trn_X_Y.txt", 1, "rows", "but 4 lines follow"),
    ({"tst_X_Y_txt": "2 3\n0:1\n1:1\n"}, "tst_X_Y.txt", 1, "rows", "header says 2 rows but tst_X.txt has 1 lines"),
    ({"tst_X_Y_txt": "1 4\n0:1\n"}, "tst_X_Y.txt", 1, "labels", "header says 4 labels but Y.txt has 3"),
    ({"tst_X_Y_txt": "1\n0:1\n"}, "tst_X_Y.txt", 1, "header", "rows labels"),
    ({"tst_X_Y_txt": ""}, "tst_X_Y.txt", 1, "header", "rows labels"),
    ({"trn_X_Y_txt": "3 3\n0:1\n\n1\n"}, "trn_X_Y.txt", 4, "label:value", "malformed label:value token '1'"),
    ({"trn_X_Y_txt": "3 3\n0:1\n\nx:1\n"}, "trn_X_Y.txt", 4, "label:value", "'x:1'"),
    ({"trn_X_Y_txt": "3 3\n0:1\n1:y\n\n"}, "trn_X_Y.txt", 3, "label:value", "'1:y'"),
    ({"trn_X_Y_txt": "3 3\n0:1\n1:inf\n\n"}, "trn_X_Y.txt", 3, "label:value", "'1:inf'"),
    ({"trn_X_Y_txt": "3 3\n0:1\n3:1\n\n"}, "trn_X_Y.txt", 3, "label", "label index 3 outside"),
    ({"trn_X_Y_txt": "3 3\n0:1\n-1:1\n\n"}, "trn_X_Y.txt", 3, "label", "label index -1 outside"),
    ({"trn_X_Y_txt": "3 3\n0:1 0:2\n\n\n"}, "trn_X_Y.txt", 2, "label", "repeated"),
    ({"trn_X_txt": b"query a\nquery \xff\nquery c\n"}, "trn_X.txt", 2, "text", "invalid UTF-8"),
    ({"Y_txt": b"label zero\nlabel one\n\xe2\x82\n"}, "Y.txt", 3, "title", "invalid UTF-8"),
    ({"trn_X_Y_txt": b"3 3\n0:1\n\xff\n\n"}, "trn_X_Y.txt", 3, "labels", "invalid UTF-8"),
    ({"trn_X_txt": "query a\n \nquery c\n"}, "trn_X.txt", 2, "text", "empty text"),
    ({"Y_txt": "label zero\n\nlabel two\n"}, "Y.txt", 2, "title", "empty title"),
    ({"Y_metadata_txt": "long zero\n"}, "Y_metadata.txt", 2, "metadata", "1 lines but Y.txt has 3"),
]


@pytest.mark.parametrize(("override", "name", "row", "field", "fragment"), XC_BOW_ERRORS)
def test_xc_bow_errors(tmp_path: Path, override: dict, name: str, row: int, field: str, fragment: str) -> None:
    with pytest.raises(DataError, match=where(name, row, field) + ".*" + re.escape(fragment)):
        read_xc_bow(make_bow(tmp_path, **override))


def test_xc_bow_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tst_X_Y.txt: file not found"):
        read_xc_bow(make_bow(tmp_path, tst_X_Y_txt=None))


# ------------------------------------------------------------------------------------------------------ click logs

CSV_HEADER = "query,doc_id,clicks,timestamp\n"
CSV = CSV_HEADER + (
    "red shoes,d1,3,2024-01-02T03:04:05\n"
    "red shoes,d2,1,2024-01-02 03:04:05.250\n"
    '"shoes, blue",d1,2,2024-01-02\n'
    "boots,d3, 4 ,2024-01-02T03:04:05Z\n"
    "boots,d1,5,2024-01-02T05:04:05.5+02:00\n"
)
EXPECTED_CLICKS = frame([
    ("red shoes", "d1", 3, None, None, datetime(2024, 1, 2, 3, 4, 5)),
    ("red shoes", "d2", 1, None, None, datetime(2024, 1, 2, 3, 4, 5, 250000)),
    ("shoes, blue", "d1", 2, None, None, datetime(2024, 1, 2)),
    ("boots", "d3", 4, None, None, datetime(2024, 1, 2, 3, 4, 5)),
    ("boots", "d1", 5, None, None, datetime(2024, 1, 2, 3, 4, 5, 500000)),
], CLICKS_SCHEMA)


def test_click_log_csv(tmp_path: Path) -> None:
    with_extra_column = "".join(f"{line},x\n" for line in CSV.splitlines())  # extra columns are dropped
    path = write(tmp_path / "drop.csv", with_extra_column)
    result = read_click_log(path, known_doc_ids=pl.Series(["d1", "d2", "d3", "d4"]))
    assert_frame_equal(result, EXPECTED_CLICKS)


def test_click_log_parquet_with_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "drop.parquet"
    berlin = pl.col("timestamp").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Berlin")
    EXPECTED_CLICKS.with_columns(berlin, pl.col("clicks").cast(pl.Int32)).write_parquet(path)  # empty columns too
    assert_frame_equal(read_click_log(path), EXPECTED_CLICKS)
    iso = pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
    (EXPECTED_CLICKS.drop("impressions", "position").with_columns(iso, pl.col("clicks").cast(pl.Float64))
     .write_parquet(path))
    assert_frame_equal(read_click_log(path), EXPECTED_CLICKS)


IMPRESSIONS_CSV = ("query,doc_id,clicks,impressions,position,timestamp\n"
                   "red shoes,d1,2,5,1,2024-01-02\n"
                   "red shoes,d2,0,5,2,2024-01-02\n"
                   "boots,d3,1,1,7,2024-01-03\n")


def test_click_log_with_impressions_and_positions(tmp_path: Path) -> None:
    result = read_click_log(write(tmp_path / "drop.csv", IMPRESSIONS_CSV), known_doc_ids=pl.Series(["d1", "d2", "d3"]))
    assert result.select("query", "doc_id", "clicks", "impressions", "position").rows() == [
        ("red shoes", "d1", 2, 5, 1), ("red shoes", "d2", 0, 5, 2), ("boots", "d3", 1, 1, 7)]
    assert result.schema == pl.Schema(CLICKS_SCHEMA)


def test_click_log_one_row_per_impression(tmp_path: Path) -> None:
    path = tmp_path / "drop.parquet"
    pl.DataFrame({"query": ["q", "q", "r"], "doc_id": ["d1", "d2", "d1"], "clicked": [1, 0, 0],
                  "position": [1, 2, 1], "timestamp": ["2024-01-02"] * 3}).write_parquet(path)
    result = read_click_log(path)
    assert result.select("doc_id", "clicks", "impressions", "position").rows() == [
        ("d1", 1, 1, 1), ("d2", 0, 1, 2), ("d1", 0, 1, 1)]


IMPRESSION_ERRORS = [
    # (replacement of data row 2 = line 3, field, message fragment)
    ("red shoes,d2,6,5,2,2024-01-02", "clicks", "must not exceed the row's impressions, got '6'"),
    ("red shoes,d2,0,0,2,2024-01-02", "impressions", "positive integer, got '0'"),
    ("red shoes,d2,0,,2,2024-01-02", "impressions", "positive integer, got None"),
    ("red shoes,d2,0,2.5,2,2024-01-02", "impressions", "got '2.5'"),
    ("red shoes,d2,-1,5,2,2024-01-02", "clicks", ">= 0, got '-1'"),
    ("red shoes,d2,0,5,0,2024-01-02", "position", "positive integer (1 = top), got '0'"),
    ("red shoes,d2,0,5,1.5,2024-01-02", "position", "got '1.5'"),
    ("red shoes,d2,0,5,top,2024-01-02", "position", "got 'top'"),
]


@pytest.mark.parametrize(("line", "field", "fragment"), IMPRESSION_ERRORS)
def test_click_log_impression_errors(tmp_path: Path, line: str, field: str, fragment: str) -> None:
    lines = IMPRESSIONS_CSV.splitlines()
    path = write(tmp_path / "drop.csv", "\n".join(lines[:2] + [line] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=where("drop.csv", 3, field) + ".*" + re.escape(fragment)):
        read_click_log(path)


def test_click_log_per_impression_errors(tmp_path: Path) -> None:
    header = "query,doc_id,clicked,timestamp\n"
    path = write(tmp_path / "drop.csv", header + "q,d1,1,2024-01-02\nq,d2,2,2024-01-02\n")
    with pytest.raises(DataError, match=where("drop.csv", 3, "clicked") + ".*0 or 1, got '2'"):
        read_click_log(path)
    path = write(tmp_path / "drop.csv", "query,doc_id,clicked,clicks,timestamp\nq,d1,1,1,2024-01-02\n")
    with pytest.raises(DataError, match=where("drop.csv", None, "clicks") + ".*use one shape per drop"):
        read_click_log(path)


def test_click_log_empty_csv(tmp_path: Path) -> None:
    assert_frame_equal(read_click_log(write(tmp_path / "drop.csv", CSV_HEADER)), pl.DataFrame(schema=CLICKS_SCHEMA))


CSV_ERRORS = [
    # (replacement of data row 2 = line 3, field, message fragment)
    (",d2,1,2024-01-02", "query", "empty query"),
    ("  ,d2,1,2024-01-02", "query", "empty query"),
    ("q,,1,2024-01-02", "doc_id", "empty doc_id"),
    ("q,d2,2.5,2024-01-02", "clicks", "positive integer, got '2.5'"),
    ("q,d2,many,2024-01-02", "clicks", "got 'many'"),
    ("q,d2,,2024-01-02", "clicks", "got None"),
    ("q,d2,0,2024-01-02", "clicks", "got '0'"),
    ("q,d2,-3,2024-01-02", "clicks", "got '-3'"),
    ("q,d2,1,2024-13-02", "timestamp", "got '2024-13-02'"),
    ("q,d2,1,02/01/2024", "timestamp", "ISO 8601"),
    ("q,d2,1,2024-01-02T25:04:05", "timestamp", "got '2024-01-02T25:04:05'"),
    ("q,d2,1,2024-01-02T03:04:05 UTC", "timestamp", "got '2024-01-02T03:04:05 UTC'"),
    ("q,d2,1,", "timestamp", "got None"),
    ("q,dX,1,2024-01-02", "doc_id", "unknown doc id 'dX'"),
]


@pytest.mark.parametrize(("line", "field", "fragment"), CSV_ERRORS)
def test_click_log_csv_errors(tmp_path: Path, line: str, field: str, fragment: str) -> None:
    lines = CSV.splitlines()
    path = write(tmp_path / "drop.csv", "\n".join(lines[:2] + [line] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=where("drop.csv", 3, field) + ".*" + re.escape(fragment)):
        read_click_log(path, known_doc_ids=pl.Series(["d1", "d2", "d3"]))


def test_click_log_parquet_rows_are_data_rows(tmp_path: Path) -> None:
    path = tmp_path / "drop.parquet"
    EXPECTED_CLICKS.with_columns(clicks=pl.Series([1, 2, 0, 4, 5])).write_parquet(path)
    with pytest.raises(DataError, match=where("drop.parquet", 3, "clicks") + ".*got 0"):
        read_click_log(path)
    EXPECTED_CLICKS.with_columns(clicks=pl.Series([3.0, 1.0, 2.0, 4.5, 5.0])).write_parquet(path)
    with pytest.raises(DataError, match=where("drop.parquet", 4, "clicks") + ".*got 4.5"):
        read_click_log(path)
    EXPECTED_CLICKS.write_parquet(path)
    with pytest.raises(DataError, match=where("drop.parquet", 1, "doc_id") + ".*unknown doc id 'd1'"):
        read_click_log(path, known_doc_ids=pl.Series(["d2"]))


def test_click_log_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "drop.csv", "query,doc_id,clicks\nq,d1,1\n")
    with pytest.raises(DataError, match=where("drop.csv", None, "timestamp") + ": missing column"):
        read_click_log(path)


def test_click_log_bad_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "drop.csv", CSV.encode() + b"caf\xe9,d1,1,2024-01-02\n")
    with pytest.raises(DataError, match=where("drop.csv", 7, "query") + ": invalid UTF-8"):
        read_click_log(path)


@pytest.mark.parametrize("name", ["drop.json", "drop.tsv", "drop"])
def test_click_log_unsupported_format(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match=re.escape(name) + ": unsupported click-log format"):
        read_click_log(write(tmp_path / name, CSV))


def test_click_log_unparseable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="drop.parquet: cannot parse"):
        read_click_log(write(tmp_path / "drop.parquet", b"not parquet"))


def test_click_log_timezone_is_utc(tmp_path: Path) -> None:
    path = write(tmp_path / "drop.csv", CSV_HEADER + "q,d1,1,2024-06-01T00:30:00-01:00\n")
    expected = datetime(2024, 6, 1, 1, 30, tzinfo=timezone.utc).replace(tzinfo=None)
    assert read_click_log(path)["timestamp"].to_list() == [expected]


# ------------------------------------------------------------------------------------------ query-side metadata

QUERY_METADATA = QUERIES_SCHEMA | {"metadata": pl.String}


def test_beir_never_imports_its_query_metadata_field(tmp_path: Path) -> None:
    """SciFact's `metadata` of a query holds its labels' evidence: importing it would leak labels."""
    queries = [{"_id": "q1", "text": "first", "metadata": {"d1": [{"sentences": [0], "label": "SUPPORT"}]}},
               {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "third", "metadata": "free text"},
               {"_id": "q4", "text": "dev only"}]
    tables = read_beir(make_beir(tmp_path, queries=jsonl(queries)), title_words=3)
    assert_frame_equal(tables.queries, frame([("q1", "first", "train"), ("q3", "third", "test")], QUERIES_SCHEMA))


def test_xc_raw_keeps_the_content_of_queries_as_their_metadata(tmp_path: Path) -> None:
    trn = [dict(TRN[0], content="Query A's article text"), *TRN[1:]]
    tables = read_xc_raw(make_xc_raw(tmp_path, trn=trn))
    assert tables.queries.columns == ["query_id", "text", "split", "metadata"]
    assert tables.queries["metadata"].to_list() == ["Query A's article text", "", "", ""]
    # every query's content empty (as in many XC files): no metadata column
    assert read_xc_raw(make_xc_raw(tmp_path / "empty")).queries.columns == list(QUERIES_SCHEMA)


@pytest.mark.parametrize("field", ["description", "metadata.description"])
def test_beir_imports_the_query_metadata_field_the_spec_names(tmp_path: Path, field: str) -> None:
    """A named field (top level, or inside BEIR's `metadata` object) is the query's metadata; a query without it
    reads as empty."""
    def record(qid, text, description=None):
        if description is None:
            return {"_id": qid, "text": text}
        return ({"_id": qid, "text": text, "description": description} if field == "description"
                else {"_id": qid, "text": text, "metadata": {"description": description}})

    queries = [record("q1", "first", "the first query's article"), record("q2", "second"),
               record("q3", "third", "the third's"), record("q4", "dev only", "never imported")]
    tables = read_beir(make_beir(tmp_path, queries=jsonl(queries)), title_words=3, query_metadata_field=field)
    assert_frame_equal(tables.queries, frame([("q1", "first", "train", "the first query's article"),
                                              ("q3", "third", "test", "the third's")], QUERY_METADATA))


def test_beir_query_metadata_field_of_another_type_names_the_row(tmp_path: Path) -> None:
    queries = [{"_id": "q1", "text": "first", "description": ["not", "text"]}, {"_id": "q3", "text": "third"}]
    with pytest.raises(DataError, match="'description' must be a string") as error:
        read_beir(make_beir(tmp_path, queries=jsonl(queries)), title_words=3, query_metadata_field="description")
    assert error.value.row == 1 and error.value.field == "description"


# -------------------------------------------------------------------------------------------------------- registry


def test_the_importer_registry_is_the_one_list_of_formats() -> None:
    """FORMATS, the dataset spec's `format` and the readers all come from IMPORTERS: a format is added there only."""
    from typing import get_args

    from skim_assets.lib.datasets import DatasetSpec, Format
    from skim_assets.lib.importers import FORMATS, IMPORTERS

    assert FORMATS == tuple(IMPORTERS) == ("beir", "xc-raw", "xc-bow")
    assert get_args(Format) == FORMATS == get_args(DatasetSpec.model_fields["format"].annotation)
    assert [IMPORTERS[f].read for f in FORMATS] == [read_beir, read_xc_raw, read_xc_bow]
    for name, importer in IMPORTERS.items():
        assert importer.name == name and importer.description and importer.expects
        assert set(importer.options) <= set(DatasetSpec.model_fields)  # options are dataset settings


def test_an_unknown_format_is_refused_naming_it_and_the_known_ones(tmp_path: Path) -> None:
    from skim_assets.lib.datasets import DatasetSpec, import_tables, read_spec
    from skim_assets.lib.importers import UnknownFormat, importer_for, read_dataset

    make_bow(tmp_path / "raw")
    known = re.escape("known formats: beir, xc-raw, xc-bow")
    for call in (lambda: importer_for("parquet"), lambda: read_dataset(tmp_path / "raw", "parquet")):
        with pytest.raises(UnknownFormat, match=rf"unknown format 'parquet'; {known}"):
            call()
    # a spec that skipped validation is refused too, never read as XC-BOW (the old if chain's last branch)
    settings = DatasetSpec(source=str(tmp_path / "raw")).model_dump() | {"format": "parquet"}
    spec = DatasetSpec.model_construct(**settings)
    with pytest.raises(DataError, match=rf"dataset.json, field 'format': unknown format 'parquet'; {known}"):
        import_tables(tmp_path, spec)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "parquet", "source": "raw"}))
    with pytest.raises(DataError, match=r"format must be one of 'beir', 'xc-raw' or 'xc-bow', got 'parquet'"):
        read_spec(tmp_path)


def test_read_dataset_dispatches_by_the_registry_and_passes_each_format_its_options(tmp_path: Path) -> None:
    from skim_assets.lib.importers import read_dataset

    options = {"title_words": 3, "dev_split": "ignore", "query_metadata_field": ""}
    assert_frame_equal(read_dataset(make_beir(tmp_path / "beir"), "beir", **options).documents,
                       read_beir(tmp_path / "beir", title_words=3).documents)
    # BEIR's settings mean nothing to the XC readers: they are not passed on
    assert_frame_equal(read_dataset(make_bow(tmp_path / "bow"), "xc-bow", **options).qrels,
                       read_xc_bow(tmp_path / "bow").qrels)
    assert_frame_equal(read_dataset(make_xc_raw(tmp_path / "raw"), "xc-raw", **options).queries,
                       read_xc_raw(tmp_path / "raw").queries)


def test_formats_are_detected_by_the_files_their_importer_expects(tmp_path: Path) -> None:
    from skim_assets.lib.importers import detect_formats

    assert detect_formats(make_beir(tmp_path / "beir", gz=True)) == ["beir"]
    assert detect_formats(make_xc_raw(tmp_path / "raw")) == ["xc-raw"]
    assert detect_formats(make_bow(tmp_path / "bow")) == ["xc-bow"]
    assert detect_formats(make_bow(tmp_path / "half", tst_X_Y_txt=None)) == []
    assert detect_formats(tmp_path / "nowhere") == []


def test_a_folder_of_another_format_is_named_at_import(tmp_path: Path) -> None:
    from skim_assets.lib.datasets import DatasetSpec, import_tables

    make_bow(tmp_path / "raw")
    with pytest.raises(DataError, match=r"not a beir folder \(no corpus.jsonl, queries.jsonl\) but a xc-bow one: "
                                        r"import it with format xc-bow \(--format xc-bow\)"):
        import_tables(tmp_path, DatasetSpec(source="raw"))
    assert import_tables(tmp_path, DatasetSpec(source="raw", format="xc-bow")).documents.height == 3
    # a folder of no known format keeps the reader's own error: the file it looked for first
    with pytest.raises(DataError, match="corpus.jsonl: file not found"):
        import_tables(tmp_path, DatasetSpec(source=str(tmp_path)))
