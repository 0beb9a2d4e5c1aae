"""Issue 11: reliability and security. Each test reproduces one defect found by a hostile user."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from skim_assets.cli import main
from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset
from skim_assets.lib.formats import QUERIES_SCHEMA, DataError
from skim_assets.partitions import dataset_partitions
from skim_assets.resources import StorageResource, storage_resources
from skim_assets_tests.conftest import materialize_selected

SECRET = "sk-PROBE-SECRET-1234567"


@pytest.fixture
def demo_source(tmp_path) -> Path:
    source = tmp_path / "raw"
    write_demo_dataset(source, DemoWorldConfig(n_documents=20))
    return source


def _materialize(assets, root, dataset, instance=None):
    instance = instance or dg.DagsterInstance.ephemeral()
    if dataset not in instance.get_dynamic_partitions(dataset_partitions.name):
        instance.add_dynamic_partitions(dataset_partitions.name, [dataset])
    return materialize_selected(assets, partition_key=dataset, instance=instance, resources=storage_resources(root),
                                raise_on_error=False)


def _tables(root: Path, dataset: str) -> dict[str, pl.DataFrame]:
    return {asset: pl.read_parquet(root / asset / dataset / "data.parquet")
            for asset in ("documents", "queries", "relevance_labels")}


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# ------------------------------------------------------------------------------------ 1. path escape via the name


@pytest.mark.parametrize("name", ["../../escape", "/tmp/escape", "..", "a/../../b"])
def test_storage_refuses_partition_keys_outside_the_root(storage_root, name):
    storage = StorageResource(root=str(storage_root))
    for call in (lambda: storage.inputs(name), lambda: storage.artifact_dir("documents", name),
                 lambda: storage.table_path("documents", name),
                 lambda: storage.write_table("documents", name, pl.DataFrame({"a": [1]}))):
        with pytest.raises(ValueError, match="dataset name"):
            call()
    with pytest.raises(ValueError, match="outside the storage root"):
        storage.table_path("../elsewhere", "ok")
    assert sorted(p.name for p in storage_root.parent.iterdir()) == ["root"]


def test_materialize_refuses_a_name_that_escapes_the_root(cli_env, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr("skim_assets.cli.materialize_dataset", lambda name, *a, **k: ran.append(name) or True)
    monkeypatch.setattr("skim_assets.cli.print_report", lambda *a: 0)
    assert main(["--root", str(cli_env), "materialize", "ok", "../../escape"]) == 2
    assert "dataset name '../../escape'" in _one_line(capsys.readouterr().err)
    assert ran == []  # no name runs when one is bad
    home = cli_env.parent / "dagster_home"
    assert not home.exists() or dg.DagsterInstance.get().get_dynamic_partitions("dataset") == []


def test_sensors_skip_registered_keys_that_escape_the_root(storage_root, tiny_demo):
    from skim_assets.sensors import click_log_sensor

    outside = storage_root / "x"  # where `inputs/../x` and `documents/../x` lead
    (outside / "clicks").mkdir(parents=True)
    (outside / "clicks" / "drop.csv").write_text("query,doc_id,clicks,timestamp\nq,D00001,1,2026-01-01\n")
    pl.DataFrame({"a": [1]}).write_parquet(outside / "data.parquet")
    for asset in ("documents", "train_pairs"):  # so that `<asset>/../x/data.parquet` exists
        (storage_root / asset).mkdir()
    resources = {"storage": StorageResource(root=str(storage_root))}
    (storage_root.parent / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(storage_root.parent / "dagster_home"))  # not closed: see
    instance.add_dynamic_partitions(dataset_partitions.name, ["../x"])               # test_operations.py
    result = click_log_sensor(dg.build_sensor_context(instance=instance, cursor=None, resources=resources))
    assert result.run_requests == []


# ------------------------------------------------------------------------------------- 2. click logs and test queries


def test_clicks_never_credit_test_queries_and_count_once(tmp_path):
    from skim_assets.lib.clicklogs import aggregate_click_logs

    documents = pl.DataFrame({"doc_id": ["d1", "d2", "d3"], "title": ["a", "b", "c"], "metadata": ["", "", ""]})
    queries = pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4"],
                            "text": ["red shoes ", "green cap", "red shoes", "blue hat"],
                            "split": ["train", "test", "train", "test"]}, schema=QUERIES_SCHEMA)
    drop = tmp_path / "drop.csv"
    drop.write_text("query,doc_id,clicks,timestamp\nred shoes,d1,4,2026-01-01\nblue hat,d2,2,2026-01-01\n"
                    " blue hat ,d3,1,2026-01-02\nnew text,d3,5,2026-01-01\n")
    ingest = aggregate_click_logs([drop], documents, queries)
    new_text = "click-" + hashlib.sha1(b"new text").hexdigest()[:16]
    # "red shoes" reuses the smallest train id of that (whitespace-normalised) text; "blue hat", a test query's
    # text, becomes no train query and no pair (it would train on q4's test labels)
    assert sorted(ingest.pairs.select("query_id", "doc_id").rows()) == sorted([("q1", "d1"), (new_text, "d3")])
    assert not set(ingest.pairs["query_id"]) & {"q2", "q4"}
    assert ingest.new_queries["text"].to_list() == ["new text"]
    assert (ingest.test_text_pairs, ingest.test_text_clicks) == (2, 3)
    assert ingest.aggregate["clicks"].sum() == 9  # what the drop holds for the pairs kept, each click once


# ------------------------------------------------------------------------------------------ 3. API key in errors


@pytest.mark.parametrize("cut", [300, 200])
def test_an_error_body_cut_through_the_key_leaks_none_of_it(httpserver, tmp_path, cut):
    from skim_assets.lib.teachers import OpenAIChatTeacher, TeacherRequest

    body = "x" * (cut - len(" Bearer ") - len(SECRET) + 1) + f" Bearer {SECRET} rest"  # cut before the key's end
    status = 401 if cut == 300 else 200  # 200 with a non-JSON body: the "malformed response" snippet
    httpserver.expect_request("/v1/chat/completions").respond_with_data(body, status=status)
    teacher = OpenAIChatTeacher(httpserver.url_for("/v1"), "gpt-test", api_key=SECRET, max_retries=0,
                                cache_dir=tmp_path / "cache")
    [response] = teacher.complete([TeacherRequest("doc-1", [{"role": "user", "content": "hi"}])])
    assert not response.ok and "x" * 20 in response.error
    assert SECRET[:-1] not in response.error and "PROBE" not in response.error


def test_a_key_echoed_in_an_answer_is_not_cached_or_returned(httpserver, tmp_path):
    from skim_assets.lib.teachers import OpenAIChatTeacher, TeacherRequest

    answer = {"choices": [{"message": {"role": "assistant", "content": f"Queries:\nmy key is {SECRET}\nq2"}}]}
    httpserver.expect_request("/v1/chat/completions").respond_with_json(answer)
    teacher = OpenAIChatTeacher(httpserver.url_for("/v1"), "gpt-test", api_key=SECRET, max_retries=0,
                                cache_dir=tmp_path / "cache")
    [response] = teacher.complete([TeacherRequest("doc-1", [{"role": "user", "content": "hi"}])])
    assert response.ok and SECRET not in response.text and "q2" in response.text
    cached = [p.read_text() for p in (tmp_path / "cache").rglob("*.json")]
    assert cached and all(SECRET not in text for text in cached)


# ------------------------------------------------------------------------------------- 4. qrels first-line header


def _beir(folder: Path, train: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d0", "title": "t0", "text": "x"}\n'
                                         '{"_id": "d1", "title": "t1", "text": "y"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q0", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    (folder / "qrels" / "train.tsv").write_text(train)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_a_headerless_qrels_file_with_a_bad_first_score_fails(tmp_path):
    from skim_assets.lib.importers import read_beir

    with pytest.raises(DataError, match=re.escape("train.tsv, row 1, field 'score'") + ".*'one'"):
        read_beir(_beir(tmp_path / "a", "q0\td0\tone\nq0\td1\t1\n"))
    kept = read_beir(_beir(tmp_path / "b", "q0\td0\t1\nq0\td1\t1\n"))  # headerless: line 1 is data
    assert kept.qrels.height == 3
    for header in ("query-id\tcorpus-id\tscore", "Query_ID\tCorpus_ID\tScore"):
        assert read_beir(_beir(tmp_path / header[:5], f"{header}\nq0\td0\t1\n")).qrels.height == 2


# ------------------------------------------------------------------------------------ 5. a trailing newline in a name


def test_a_name_with_a_trailing_newline_is_refused(cli_env, demo_source, capsys):
    from skim_assets.lib.layout import check_dataset_name

    for name in ("ok\n", "ok\n\n", "\nok", "ok/x", "ok x", ""):
        with pytest.raises(ValueError, match="dataset name"):
            check_dataset_name(name)
    assert main(["--root", str(cli_env), "import", "ok\n", str(demo_source)]) == 2
    assert "dataset name 'ok\\n'" in _one_line(capsys.readouterr().err)
    assert not (cli_env / "inputs").exists() or list((cli_env / "inputs").iterdir()) == []


def test_the_folder_sensor_ignores_a_folder_named_with_a_trailing_newline(storage_root):
    from skim_assets.sensors import dataset_folder_sensor

    (storage_root / "inputs" / "ok\n").mkdir(parents=True)
    (storage_root / "inputs" / "ok\n" / "dataset.json").write_text(json.dumps({"format": "beir"}))
    resources = {"storage": StorageResource(root=str(storage_root))}
    result = dataset_folder_sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=None,
                                                           resources=resources))
    assert result.run_requests == [] and result.dynamic_partitions_requests == []


# --------------------------------------------------------------------------------- 6. artifacts written as one set


class _KilledWrite(Exception):
    pass


def _kill_on_write(monkeypatch, nth: int) -> list:
    """Make the `nth` Parquet write of this test (1-based) die, as a SIGKILL between two writes would."""
    calls, original = [], pl.DataFrame.write_parquet

    def write(self, file, *args, **kwargs):
        calls.append(str(file))
        if len(calls) == nth:
            raise _KilledWrite(f"killed while writing {file}")
        return original(self, file, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write)
    return calls


def test_import_tables_are_written_as_one_set(storage_root, tiny_demo, monkeypatch):
    from skim_assets.assets.datasets import dataset_tables

    assert _materialize([dataset_tables], storage_root, "tiny").success
    before = _tables(storage_root, "tiny")
    corpus = tiny_demo / "corpus.jsonl"  # a new import: one document renamed
    corpus.write_text(corpus.read_text().replace('"title": "', '"title": "Renamed ', 1))

    _kill_on_write(monkeypatch, 2)
    result = _materialize([dataset_tables], storage_root, "tiny")
    assert not result.success
    assert result.get_asset_materialization_events() == []  # Dagster records nothing of the killed run
    after = _tables(storage_root, "tiny")
    assert all(after[asset].equals(before[asset]) for asset in before)  # all old

    monkeypatch.undo()
    assert _materialize([dataset_tables], storage_root, "tiny").success
    new = _tables(storage_root, "tiny")
    assert new["documents"]["title"][0].startswith("Renamed ")  # all new
    versions = list((storage_root / ".sets" / "dataset_tables" / "tiny").glob("v-*"))
    assert len(versions) == 2  # the new one and the previous (a reader may hold it); older ones are removed


def test_click_log_pairs_are_written_as_one_set(storage_root, tiny_demo, monkeypatch):
    from skim_assets.assets.datasets import click_log_pairs, dataset_tables

    instance = dg.DagsterInstance.ephemeral()
    assert _materialize([dataset_tables], storage_root, "tiny", instance).success
    (tiny_demo / "clicks").mkdir()
    (tiny_demo / "clicks" / "a.csv").write_text("query,doc_id,clicks,timestamp\nfirst words,D00001,1,2026-01-01\n")
    assert _materialize([click_log_pairs], storage_root, "tiny", instance).success
    folder = storage_root / "click_log_pairs" / "tiny"
    before = {name: pl.read_parquet(folder / f"{name}.parquet") for name in ("data", "queries", "aggregate")}
    (tiny_demo / "clicks" / "b.csv").write_text("query,doc_id,clicks,timestamp\nother words,D00002,1,2026-01-02\n")

    _kill_on_write(monkeypatch, 3)  # the drop's cache entry, then the first table, then the second dies
    assert not _materialize([click_log_pairs], storage_root, "tiny", instance).success
    assert all(pl.read_parquet(folder / f"{name}.parquet").equals(frame) for name, frame in before.items())
    monkeypatch.undo()
    assert _materialize([click_log_pairs], storage_root, "tiny", instance).success
    assert pl.read_parquet(folder / "queries.parquet").height == 2


def _value(root: Path, asset: str) -> str:
    return pl.read_parquet(root / asset / "ds" / "data.parquet")["v"][0]


def test_a_table_set_adopts_folders_written_before_sets_without_mixing(tmp_path, monkeypatch):
    from skim_assets.lib.catalogue import refresh_catalogue
    from skim_assets.lib.storage import write_parquet_atomic, write_table_set

    root = tmp_path / "root"
    for asset in ("documents", "queries"):  # a root from before table sets: plain folders
        write_parquet_atomic(pl.DataFrame({"v": ["old"]}), root / asset / "ds" / "data.parquet")
    new = {asset: {"data": pl.DataFrame({"v": ["new"]})} for asset in ("documents", "queries")}
    _kill_on_write(monkeypatch, 2)
    with pytest.raises(_KilledWrite):
        write_table_set(root, "step", "ds", new)
    assert [_value(root, asset) for asset in ("documents", "queries")] == ["old", "old"]
    monkeypatch.undo()
    write_table_set(root, "step", "ds", new)
    assert [_value(root, asset) for asset in ("documents", "queries")] == ["new", "new"]
    assert (root / "documents" / "ds").is_symlink()
    refresh_catalogue(root)
    import duckdb

    with duckdb.connect(str(root / "skim.duckdb")) as con:
        assert con.execute("SELECT v, dataset FROM documents").fetchall() == [("new", "ds")]


# ---------------------------------------------------------------------------- 7. register before writing the spec


def test_import_registers_the_partition_before_it_writes_dataset_json(cli_env, demo_source, monkeypatch):
    def killed(name, instance):
        raise _KilledWrite("killed before registering")

    monkeypatch.setattr("skim_assets.cli.register_dataset", killed)
    with pytest.raises(_KilledWrite):
        main(["--root", str(cli_env), "import", "mini", str(demo_source)])
    assert not (cli_env / "inputs" / "mini" / "dataset.json").exists()  # nothing the folder sensor would run


# ---------------------------------------------------------------------------- 8. changed input under the same name


def test_changed_input_under_the_same_name_is_refused_without_replace(cli_env, demo_source, tmp_path, capsys):
    root = str(cli_env)
    assert main(["--root", root, "import", "mini", str(demo_source)]) == 0
    assert main(["--root", root, "import", "mini", str(demo_source)]) == 0  # the same input again: fine
    (cli_env / "base_models" / "mini").mkdir(parents=True)  # an artifact made from the first input
    capsys.readouterr()

    assert main(["--root", root, "import", "mini", str(demo_source), "--exposure-k", "7"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "--replace" in err and "base_models" in err and "exposure_k 100 -> 7" in err
    assert json.loads((cli_env / "inputs" / "mini" / "dataset.json").read_text())["exposure_k"] == 100

    other = tmp_path / "other"  # different data, same settings
    write_demo_dataset(other, DemoWorldConfig(n_documents=20, seed=9))
    from skim_assets.lib.datasets import import_tables, read_spec

    tables = import_tables(cli_env / "inputs" / "mini", read_spec(cli_env / "inputs" / "mini"))
    (cli_env / "documents" / "mini").mkdir(parents=True)
    tables.documents.write_parquet(cli_env / "documents" / "mini" / "data.parquet")
    assert main(["--root", root, "import", "mini", str(other)]) == 2
    assert "documents differ" in capsys.readouterr().err

    for state in ("slm_size_students", "embedding_cache", "synthetic_queries_shards", "lora_checkpoints"):
        (cli_env / state / "mini").mkdir(parents=True)  # a step's working state, never an artifact
    assert main(["--root", root, "import", "mini", str(other), "--replace"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "stale" in err and "base_models, documents" in err
    assert not any(state in err for state in ("slm_size_students", "embedding_cache", "_shards", "checkpoints"))
    assert json.loads((cli_env / "inputs" / "mini" / "dataset.json").read_text())["source"] == str(other)


# -------------------------------------------------------------------------------------------- 9. smaller ones


def _no_job(*args, **kwargs):
    raise AssertionError("a job ran")


@pytest.mark.parametrize("command", [["materialize", "bad name"], ["report", "../x"], ["import", "../x", "."]])
def test_invalid_names_print_one_line_and_exit_2(cli_env, command, capsys, monkeypatch):
    monkeypatch.setattr("skim_assets.cli.materialize_dataset", _no_job)
    assert main(["--root", str(cli_env), *command]) == 2
    assert "dataset name" in _one_line(capsys.readouterr().err)


def test_a_self_looping_source_prints_one_line_and_exits_2(cli_env, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert main(["--root", str(cli_env), "import", "mini", str(loop)]) == 2
    assert "loop" in _one_line(capsys.readouterr().err)


def test_a_source_that_is_a_file_is_not_reported_missing(cli_env, tmp_path, capsys):
    source = tmp_path / "corpus.jsonl"
    source.write_text("{}\n")
    assert main(["--root", str(cli_env), "import", "mini", str(source)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "is not a folder" in err and "does not exist" not in err


def test_a_click_total_that_overflows_names_file_row_and_field(tmp_path):
    from skim_assets.lib.clicklogs import aggregate_click_logs

    documents = pl.DataFrame({"doc_id": ["d1"], "title": ["a"], "metadata": [""]})
    queries = pl.DataFrame(schema=QUERIES_SCHEMA)
    (tmp_path / "a.csv").write_text(f"query,doc_id,clicks,timestamp\nq,d1,{2**63 - 1},2026-01-01\n")
    (tmp_path / "b.csv").write_text('query,doc_id,clicks,timestamp\nother,d1,1,2026-01-01\n'
                                    '"two\nlines",d1,1,2026-01-01\n'
                                    ' q ,d1,1,2026-01-02\n')  # the query is trimmed: it adds to 'q'
    with pytest.raises(DataError, match=re.escape("b.csv, row 5, field 'clicks'") + ".*add up past"):
        aggregate_click_logs([tmp_path / "a.csv", tmp_path / "b.csv"], documents, queries)


def test_csv_rows_after_a_quoted_newline_are_file_lines(tmp_path):
    from skim_assets.lib.importers import read_click_log

    path = tmp_path / "drop.csv"
    path.write_text('query,doc_id,clicks,timestamp\n"two\nlines",d1,1,2026-01-01\nq,d1,many,2026-01-01\n')
    with pytest.raises(DataError, match=re.escape("drop.csv, row 4, field 'clicks'")):
        read_click_log(path)


def test_a_csv_row_with_an_extra_value_names_its_row(tmp_path):
    from skim_assets.lib.importers import read_click_log

    path = tmp_path / "drop.csv"
    path.write_text("query,doc_id,clicks,timestamp\nq,d1,1,2026-01-01\nq,d1,1,2026-01-01,extra\n")
    with pytest.raises(DataError, match=re.escape("drop.csv, row 3") + ": 5 values but the header names 4"):
        read_click_log(path)


def test_orphans_of_killed_writes_are_cleaned_by_the_next_write(tmp_path):
    from skim_assets.lib.storage import ORPHAN_AGE_S, write_json_atomic, write_parquet_atomic

    target = tmp_path / "a" / "data.parquet"
    target.parent.mkdir()
    old_orphan, live = target.parent / ".data.parquet.k1ll3d.tmp", target.parent / ".data.parquet.w0rk1ng.tmp"
    old_orphan.write_bytes(b"half")
    live.write_bytes(b"being written right now")
    past = time.time() - ORPHAN_AGE_S - 5
    os.utime(old_orphan, (past, past))
    write_parquet_atomic(pl.DataFrame({"a": [1]}), target)
    assert not old_orphan.exists() and live.exists()  # a write in progress elsewhere is left alone
    orphan = tmp_path / ".spec.json.x.tmp"
    orphan.write_text("{")
    os.utime(orphan, (past, past))
    write_json_atomic({}, tmp_path / "spec.json")
    assert not orphan.exists()


def test_artifacts_follow_the_umask(tmp_path):
    from skim_assets.lib.storage import write_json_atomic, write_parquet_atomic, write_table_set

    previous = os.umask(0o022)
    try:
        table = write_parquet_atomic(pl.DataFrame({"a": [1]}), tmp_path / "t" / "data.parquet")
        spec = write_json_atomic({}, tmp_path / "dataset.json")
        in_set = write_table_set(tmp_path, "s", "ds", {"x": {"data": pl.DataFrame({"a": [1]})}})["x"]["data"]
    finally:
        os.umask(previous)
    assert [oct(p.stat().st_mode & 0o777) for p in (table, spec, in_set)] == ["0o644"] * 3


def test_a_dataset_without_test_queries_imports_with_a_warning(cli_env, tmp_path, capsys):
    source = _beir(tmp_path / "src", "q0\td0\t1\n")
    (source / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert main(["--root", str(cli_env), "import", "notest", str(source)]) == 0
    assert "warning: notest: no test queries" in capsys.readouterr().err


def test_invalid_utf8_in_a_beir_file_names_the_field(tmp_path):
    from skim_assets.lib.importers import read_beir

    source = _beir(tmp_path / "src", "q0\td0\t1\n")
    (source / "corpus.jsonl").write_bytes(b'{"_id": "d0", "title": "t0", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=re.escape("corpus.jsonl, row 1, field 'text'") + ": invalid UTF-8"):
        read_beir(source)


def test_the_catalogue_makes_no_views_of_caches_and_shards(tmp_path):
    from skim_assets.lib.catalogue import refresh_catalogue
    from skim_assets.lib.storage import write_parquet_atomic

    frame = pl.DataFrame({"a": [1]})
    write_parquet_atomic(frame, tmp_path / "documents" / "ds" / "data.parquet")
    for junk in ("click_log_cache/ds/0123abcd.parquet", "synthetic_queries_shards/ds/shard-00000.parquet",
                 "mapping_state/ds/candidates.parquet", "inputs/ds/clicks.parquet"):
        write_parquet_atomic(frame, tmp_path / junk)
    assert refresh_catalogue(tmp_path) == ["documents"]


def test_table_previews_are_dagster_tables_with_the_schema_and_cut_cells(tmp_path):
    from skim_assets.resources.artifacts import PREVIEW_CELL_CHARS, table_metadata

    frame = pl.DataFrame({"id": ["a", "b"], "text": ["one | two\nthree\\", "x" * 500], "x|y": [1, None]})
    metadata = table_metadata(frame, tmp_path / "t.parquet")
    assert [(c.name, c.type) for c in metadata["dagster/column_schema"].columns] == [
        ("id", "String"), ("text", "String"), ("x|y", "Int64")]
    preview = metadata["preview"]
    assert isinstance(preview, dg.TableMetadataValue)
    assert [c.name for c in preview.schema.columns] == ["id", "text", "x|y"]
    first, second = (record.data for record in preview.records)
    assert first == {"id": "a", "text": "one | two\nthree\\", "x|y": 1}  # a table cell needs no escaping
    assert second["text"] == "x" * PREVIEW_CELL_CHARS and second["x|y"] is None
    assert metadata["dagster/row_count"] == 2
