"""Mapping synthetic queries to train queries: known neighbours and scores, the tau boundary, dedup by max."""

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.formats import union_pairs
from skim_assets.lib.mapping import MappingSettings, embed_with_cache, map_once


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# train queries on the unit circle at 0, 90 and 180 degrees
TRAIN_IDS = ["east", "north", "west"]
TRAIN = _unit([[1, 0], [0, 1], [-1, 0]])


def test_neighbours_scores_and_tau_on_a_hand_built_case():
    # s1 (doc A) points east: cos 1 -> score 1.0; s2 (doc B) at 60 degrees: cos(60)=0.5 to east -> 0.75,
    # cos(30)=0.866 to north -> 0.933
    synthetic = _unit([[1, 0], [0.5, np.sqrt(3) / 2]])
    pairs, stats = map_once(["A", "B"], synthetic, TRAIN_IDS, TRAIN, MappingSettings(k=2, tau=0.8))
    assert pairs.rows() == [("east", "A", pytest.approx(1.0), "skim"),
                            ("north", "B", pytest.approx((1 + np.sqrt(3) / 2) / 2, rel=1e-5), "skim")]
    assert stats["candidates"] == 4 and stats["pairs"] == 2 and stats["hnsw_recall"] == 1.0


def test_tau_boundary_is_inclusive():
    # cos(60 deg) = 0.5 -> score exactly 0.75
    synthetic = _unit([[0.5, np.sqrt(3) / 2]])
    kept, _ = map_once(["A"], synthetic, ["east"], TRAIN[:1], MappingSettings(k=1, tau=0.75 - 1e-6))
    dropped, _ = map_once(["A"], synthetic, ["east"], TRAIN[:1], MappingSettings(k=1, tau=0.75 + 1e-6))
    assert kept.height == 1 and dropped.height == 0


def test_a_pair_reached_twice_keeps_its_highest_score():
    # two synthetic queries of doc A both reach 'east': scores 1.0 and (1 + cos 30)/2
    synthetic = _unit([[1, 0], [np.sqrt(3) / 2, 0.5]])
    pairs, _ = map_once(["A", "A"], synthetic, TRAIN_IDS, TRAIN, MappingSettings(k=1, tau=0.5))
    assert pairs.select("query_id", "doc_id").rows() == [("east", "A")]
    assert pairs["weight"][0] == pytest.approx(1.0)


def test_nothing_to_map():
    pairs, stats = map_once([], np.zeros((0, 2), np.float32), TRAIN_IDS, TRAIN)
    assert pairs.height == 0 and stats["pairs"] == 0


def test_embedding_cache_embeds_only_new_text(tmp_path):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return _unit([[len(t), 1.0] for t in texts])

    cache = tmp_path / "cache.parquet"
    first, computed = embed_with_cache(["a", "bb", "a"], embed, cache)
    assert computed == 2 and calls == [["a", "bb"]]
    second, computed = embed_with_cache(["bb", "ccc"], embed, cache)
    assert computed == 1 and calls[-1] == ["ccc"]
    np.testing.assert_allclose(second[0], first[1])
    third, computed = embed_with_cache(["ccc", "a"], embed, cache)
    assert computed == 0 and len(calls) == 2


def test_augment_keeps_clicks_where_both_name_a_pair():
    clicks = pl.DataFrame({"query_id": ["q1"], "doc_id": ["A"], "weight": [1.0], "source": ["click"]})
    mapped = pl.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["A", "A"], "weight": [0.9, 0.85],
                           "source": ["skim", "skim"]})
    assert union_pairs(clicks, mapped).rows() == [("q1", "A", 1.0, "click"), ("q2", "A", 0.85, "skim")]


def test_incremental_mapping_searches_only_new_train_queries_and_equals_a_full_search(tmp_path):
    from skim_assets.lib.mapping import map_incrementally

    rng = np.random.default_rng(3)
    synthetic = _unit(rng.normal(size=(40, 8)))
    doc_ids = [f"d{i % 13}" for i in range(40)]
    train = _unit(rng.normal(size=(60, 8)))
    ids = [f"q{i}" for i in range(60)]
    settings = MappingSettings(k=4, tau=0.6)
    state = tmp_path / "state"

    first, _, stats = map_incrementally(doc_ids, synthetic, ids[:45], train[:45], settings, "skim", state, "v1")
    assert stats["incremental"] is False and stats["targets_searched"] == 45
    assert first.equals(map_once(doc_ids, synthetic, ids[:45], train[:45], settings)[0])

    refreshed, _, stats = map_incrementally(doc_ids, synthetic, ids, train, settings, "skim", state, "v1")
    full, _ = map_once(doc_ids, synthetic, ids, train, settings)
    assert stats["incremental"] is True and stats["targets_searched"] == 15
    assert refreshed.equals(full) and full.height > first.height / 2

    unchanged, _, stats = map_incrementally(doc_ids, synthetic, ids, train, settings, "skim", state, "v1")
    assert stats["targets_searched"] == 0 and unchanged.equals(full)
    # other synthetic queries or encoder (identity), or a vanished train query: a full search again
    _, _, stats = map_incrementally(doc_ids, synthetic, ids, train, settings, "skim", state, "v2")
    assert stats["incremental"] is False and stats["targets_searched"] == 60
    shrunk, _, stats = map_incrementally(doc_ids, synthetic, ids[5:], train[5:], settings, "skim", state, "v2")
    assert stats["incremental"] is False
    assert shrunk.equals(map_once(doc_ids, synthetic, ids[5:], train[5:], settings)[0])


