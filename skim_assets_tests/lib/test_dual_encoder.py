"""The DEXML-style trainer turns labels into recall, and a saved encoder reloads to the same embeddings."""

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.dual_encoder import DualEncoderConfig, rank_documents, train_dual_encoder
from skim_assets.lib.encoders import TextEncoder
from skim_assets.lib.metrics import evaluate_rankings

# Opaque titles: nothing in a title says what its queries are about, so only training can connect them.
DOCUMENTS = pl.DataFrame({
    "doc_id": ["a", "b", "c", "d", "e", "f"],
    "title": ["Zorvex 1142", "Quillan 4210", "Marlo 9921", "Tessik 3310", "Voren 7781", "Ulbra 5512"],
})
QUERIES = pl.DataFrame({
    "query_id": ["q1", "q2", "q3", "q4", "q5", "q6"],
    "text": ["remedy for migraine", "made in Lyon", "contains lavender", "products by Nordwind Labs",
             "treatment for insomnia", "goods from Porto"],
})
PAIRS = pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4", "q5", "q6"], "doc_id": ["a", "b", "c", "d", "e", "f"],
                      "weight": [1.0] * 6})
QRELS = PAIRS.select("query_id", "doc_id", pl.col("weight").alias("relevance"))


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(device="cpu")


@pytest.mark.parametrize("variant", [{}, {"precision": "float32", "length_buckets": False},
                                     {"cached_negatives": True}],
                         ids=["configured", "fp32-shuffled", "cached-negatives"])
def test_training_on_labels_raises_recall(variant):
    encoder = TextEncoder(device="cpu")
    before = evaluate_rankings(rank_documents(encoder, QUERIES, DOCUMENTS, k=6), QRELS, ks=(1,))["P@1"]
    config = DualEncoderConfig(**{"epochs": 12, "batch_size": 6, "learning_rate": 2e-4, "warmup_fraction": 0.0,
                                  "hard_negatives": 2, "hard_negative_depth": 3, "log_every_s": 0.0, **variant})
    messages = []
    report = train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, config, progress=messages.append)
    after = evaluate_rankings(rank_documents(encoder, QUERIES, DOCUMENTS, k=6), QRELS, ks=(1,))["P@1"]
    assert after >= 5 / 6 > before
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert report.pairs == 6 and report.steps == 12 and len(messages) == 12  # progress logged every step here


def test_length_buckets_cover_every_pair_once_in_similar_length_batches():
    from skim_assets.lib.dual_encoder import batch_order

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    for buckets in (False, True):
        batches = batch_order(np.random.default_rng(1), lengths, 16, buckets)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert all(len(b) <= 16 for b in batches)
    bucketed = batch_order(np.random.default_rng(1), lengths, 16, True)
    shuffled = batch_order(np.random.default_rng(1), lengths, 16, False)
    spread = lambda batches: np.mean([np.ptp(lengths[b]) for b in batches])  # noqa: E731
    assert spread(bucketed) < spread(shuffled) / 5  # padding to the batch's longest text wastes little
    assert len(set(np.diff([lengths[b].min() for b in bucketed[:20]]) > 0)) == 2  # the batch order is not sorted


def test_an_empty_training_set_is_rejected(encoder):
    with pytest.raises(ValueError, match="no training pairs"):
        train_dual_encoder(encoder, PAIRS.head(0), QUERIES, DOCUMENTS, DualEncoderConfig(epochs=1))


def test_saved_encoder_reloads_identically(encoder, tmp_path):
    encoder.save(tmp_path / "enc")
    reloaded = TextEncoder(tmp_path / "enc", device="cpu")
    texts = QUERIES["text"].to_list()
    np.testing.assert_allclose(encoder.encode(texts), reloaded.encode(texts), atol=1e-5)
    assert (tmp_path / "enc" / "1_Pooling" / "config.json").exists()


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TextEncoder(tmp_path)


