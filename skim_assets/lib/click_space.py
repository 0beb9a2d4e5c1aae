"""The click-trained dual encoder's embedding space: where synthetic texts are mapped onto real targets.

The mapping encoder is `base_models`' dual encoder (fine-tuned on the clicks). Every text it embeds is cached by
text hash per encoder (and prompt, for a model with query/document prompts), so a click refresh embeds only new
text. A query-side fine-tuned encoder kept the pretrained document vectors: its documents are read from the
pretrained space and its shared index instead of being embedded again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from .encoders import prompt_cache_suffix
from .formats import DOCUMENTS_FOR_QUERIES
from .mapping import ClickNeighbours, embed_with_cache
from .spaces import RETRIEVER_FOLDER, PretrainedSpace, document_tower_frozen


def encoder_fingerprint(path: Path) -> str:
    """Identity of a saved encoder (weights file size and mtime): embedding caches are per encoder."""
    weights = next(iter(sorted(path.glob("*.safetensors"))), None) or path / "config.json"
    stat = weights.stat()
    return hashlib.sha1(f"{weights}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


class MappingTargets(NamedTuple):
    """What synthetic texts are mapped onto: the id column of the pairs they make, the targets' ids and texts, the
    token budget, and the encoder role of both sides (synthetic texts and their targets are of one kind)."""

    column: str
    ids: list[str]
    texts: list[str]
    max_length: int
    role: str


def mapping_targets(direction: str, encoder, documents: pl.DataFrame, queries: pl.DataFrame) -> MappingTargets:
    """Synthetic queries written for documents are mapped onto the train queries; in the documents_for_queries
    direction, documents written for train queries are mapped onto the real documents."""
    if direction == DOCUMENTS_FOR_QUERIES:
        return MappingTargets("doc_id", documents["doc_id"].to_list(), documents["title"].to_list(),
                              encoder.doc_max_length, "document")
    train = queries.filter(pl.col("split") == "train")
    return MappingTargets("query_id", train["query_id"].to_list(), train["text"].to_list(), encoder.query_max_length,
                          "query")


class DocumentVectors(NamedTuple):
    """Every document's title vector in a space, its search index (None: searched by the caller) and how many
    titles were embedded now rather than read from a cache."""

    vectors: np.ndarray
    index: object | None
    embedded_now: int


class ClickSpace:
    """Texts embedded by the click-trained encoder saved in `models_folder` (`encoder` supplies loading, prompts
    and token caps: the encoder resource), cached under `cache_root/<encoder fingerprint>/`."""

    def __init__(self, encoder, models_folder: Path, cache_root: Path, pretrained: PretrainedSpace,
                 documents: pl.DataFrame):
        self.encoder = encoder
        self.models_folder = Path(models_folder)
        self.encoder_path = self.models_folder / RETRIEVER_FOLDER
        # vectors of another precision differ
        self.fingerprint = encoder_fingerprint(self.encoder_path) + encoder.cache_tag
        self.cache_dir = Path(cache_root) / self.fingerprint
        self.pretrained = pretrained
        self.documents = documents
        self._model = None
        self._document_vectors: DocumentVectors | None = None

    def embed(self, texts: list[str], max_length: int, role: str | None = None) -> tuple[np.ndarray, int]:
        """(vectors of `texts` in order, how many were computed now rather than read from the cache)."""
        def compute(batch):
            if self._model is None:
                self._model = self.encoder.load(str(self.encoder_path))
            return self._model.encode(batch, max_length=max_length, role=role)

        suffix = prompt_cache_suffix(self.encoder.prompt(role, str(self.encoder_path)))
        return embed_with_cache(texts, compute, self.cache_dir / f"texts-{max_length}{suffix}.parquet")

    def document_vectors(self) -> DocumentVectors:
        """Every document's title vector in this space (with the pretrained index where they are the pretrained
        vectors)."""
        if self._document_vectors is None:
            titles = self.documents["title"].to_list()
            if document_tower_frozen(self.models_folder):
                index = self.pretrained.document_index(titles, self.encoder.doc_max_length)
                self._document_vectors = DocumentVectors(index.vectors, index, 0)
            else:
                vectors, embedded_now = self.embed(titles, self.encoder.doc_max_length, "document")
                self._document_vectors = DocumentVectors(vectors, None, embedded_now)
        return self._document_vectors

    def neighbours(self, clicks: pl.DataFrame) -> ClickNeighbours:
        """The clicks beside every document's vector in this space: what the click-neighbour floor reads."""
        return ClickNeighbours(clicks, self.documents["doc_id"].to_list(), self.document_vectors().vectors)