def _topic_world(seed: int = 0):
    """Two topics of 20 documents each (vectors around two orthogonal axes); each topic has 5 train queries that
    share all of its documents as labels, of which the clicks keep 3 per query. Synthetic queries of every
    document land on a random train query (the mapping's noise): half of them on a query of the other topic."""
    rng = np.random.default_rng(seed)
    doc_ids = [f"D{t}{i:02d}" for t in range(2) for i in range(20)]
    axes = np.eye(8, dtype=np.float32)[:2]
    doc_vectors = _unit(np.repeat(axes, 20, axis=0) + 0.15 * rng.normal(size=(40, 8)))
    queries = [f"Q{t}{j}" for t in range(2) for j in range(5)]
    labels = pl.DataFrame([(q, d) for q in queries for d in doc_ids if q[1] == d[1]], schema=["query_id", "doc_id"],
                          orient="row")
    clicks = labels.group_by("query_id", maintain_order=True).head(3)
    candidates = pl.DataFrame({
        "synthetic": np.arange(40, dtype=np.int64),
        "query_id": [queries[j] for j in rng.integers(0, 10, size=40)],
        "cosine": np.full(40, 0.9, dtype=np.float32),
    })
    return doc_ids, doc_vectors, labels, clicks, candidates


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_click_neighbour_floor_keeps_the_pairs_near_a_query_s_clicks(seed):
    from skim_assets.lib.mapping import NEIGHBOUR_COSINE, ClickNeighbours, candidates_to_pairs
    from skim_assets.lib.quality import label_repair

    doc_ids, doc_vectors, labels, clicks, candidates = _topic_world(seed)
    annotated = ClickNeighbours(clicks, doc_ids, doc_vectors).annotate(candidates, doc_ids)
    assert annotated.columns == [*candidates.columns, NEIGHBOUR_COSINE]
    # the annotation is the best cosine to one of the query's clicked documents
    row = annotated.row(0, named=True)
    clicked = clicks.filter(pl.col("query_id") == row["query_id"])["doc_id"].to_list()
    expected = max(float(doc_vectors[0] @ doc_vectors[doc_ids.index(d)]) for d in clicked)
    assert row[NEIGHBOUR_COSINE] == pytest.approx(expected, rel=1e-5)

    unfloored = candidates_to_pairs(annotated, doc_ids, 0.8, "skim")
    floored = candidates_to_pairs(annotated, doc_ids, 0.8, "skim", neighbour_floor=0.5)
    before, after = label_repair(unfloored, clicks, labels), label_repair(floored, clicks, labels)
    # the noise maps about half the documents onto a query of the other topic: the floor removes those pairs
    assert 0.3 < before["precision"] < 0.7
    assert after["precision"] == 1.0 and after["pairs_correct"] == before["pairs_correct"]


def test_click_neighbour_floor_drops_queries_without_clicks_and_needs_the_annotation():
    from skim_assets.lib.mapping import ClickNeighbours, candidates_to_pairs

    doc_ids, doc_vectors, _, clicks, candidates = _topic_world()
    no_clicks_for_q00 = clicks.filter(pl.col("query_id") != "Q00")
    annotated = ClickNeighbours(no_clicks_for_q00, doc_ids, doc_vectors).annotate(candidates, doc_ids)
    kept = candidates_to_pairs(annotated, doc_ids, 0.8, "skim", neighbour_floor=-1.0)
    assert "Q00" in candidates["query_id"].to_list() and "Q00" not in kept["query_id"].to_list()
    assert kept.height == candidates.filter(pl.col("query_id") != "Q00").height
    with pytest.raises(ValueError, match="click_neighbour_cosine"):
        candidates_to_pairs(candidates, doc_ids, 0.8, "skim", neighbour_floor=0.5)
    with pytest.raises(ValueError, match="without a vector"):
        ClickNeighbours(clicks, doc_ids[:-1], doc_vectors[:-1]).annotate(candidates, doc_ids)


