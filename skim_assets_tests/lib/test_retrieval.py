"""Exact top-k with deterministic ties, hnswlib against exact search, and the long result frame."""

import numpy as np

from skim_assets.lib.retrieval import exact_topk, hnsw_topk, topk_frame


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_exact_topk_orders_by_score_and_breaks_ties_by_lower_index():
    items = _unit([[1, 0], [0, 1], [1, 0], [1, 1]])
    queries = _unit([[1, 0]])
    indices, scores = exact_topk(queries, items, k=3)
    assert indices.tolist() == [[0, 2, 3]]  # items 0 and 2 tie at 1.0: lower index first
    np.testing.assert_allclose(scores[0], [1.0, 1.0, np.sqrt(0.5)], rtol=1e-6)


def test_exact_topk_blocks_agree_with_one_block_and_k_is_capped():
    rng = np.random.default_rng(0)
    items, queries = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(17, 8)))
    a = exact_topk(queries, items, k=5, block_size=4)
    b = exact_topk(queries, items, k=5, block_size=1000)
    assert np.array_equal(a[0], b[0])
    assert exact_topk(queries, items, k=500)[0].shape == (17, 50)


def test_hnsw_matches_exact_search_on_small_data():
    rng = np.random.default_rng(1)
    items, queries = _unit(rng.normal(size=(500, 16))), _unit(rng.normal(size=(50, 16)))
    exact, exact_scores = exact_topk(queries, items, k=10)
    approx, approx_scores = hnsw_topk(queries, items, k=10, ef_search=200)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95
    np.testing.assert_allclose(approx_scores[:, 0], exact_scores[:, 0], atol=1e-5)


def test_topk_frame_is_long_and_ranked():
    frame = topk_frame(["q1", "q2"], ["a", "b", "c"], np.array([[2, 0], [1, 2]]), np.array([[0.9, 0.5], [0.8, 0.1]]))
    assert frame.select("query_id", "doc_id", "rank").rows() == [("q1", "c", 1), ("q1", "a", 2), ("q2", "b", 1),
                                                                 ("q2", "c", 2)]
    np.testing.assert_allclose(frame["score"].to_numpy(), [0.9, 0.5, 0.8, 0.1], rtol=1e-6)


def test_document_index_is_exact_up_to_its_limit_and_a_saved_hnsw_index_above_it(tmp_path):
    from skim_assets.lib.retrieval import DocumentIndex, SearchSettings, vectors_fingerprint

    rng = np.random.default_rng(0)
    docs = rng.normal(size=(2000, 24)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:50] + 0.05 * rng.normal(size=(50, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth, _ = exact_topk(queries, docs, 10)

    exact = DocumentIndex(docs, SearchSettings(exact_max_documents=2000), tmp_path / "exact")
    assert exact.method.startswith("exact") and np.array_equal(exact.search(queries, 10)[0], truth)
    assert not (tmp_path / "exact").exists()  # nothing to save for exact search

    folder = tmp_path / vectors_fingerprint(docs)
    ann = DocumentIndex(docs, SearchSettings(exact_max_documents=1000), folder)
    found, scores = ann.search(queries, 10)
    assert ann.method.startswith("hnswlib") and (folder / DocumentIndex.INDEX_FILE).exists()
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.95 and (np.diff(scores, axis=1) <= 1e-6).all()
    again = DocumentIndex(docs, SearchSettings(exact_max_documents=1000), folder)  # loads the saved index
    assert np.array_equal(again.search(queries, 10)[0], found)
    assert vectors_fingerprint(docs) != vectors_fingerprint(docs[::-1].copy())
