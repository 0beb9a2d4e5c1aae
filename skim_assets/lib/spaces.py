"""The pretrained encoder's embedding space of one dataset: every text embedded once (cached by text hash) and one
search index over the document titles, shared by every step that reads that space.

At a million documents, embedding the catalogue is the largest single cost on CPU (~25 minutes for MiniLM on 2
cores), so Algorithm 1's ranking, the one-vs-all heads' features and first shortlist, the zero-shot row of the
evaluation and every query-side fine-tuned dual encoder (`DualEncoderConfig.train_document_tower=False`) read the
same vectors and the same index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .encoders import Role, prompt_cache_suffix
from .mapping import embed_with_cache
from .retrieval import DocumentIndex, SearchSettings, vectors_fingerprint

# A method's models folder (`<method>_models`): its dual encoder, the encoder's training report, its one-vs-all head.
RETRIEVER_FOLDER = "encoder"  # a sentence-transformers model
RETRIEVER_TRAINING = "training.json"  # the dual encoder's training report, with the settings it ran with
HEAD_FILE = "head.npz"  # the one-vs-all head's weights, biases and label ids


def document_tower_frozen(retriever_folder: Path) -> bool:
    """Whether the retriever saved in `retriever_folder` kept the pretrained document embeddings (query-side
    fine-tuning); retrievers saved before the setting existed trained both towers."""
    report = Path(retriever_folder) / RETRIEVER_TRAINING
    if not report.exists():
        return False
    return not json.loads(report.read_text()).get("config", {}).get("train_document_tower", True)


class PretrainedSpace:
    """Cached pretrained-encoder vectors of a dataset's texts and the document index over its titles."""

    def __init__(self, load_encoder: Callable[[], object], cache_dir: Path, index_dir: Path,
                 search: SearchSettings | None = None, prompt: Callable[[Role | None], str | None] = lambda role: None):
        self._load_encoder = load_encoder
        self._prompt = prompt  # the encoder's prompt for a role, read without loading it
        self._model = None
        self.cache_dir = Path(cache_dir)
        self.index_dir = Path(index_dir)
        self.search = search or SearchSettings()

    def embed(self, texts: list[str], max_length: int, role: Role | None = None) -> np.ndarray:
        """Vectors of `texts` (in order) as `role` (the encoder's query or document prompt, where it has one),
        computed only for texts never embedded before for this dataset."""
        def compute(batch: list[str]) -> np.ndarray:
            if self._model is None:
                self._model = self._load_encoder()
            return self._model.encode(batch, max_length=max_length, role=role)

        cache = self.cache_dir / f"texts-{max_length}{prompt_cache_suffix(self._prompt(role))}.parquet"
        vectors, _ = embed_with_cache(texts, compute, cache)
        return vectors

    def document_index(self, titles: list[str], max_length: int) -> DocumentIndex:
        """The search index over the documents' vectors (rows in the order of `titles`), saved and reused."""
        vectors = self.embed(titles, max_length, role="document")
        return DocumentIndex(vectors, self.search, self.index_dir / vectors_fingerprint(vectors))
