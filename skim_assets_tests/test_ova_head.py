"""The Renée-style one-vs-all head learns labels that its initial (title) vectors do not predict."""

import numpy as np

from skim_assets.lib.ova_head import OvaHeadConfig, ova_topk, train_ova_head


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_head_learns_query_to_document_labels_from_scratch_titles():
    rng = np.random.default_rng(0)
    queries, docs = _unit(rng.normal(size=(8, 16))), _unit(rng.normal(size=(8, 16)))
    labels = np.array([3, 1, 4, 0, 7, 5, 2, 6])  # query i is about document labels[i]
    before, _ = ova_topk(queries, docs, np.zeros(8), k=1)
    weights, biases, report = train_ova_head(queries, np.arange(8), labels, np.ones(8), docs,
                                             OvaHeadConfig(epochs=40, learning_rate=0.05, shortlist=3))
    after, scores = ova_topk(queries, weights, biases, k=2)
    assert (before[:, 0] == labels).mean() < 0.5
    assert (after[:, 0] == labels).all()
    assert (scores[:, 0] >= scores[:, 1]).all()
    assert report.epoch_losses[-1] < report.epoch_losses[0] and report.queries == 8


def test_soft_label_weights_still_learn():
    rng = np.random.default_rng(1)
    queries, docs = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(5, 8)))
    weights, biases, _ = train_ova_head(queries, np.array([0, 1, 2, 3]), np.array([4, 4, 0, 1]),
                                        np.array([1.0, 0.85, 1.0, 0.9]), docs, OvaHeadConfig(epochs=40, shortlist=2))
    top, _ = ova_topk(queries, weights, biases, k=1)
    assert top[:, 0].tolist() == [4, 4, 0, 1]