def test_a_trained_retriever_loads_in_sentence_transformers_with_the_same_vectors(tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    encoder = TextEncoder(device="cpu")
    train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, DualEncoderConfig(epochs=1, batch_size=6, log_every_s=1e9))
    folder = encoder.save(tmp_path / "encoder")
    texts = [*QUERIES["text"].to_list(), *DOCUMENTS["title"].to_list()]
    ours = TextEncoder(folder, device="cpu").encode(texts)
    theirs = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    pretrained = TextEncoder(device="cpu").encode(texts)
    assert np.abs(ours - pretrained).max() > 1e-3  # the saved folder holds the trained weights, not the bundled ones


def test_known_positives_are_never_pushed_away_as_negatives():
    """q1 is relevant to b too, but only (q2, b) is trained on: in the shared batch b is one of q1's negatives, and
    training pushes it away from q1, unless (q1, b) is given as a known positive."""
    config = DualEncoderConfig(epochs=8, batch_size=6, learning_rate=2e-4, warmup_fraction=0.0, hard_negatives=0,
                               log_every_s=1e9)
    similarity = {}
    for masked in (False, True):
        encoder = TextEncoder(device="cpu")
        known = pl.DataFrame({"query_id": ["q1", "q9"], "doc_id": ["b", "a"]})  # q9 has no pairs: ignored
        train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, config, known_positives=known if masked else None)
        q1, b = encoder.encode(["remedy for migraine", "Quillan 4210"])
        similarity[masked] = float(q1 @ b)
    assert similarity[True] > similarity[False] + 0.05


def test_in_batch_false_negative_share_counts_unlabelled_positives_among_the_negatives():
    from skim_assets.lib.dual_encoder import in_batch_false_negative_share

    truth = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q2"], "doc_id": ["a", "b", "b", "a"]})
    # one batch of both pairs: q1's negative is b, q2's is a; both are relevant
    assert in_batch_false_negative_share(PAIRS.head(2), truth, batch_size=2, batches=3) == 1.0
    # with every label known, nothing relevant is left among the negatives
    both = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q2"], "doc_id": ["a", "b", "b", "a"], "weight": [1.0] * 4})
    assert in_batch_false_negative_share(both, truth, batch_size=4, batches=3) == 0.0
    # six pairs, only (q1, b) and (q2, a) unlabelled: 2 of the 30 negatives of a full batch
    assert in_batch_false_negative_share(PAIRS, truth, batch_size=6, batches=2) == pytest.approx(2 / 30)


def test_query_side_fine_tuning_keeps_the_documents_pretrained_vectors_and_still_learns():
    """train_document_tower=False: the documents' vectors are the given pretrained ones (never re-encoded), only the
    query tower learns, and ranking against those vectors reaches the labels."""
    encoder = TextEncoder(device="cpu")
    document_vectors = encoder.encode(DOCUMENTS["title"].to_list())

    def p_at_1(model):
        from skim_assets.lib.retrieval import exact_topk, topk_frame

        indices, scores = exact_topk(model.encode(QUERIES["text"].to_list()), document_vectors, 6)
        return evaluate_rankings(topk_frame(QUERIES["query_id"], DOCUMENTS["doc_id"], indices, scores), QRELS,
                                 ks=(1,))["P@1"]

    before = p_at_1(encoder)
    config = DualEncoderConfig(epochs=15, batch_size=6, learning_rate=3e-4, warmup_fraction=0.0, hard_negatives=0,
                               train_document_tower=False, log_every_s=60.0)
    train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, config, document_vectors=document_vectors)
    assert p_at_1(encoder) >= 5 / 6 > before
    with pytest.raises(ValueError, match="document_vectors"):
        train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, config)
    with pytest.raises(ValueError, match="hard_negatives"):
        train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, config.with_(hard_negatives=2),
                           document_vectors=document_vectors)


def test_max_pairs_trains_on_a_seeded_sample(encoder):
    messages = []
    config = DualEncoderConfig(epochs=1, batch_size=2, hard_negatives=0, max_pairs=4, log_every_s=60.0)
    report = train_dual_encoder(encoder, PAIRS, QUERIES, DOCUMENTS, config, progress=messages.append)
    assert report.pairs == 4 and report.steps == 2 and any("sample of 4 pairs" in m for m in messages)
