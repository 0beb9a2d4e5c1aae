"""The `catalogue` demo world: the products world's knowledge structure at any size, long-tailed, vectorised."""

import hashlib
import json
import re
import time

import polars as pl
import pytest

from skim_assets.lib.catalogue_world import (
    FACT_KINDS,
    KINDS,
    contained_values,
    generate_catalogue_world,
    label_statistics,
    write_catalogue_dataset,
)
from skim_assets.lib.datasets import import_tables, read_spec
from skim_assets.lib.demo import (
    CATALOGUE_FIELDS,
    QUERY_TEMPLATES,
    DemoWorldConfig,
    generate_demo_world,
    write_demo_dataset,
)


def catalogue(n: int, **kwargs) -> DemoWorldConfig:
    return DemoWorldConfig(n_documents=n, world="catalogue", **kwargs)


@pytest.fixture(scope="module")
def world_20k():
    return generate_catalogue_world(catalogue(20_000))


def test_same_seed_same_world_and_another_seed_differs():
    first, again = generate_catalogue_world(catalogue(3_000)), generate_catalogue_world(catalogue(3_000))
    assert first.keys() == again.keys()
    assert all(first[name].equals(again[name]) for name in first)
    other = generate_catalogue_world(catalogue(3_000, seed=99))
    assert not other["documents"].equals(first["documents"])
    assert not other["facts"].equals(first["facts"])
    # generate_demo_world dispatches to the same frames
    assert generate_demo_world(catalogue(3_000))["documents"].equals(first["documents"])


def test_label_frequencies_are_long_tailed_and_vocabularies_grow(world_20k):
    stats = label_statistics(world_20k)
    small = label_statistics(generate_catalogue_world(catalogue(2_000)))
    median, largest = stats["median_docs_per_fact"], stats["max_docs_per_fact"]
    assert 2 <= median <= 10  # most facts are shared by a handful of products...
    assert largest >= 20 * median  # ...a few by very many (a concrete heavy head)
    assert largest <= 0.05 * stats["documents"]
    for kind in FACT_KINDS:
        assert stats["per_kind"][kind]["max_docs"] >= 20 * stats["per_kind"][kind]["median_docs"]
        assert 8 <= stats["vocabulary_all"][kind] / small["vocabulary_all"][kind] <= 12  # V ∝ n
        assert stats["vocabulary"][kind] >= 0.9 * stats["vocabulary_all"][kind]  # most values have a product
    # categories grow slower (∝ sqrt n) and are broad labels
    assert 2.5 <= stats["vocabulary_all"]["category"] / small["vocabulary_all"]["category"] <= 4
    assert stats["per_kind"]["category"]["median_docs"] > 5 * median
    assert stats["facts_with_one_or_two_docs"] > 0.05  # a real tail of rare facts


def test_structure_every_label_is_a_stated_fact(world_20k):
    documents, facts, queries = world_20k["documents"], world_20k["facts"], world_20k["queries"]
    n = documents.height
    # exactly one value of each kind per document
    assert facts.height == n and facts["_id"].equals(documents["_id"])
    assert facts.select(KINDS).null_count().sum_horizontal().item() == 0
    assert documents["title"].n_unique() == n and documents["_id"].n_unique() == n
    assert queries["_id"].n_unique() == queries.height
    vocabulary = world_20k["vocabulary"]
    assert vocabulary["value"].str.to_lowercase().n_unique() == vocabulary.height  # distinct within and across kinds
    assert contained_values(vocabulary["value"].to_list()) == []  # no value is a run of words of another

    for split in ("train", "test"):
        labelled = (world_20k[f"{split}_qrels"]
                    .join(queries.rename({"_id": "query_id"}), on="query_id")
                    .join(documents.rename({"_id": "doc_id"}), on="doc_id")
                    .join(facts.rename({"_id": "doc_id"}), on="doc_id"))
        assert labelled.height == world_20k[f"{split}_qrels"].height
        assert (labelled["split"] == split).all()
        # the document has the query's fact, and its metadata states it
        has_fact = pl.coalesce([pl.when(pl.col("kind") == k).then(pl.col(k)) for k in KINDS]) == pl.col("value")
        assert labelled.select(has_fact.all()).item()
        assert labelled.select(pl.col("text_right").str.contains(pl.col("value"), literal=True).all()).item()
        # complete: a query's labels are every product with that fact
        per_query = labelled.group_by("kind", "value", "query_id").len()
        expected = per_query.join(vocabulary, on=["kind", "value"])
        assert (expected["len"] == expected["documents"]).all()
        assert world_20k[f"{split}_qrels"].select(pl.struct(pl.all()).is_unique().all()).item()

    # one train query per phrasing for each fact with a product, and a held-out test phrasing unlike them
    used = vocabulary.filter(pl.col("documents") > 0)
    per_fact = queries.group_by("kind", "value").agg(
        train=pl.col("template").filter(pl.col("split") == "train"),
        test=pl.col("template").filter(pl.col("split") == "test"))
    assert per_fact.height == used.height
    for row in per_fact.iter_rows(named=True):
        assert len(row["train"]) == 1 and len(row["test"]) == 1
        assert row["test"][0] not in row["train"]
        assert set(row["train"] + row["test"]) <= set(QUERY_TEMPLATES[row["kind"]])

    # facts other than the category never appear in a title (as a run of whole words)
    hidden = {v.lower() for v in vocabulary.filter(pl.col("kind") != "category")["value"]}
    title_spans = {" ".join(t[i:j]) for t in (title.lower().split() for title in documents["title"])
                   for i in range(len(t)) for j in range(i + 1, len(t) + 1)}
    assert not hidden & title_spans
    # the category shows in about title_category_rate of the titles
    shown = documents.join(facts, on="_id").select(pl.col("title").str.ends_with(pl.col("category")).mean()).item()
    assert 0.55 <= shown <= 0.65


