"""The demo world: deterministic, opaque titles, facts stated in the metadata, complete labels."""

from skim_assets.lib.demo import DemoWorldConfig, generate_demo_world, write_demo_dataset
from skim_assets.lib.importers import read_beir


def test_same_seed_same_world_and_another_seed_differs():
    config = DemoWorldConfig(n_documents=40)
    assert generate_demo_world(config) == generate_demo_world(config)
    assert generate_demo_world(config) != generate_demo_world(DemoWorldConfig(n_documents=40, seed=99))


def test_relevance_is_complete_and_stated_only_in_metadata():
    world = generate_demo_world(DemoWorldConfig(n_documents=60))
    docs = {d["_id"]: d for d in world["documents"]}
    queries = {q["_id"]: q for q in world["queries"]}
    hidden = 0
    for split in ("train", "test"):
        for query_id, doc_id in world["qrels"][split]:
            q, doc = queries[query_id], docs[doc_id]
            assert q["split"] == split
            # The fact value inside the query text is stated in the document's metadata...
            value = next(v for v in _fact_values() if v in q["text"])
            assert value in doc["text"]
            # ...but for non-category facts never in the short title the retriever sees.
            if q["kind"] != "category":
                assert value not in doc["title"]
                hidden += 1
    assert hidden > 0
    # Complete labels: every document whose metadata states a query's fact is relevant to it.
    for q in world["queries"]:
        value = next(v for v in _fact_values() if v in q["text"])
        relevant = {d for qid, d in world["qrels"][q["split"]] if qid == q["_id"]}
        stating = {d for d, doc in docs.items() if _states(doc["text"], value)}
        assert relevant == stating, q


def _states(metadata: str, value: str) -> bool:
    import re

    return re.search(rf"(^|[\s,:]){re.escape(value)}([\s,.]|$)", metadata) is not None


def _fact_values():
    from skim_assets.lib import demo

    # longest first so 'vitamin c' is not mistaken for a prefix of another value
    values = demo.CATEGORIES + demo.CONDITIONS + demo.INGREDIENTS + demo.PLACES + demo._maker_names()
    return sorted(values, key=len, reverse=True)


def test_written_world_imports_through_the_beir_importer(tmp_path):
    counts = write_demo_dataset(tmp_path / "demo", DemoWorldConfig(n_documents=30))
    tables = read_beir(tmp_path / "demo")
    assert tables.documents.height == counts["documents"] == 30
    assert tables.qrels.height == counts["train_pairs"] + counts["test_pairs"]
    assert set(tables.queries["split"]) == {"train", "test"}
    assert (tmp_path / "demo" / "dataset.json").exists()


def test_rewriting_is_idempotent(tmp_path):
    write_demo_dataset(tmp_path / "demo", DemoWorldConfig(n_documents=20))
    first = (tmp_path / "demo" / "corpus.jsonl").read_bytes()
    write_demo_dataset(tmp_path / "demo", DemoWorldConfig(n_documents=20))
    assert (tmp_path / "demo" / "corpus.jsonl").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temp folders left behind