def test_map_once_applies_the_floor_and_reports_what_it_removed():
    from skim_assets.lib.mapping import ClickNeighbours

    # doc A's synthetic query lands on 'east' (clicked: doc C, near A) and doc B's on 'north' (clicked: doc C, far)
    doc_ids, doc_vectors = ["A", "B", "C"], _unit([[1, 0.1], [-1, 0.2], [1, 0]])
    clicks = pl.DataFrame({"query_id": ["east", "north"], "doc_id": ["C", "C"]})
    synthetic = _unit([[1, 0], [0, 1]])
    settings = MappingSettings(k=1, tau=0.8, click_neighbour_floor=0.5)
    pairs, stats = map_once(["A", "B"], synthetic, TRAIN_IDS, TRAIN, settings,
                                        neighbours=ClickNeighbours(clicks, doc_ids, doc_vectors))
    assert pairs.select("query_id", "doc_id").rows() == [("east", "A")]
    assert stats["pairs_below_neighbour_floor"] == 1
    with pytest.raises(ValueError, match="annotated"):
        map_once(["A", "B"], synthetic, TRAIN_IDS, TRAIN, settings)


def test_repair_by_neighbour_rank_judges_each_rank_against_the_held_back_labels():
    import polars as pl

    from skim_assets.lib.mapping import repair_by_neighbour_rank

    candidates = pl.DataFrame({"synthetic": [0, 0, 0, 1, 1], "query_id": ["qa", "qb", "qz", "qc", "qd"],
                               "cosine": [0.9, 0.8, 0.1, 0.95, 0.7]}, schema_overrides={"cosine": pl.Float32})
    oracle = pl.DataFrame({"query_id": ["qa", "qc", "qd"], "doc_id": ["d1", "d2", "d2"]})
    clicks = pl.DataFrame({"query_id": ["qd"], "doc_id": ["d2"]})  # a click is not a repair
    table = repair_by_neighbour_rank(candidates, ["d1", "d2"], 0.8, clicks, oracle)
    rows = {r["neighbour_rank"]: r for r in table.iter_rows(named=True)}
    assert set(rows) == {1, 2}  # qz's cosine 0.1 is below tau 0.8 ((1 + cos) / 2 = 0.55)
    assert rows[1]["candidates"] == 2 and rows[1]["correct"] == 2 and rows[1]["precision"] == 1.0
    assert rows[2]["candidates"] == 2 and rows[2]["beyond_clicks"] == 1 and rows[2]["correct"] == 0


def test_embedding_cache_reads_a_cache_stored_as_lists(tmp_path):
    """A cache whose vectors are a variable-length list column (not a fixed-size array) is read and extended."""
    cache = tmp_path / "cache.parquet"
    from skim_assets.lib.mapping import text_hash
    pl.DataFrame({"hash": [text_hash("a")], "vector": [[1.0, 0.0]]},
                 schema={"hash": pl.String, "vector": pl.List(pl.Float32)}).write_parquet(cache)
    vectors, computed = embed_with_cache(["b", "a"], lambda texts: _unit([[0.0, 1.0] for _ in texts]), cache)
    assert computed == 1
    np.testing.assert_allclose(vectors, [[0.0, 1.0], [1.0, 0.0]])
    again, computed = embed_with_cache(["a", "b"], lambda texts: 1 / 0, cache)
    assert computed == 0
    np.testing.assert_allclose(again, [[1.0, 0.0], [0.0, 1.0]])


def test_embedding_cache_streams_blocks_in_any_order(tmp_path, monkeypatch):
    """Cached vectors come back in the caller's order when the cache is read in several blocks."""
    import skim_assets.lib.mapping as mapping

    monkeypatch.setattr(mapping, "_CACHE_BLOCK_ROWS", 2)
    texts = [f"text {i}" for i in range(7)]
    vectors_of = {t: [float(i), 1.0] for i, t in enumerate(texts)}
    cache = tmp_path / "cache.parquet"
    first, _ = embed_with_cache(texts[:4], lambda batch: np.array([vectors_of[t] for t in batch]), cache)
    mixed = ["text 6", "text 1", "text 4", "text 6", "text 0", "text 5"]
    vectors, computed = embed_with_cache(mixed, lambda batch: np.array([vectors_of[t] for t in batch]), cache)
    assert computed == 3  # texts 4, 5 and 6, once each
    np.testing.assert_allclose(vectors, [vectors_of[t] for t in mixed])
    again, computed = embed_with_cache(list(reversed(texts)), lambda batch: 1 / 0, cache)
    assert computed == 0
    np.testing.assert_allclose(again, [vectors_of[t] for t in reversed(texts)])