def test_metadata_states_a_fact_exactly_where_it_is_labelled():
    """As in the products world: the documents whose metadata states a value are exactly the relevant ones."""
    world = generate_catalogue_world(catalogue(3_000))
    documents, queries = world["documents"], world["queries"]
    sample = queries.filter(pl.col("split") == "test").sample(60, seed=3)
    relevant = world["test_qrels"].group_by("query_id").agg("doc_id")
    for query_id, value in sample.select("_id", "value").iter_rows():
        stating = documents.filter(pl.col("text").str.contains(rf"(^|[\s,:]){re.escape(value)}([\s,.]|$)"))
        labels = relevant.filter(pl.col("query_id") == query_id)["doc_id"].item()
        assert set(stating["_id"]) == set(labels), value


def test_test_fraction_holds_out_a_seeded_share_of_facts():
    full = generate_catalogue_world(catalogue(5_000))
    part = generate_catalogue_world(catalogue(5_000, test_fraction=0.3))
    facts = (full["queries"]["split"] == "test").sum()
    tested = (part["queries"]["split"] == "test").sum()
    assert (part["queries"]["split"] == "train").sum() == facts
    assert 0.25 * facts <= tested <= 0.35 * facts
    with pytest.raises(ValueError, match="test_fraction"):
        generate_catalogue_world(catalogue(100, test_fraction=1.5))


def test_generating_and_writing_100k_documents_is_fast(tmp_path):
    start = time.perf_counter()
    counts = write_demo_dataset(tmp_path / "big", catalogue(100_000))
    assert time.perf_counter() - start < 30
    assert counts["documents"] == 100_000
    assert counts["train_pairs"] == 5 * 100_000  # one train phrasing: every product in one query per kind
    with open(tmp_path / "big" / "corpus.jsonl") as lines:
        first = json.loads(next(lines))
    assert set(first) == {"_id", "title", "text"} and first["_id"] == "D00000000"


def test_written_catalogue_imports_into_canonical_tables(tmp_path):
    folder = tmp_path / "demo-catalogue"
    counts = write_demo_dataset(folder, catalogue(500))
    spec = read_spec(folder)
    assert spec.format == "beir" and spec.exposure_k == 10
    record = json.loads((folder / "dataset.json").read_text())["demo_world"]
    assert record["world"] == "catalogue" and set(CATALOGUE_FIELDS) <= set(record)
    tables = import_tables(folder)
    assert tables.documents.height == counts["documents"] == 500
    assert tables.queries.height == counts["queries"]
    assert tables.qrels.height == counts["train_pairs"] + counts["test_pairs"]
    assert set(tables.queries["split"]) == {"train", "test"}
    assert tables.notes["dropped_unlabeled_queries"] == 0
    assert (folder / "qrels" / "train.tsv").read_text().startswith("query-id\tcorpus-id\tscore\nQ00000001\tD")
    query = json.loads((folder / "queries.jsonl").read_text().splitlines()[0])
    assert query["metadata"] == {"kind": "category"}
    # idempotent, atomic rewrite
    write_catalogue_dataset(folder, catalogue(500))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-catalogue"]


def test_products_world_is_unchanged(tmp_path):
    """Figures of the products world from before the catalogue world existed."""
    world = generate_demo_world(DemoWorldConfig())
    assert [d["title"] for d in world["documents"][:3]] == [
        "Luxixi 8696", "Kapesa 6523 face cream", "Xikemi 8322 vitamin tablets"]
    assert (len(world["documents"]), len(world["queries"])) == (160, 346)
    assert (len(world["qrels"]["train"]), len(world["qrels"]["test"])) == (800, 800)
    digest = hashlib.sha256(json.dumps(world, sort_keys=True).encode()).hexdigest()
    assert digest == "315e2ea11dc1eab482b5ed9970374a9df62ab0f0c9f8f68e70c50852dfb484a3"
    write_demo_dataset(tmp_path / "demo", DemoWorldConfig())
    # dataset.json too: the catalogue-only fields stay out of the products world's record
    assert hashlib.sha256((tmp_path / "demo" / "dataset.json").read_bytes()).hexdigest()[:16] == "63770d9248e4b28e"
    assert hashlib.sha256((tmp_path / "demo" / "corpus.jsonl").read_bytes()).hexdigest()[:16] == "a1fbd11c01b0ba52"


def test_cli_offers_the_catalogue_world():
    from skim_assets.cli import build_parser

    args = build_parser().parse_args(["demo", "--world", "catalogue", "--documents", "1000"])
    assert (args.world, args.documents) == ("catalogue", 1000)
