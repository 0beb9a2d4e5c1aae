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


def test_anchor_keeps_missing_at_random_labels_from_pulling_classifiers_away():
    """nfcorpus-dev's failure in small: each query is relevant to both documents of its topic, training sees one of
    them at random and the other as a negative. Unanchored, the classifiers drift (below the zero-shot ranking on
    held-out queries of the same topics); the anchor keeps them near their label embeddings."""
    rng = np.random.default_rng(0)
    topics, dim = 30, 32
    centers = _unit(rng.normal(size=(topics, dim)))
    docs = _unit(np.repeat(centers, 2, axis=0) + 0.2 * rng.normal(size=(2 * topics, dim)))

    def queries(per_topic):
        topic = np.repeat(np.arange(topics), per_topic)
        return _unit(centers[topic] + 0.3 * rng.normal(size=(len(topic), dim))), topic

    train_queries, train_topic = queries(4)
    test_queries, test_topic = queries(3)
    seen = 2 * train_topic + rng.integers(0, 2, size=len(train_topic))

    def recall_at_2(weights, biases):
        top, _ = ova_topk(test_queries, weights, biases, k=2)
        return np.mean([len({2 * t, 2 * t + 1} & set(row)) / 2 for t, row in zip(test_topic, top.tolist())])

    zero_shot = recall_at_2(docs, np.zeros(len(docs)))
    recall, drift = {}, {}
    for anchor in (0.0, 0.2):
        weights, biases, _ = train_ova_head(train_queries, np.arange(len(seen)), seen, np.ones(len(seen)), docs,
                                            OvaHeadConfig(epochs=30, anchor=anchor))
        recall[anchor] = recall_at_2(weights, biases)
        drift[anchor] = np.linalg.norm(weights - docs, axis=1).mean()
    assert recall[0.0] < zero_shot - 0.05  # the failure
    assert recall[0.2] >= zero_shot - 0.01 and recall[0.2] > recall[0.0] + 0.05
    assert drift[0.2] < 0.7 * drift[0.0]


def test_shortlist_mode_updates_only_scored_rows_and_takes_its_first_shortlist_from_the_given_search():
    """Above full_loss_max_documents: sparse rows (a document no step scores keeps its initial vector and a zero
    bias exactly) and the first shortlist from `initial_search` (e.g. a saved ANN index), yet labels are learned."""
    rng = np.random.default_rng(3)
    n_docs, n_queries = 400, 60
    queries, docs = _unit(rng.normal(size=(n_queries, 16))), _unit(rng.normal(size=(n_docs, 16)))
    labels = rng.choice(n_docs, size=n_queries, replace=False)
    shortlists = []

    def search(vectors, k):
        indices, scores = ova_topk(vectors, docs, np.zeros(n_docs), k, scale=1.0)
        shortlists.append(indices)
        return indices, scores

    config = OvaHeadConfig(epochs=40, learning_rate=0.05, batch_size=8, shortlist=8, full_loss_max_documents=100,
                           remine_every=0)
    weights, biases, report = train_ova_head(queries, np.arange(n_queries), labels, np.ones(n_queries), docs, config,
                                             initial_search=search)
    assert len(shortlists) == 1 and shortlists[0].shape == (n_queries, 8 + 1)  # shortlist + deepest positives
    # against the documents it was trained on (its label and its fixed shortlist), each query ranks its label first
    scores = queries @ weights.T * config.scale + biases
    label_first = [scores[q, labels[q]] > scores[q, [d for d in shortlists[0][q] if d != labels[q]]].max()
                   for q in range(n_queries)]
    assert np.mean(label_first) >= 0.95
    scored = set(labels.tolist()) | set(shortlists[0].reshape(-1).tolist())
    never_scored = np.array(sorted(set(range(n_docs)) - scored))
    assert len(never_scored) > 50
    assert np.array_equal(weights[never_scored], docs[never_scored]) and (biases[never_scored] == 0).all()
    assert report.epoch_losses[-1] < report.epoch_losses[0]

    # re-mined with the current head, the shortlist finds the documents that still outrank a label: top-1 is learned
    searched = len(shortlists)
    weights, biases, _ = train_ova_head(queries, np.arange(n_queries), labels, np.ones(n_queries), docs,
                                       config.with_(remine_every=1), initial_search=search)
    before, _ = ova_topk(queries, docs, np.zeros(n_docs), k=1)
    top, _ = ova_topk(queries, weights, biases, k=1)
    assert len(shortlists) == searched + 1  # only the first shortlist comes from the given search
    assert (before[:, 0] == labels).mean() < 0.2 and (top[:, 0] == labels).mean() >= 0.9


def test_shortlist_mode_refuses_weight_decay():
    rng = np.random.default_rng(4)
    queries, docs = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(30, 8)))
    try:
        train_ova_head(queries, np.arange(4), np.arange(4), np.ones(4), docs,
                       OvaHeadConfig(full_loss_max_documents=10, weight_decay=0.01))
    except ValueError as error:
        assert "weight_decay" in str(error)
    else:
        raise AssertionError("weight decay in shortlist mode must be refused")
