"""TextEncoder is sentence-transformers: any folder's modules and prompts give `SentenceTransformer(path)`'s vectors.

The second model is built here, offline: a tiny random BERT (the bundled MiniLM's tokenizer) with CLS pooling, a
Dense projection and Normalize, and query/document prompts, unlike the bundled MiniLM (mean pooling, no prompts).
"""

import numpy as np
import polars as pl
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, BertConfig, BertModel

from skim_assets.lib.dual_encoder import DualEncoderConfig, train_dual_encoder
from skim_assets.lib.encoders import TextEncoder, default_encoder_path

try:  # sentence-transformers >= 6
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
except ImportError:  # sentence-transformers 5
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

PROMPTS = {"query": "query: ", "document": "passage: "}
QUERIES = ["remedy for migraine", "made in Lyon", "contains lavender", "products by Nordwind Labs"]
TITLES = ["Zorvex 1142", "Quillan 4210", "Marlo 9921", "Tessik 3310 - a long title " + "with many words " * 10]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A plain Hugging Face folder: a 2-layer BERT of width 32, random weights (seeded)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def cls_dense_folder(tiny_bert, tmp_path_factory) -> str:
    """A sentence-transformers folder: the tiny BERT, CLS pooling, Dense 32 -> 16 (tanh), Normalize, prompts."""
    folder = tmp_path_factory.mktemp("cls-dense-st")
    torch.manual_seed(1)
    modules = [Transformer(tiny_bert, max_seq_length=64), Pooling(32, pooling_mode="cls"), Dense(32, 16), Normalize()]
    SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu").save(str(folder), create_model_card=False)
    return str(folder)


def test_a_differently_built_folder_gives_sentence_transformers_vectors_with_its_prompts(cls_dense_folder):
    encoder = TextEncoder(cls_dense_folder, device="cpu", max_length=64)
    reference = SentenceTransformer(cls_dense_folder, device="cpu")
    assert encoder.dim == 16 and encoder.pooling == "cls"
    assert encoder.prompt("query") == "query: " and encoder.prompt("document") == "passage: "
    assert encoder.prompt(None) is None

    queries = encoder.encode(QUERIES, role="query")
    np.testing.assert_allclose(queries, reference.encode_query(QUERIES), atol=1e-6)
    np.testing.assert_allclose(queries, reference.encode(QUERIES, prompt="query: "), atol=1e-6)
    titles = encoder.encode(TITLES, role="document")
    np.testing.assert_allclose(titles, reference.encode_document(TITLES), atol=1e-6)
    plain = encoder.encode(TITLES)
    np.testing.assert_allclose(plain, reference.encode(TITLES), atol=1e-6)
    assert np.abs(plain - titles).max() > 1e-3  # the prompt is read, not ignored
    np.testing.assert_allclose(np.linalg.norm(titles, axis=1), 1.0, atol=1e-6)

    # the token cap: the pipeline's per-call max_length is sentence-transformers' max_seq_length
    reference.max_seq_length = 8
    np.testing.assert_allclose(encoder.encode(TITLES, max_length=8, role="document"),
                               reference.encode_document(TITLES), atol=1e-6)
    assert encoder.model.max_seq_length == 64  # restored after the call

    # training's differentiable path gives the same vectors, with gradients
    embedded = encoder.embed(QUERIES, role="query")
    assert embedded.requires_grad
    np.testing.assert_allclose(embedded.detach().numpy(), queries, atol=1e-6)


def test_a_plain_hugging_face_folder_is_mean_pooled_and_normalised(tiny_bert):
    encoder = TextEncoder(tiny_bert, device="cpu")
    reference = SentenceTransformer(tiny_bert, device="cpu")
    reference.max_seq_length = 32
    assert encoder.pooling == "mean" and encoder.dim == 32
    np.testing.assert_allclose(encoder.encode(QUERIES, role="query"),
                               reference.encode(QUERIES, normalize_embeddings=True), atol=1e-6)


def test_the_bundled_minilm_embeds_for_training_what_it_encodes():
    encoder = TextEncoder(device="cpu")
    assert encoder.dim == 384 and encoder.pooling == "mean" and encoder.prompt("query") is None
    np.testing.assert_allclose(encoder.embed(TITLES, 16).detach().numpy(), encoder.encode(TITLES, max_length=16),
                               atol=1e-6)


def test_training_moves_every_module_and_the_saved_folder_keeps_modules_and_prompts(cls_dense_folder, tmp_path):
    encoder = TextEncoder(cls_dense_folder, device="cpu", max_length=64)
    dense_before = encoder.model[2].linear.weight.detach().clone()
    documents = pl.DataFrame({"doc_id": ["a", "b", "c", "d"], "title": TITLES})
    queries = pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "text": QUERIES})
    pairs = pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "doc_id": ["a", "b", "c", "d"], "weight": [1.0] * 4})
    train_dual_encoder(encoder, pairs, queries, documents, DualEncoderConfig(epochs=2, batch_size=4, hard_negatives=1,
                                                                             hard_negative_depth=2, log_every_s=1e9))
    assert not torch.equal(encoder.model[2].linear.weight, dense_before)  # the Dense projection trains too

    folder = encoder.save(tmp_path / "trained", max_seq_length=48)
    reloaded = SentenceTransformer(str(folder), device="cpu")
    assert reloaded.prompts["query"] == "query: " and reloaded.max_seq_length == 48
    assert [type(m).__name__ for m in reloaded] == ["Transformer", "Pooling", "Dense", "Normalize"]
    np.testing.assert_allclose(encoder.encode(QUERIES, max_length=48, role="query"), reloaded.encode_query(QUERIES),
                               atol=1e-6)
    np.testing.assert_allclose(TextEncoder(folder, device="cpu", max_length=64).encode(TITLES, role="document"),
                               encoder.encode(TITLES, role="document"), atol=1e-6)


def test_the_cached_pretrained_space_embeds_each_role_with_its_prompt(cls_dense_folder, tmp_path):
    """Every cached path (ranking for the simulation, one-vs-all features, the zero-shot row, query-side
    fine-tuning) reads `PretrainedSpace`: queries get the query prompt, titles the document prompt, each role in
    its own cache file, while a model without prompts (MiniLM) keeps its cache file names."""
    from skim_assets.lib.encoders import folder_prompt
    from skim_assets.lib.spaces import PretrainedSpace

    reference = SentenceTransformer(cls_dense_folder, device="cpu")
    reference.max_seq_length = 32  # the space's length cap
    space = PretrainedSpace(lambda: TextEncoder(cls_dense_folder, device="cpu"), tmp_path / "cache",
                            tmp_path / "index", prompt=lambda role: folder_prompt(cls_dense_folder, role))
    queries = space.embed(QUERIES, 32, role="query")
    titles = space.document_index(TITLES, 32).vectors
    np.testing.assert_allclose(queries, reference.encode_query(QUERIES), atol=1e-6)
    np.testing.assert_allclose(titles, reference.encode_document(TITLES), atol=1e-6)
    # the same text as a query and as a document: two vectors, two cache files, each read back as written
    both = space.embed(QUERIES[:1], 32, role="document")
    np.testing.assert_allclose(both, reference.encode_document(QUERIES[:1]), atol=1e-6)
    assert np.abs(both - queries[:1]).max() > 1e-4  # a random tiny BERT: the prompt moves CLS a little
    assert len(list((tmp_path / "cache").glob("texts-32-p*.parquet"))) == 2
    np.testing.assert_allclose(space.embed(QUERIES, 32, role="query"), queries)
    assert folder_prompt(default_encoder_path(), "query") is None  # MiniLM: `texts-<length>.parquet` as before
