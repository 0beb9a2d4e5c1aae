
import dagster as dg
from pydantic import Field

from ..lib.encoders import TextEncoder
from ..lib.retrieval import SearchSettings


class SearchConfig(dg.Config, SearchSettings):
    """Document search: the fields of `lib.retrieval.SearchSettings`."""


class EncoderResource(dg.ConfigurableResource):
    """The pretrained text encoder: zero-shot retriever, Algorithm 1's ranker, and the start of every fine-tune."""

    model_path: str = Field(default="", description="Sentence-transformers / HF folder; empty = bundled "
                            "all-MiniLM-L6-v2.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:n]'.")
    query_max_length: int = Field(default=32, description="Token cap for queries.")
    doc_max_length: int = Field(default=32, description="Token cap for document titles (the short text).")
    metadata_max_length: int = Field(default=128, description="Token cap of a text that carries its metadata too "
                                     "(metadata-augmented retrieval, the `ra` methods).")
    precision: str = Field(default="float32", description="Inference precision of embedding: 'float32', "
                           "'bfloat16', or 'auto' (bf16 where the hardware has it; BENCHMARKS.md measures speed and "
                           "agreement with fp32). Caches are kept per "
                           "precision.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="How every document is searched for "
                                 "many queries: exact up to exact_max_documents, else a saved hnswlib index.")

    def load(self, path: str | None = None) -> TextEncoder:
        """The pretrained encoder, or a fine-tuned one saved at `path`."""
        return TextEncoder(path or self.model_path or None, device=self.device, max_length=self.query_max_length,
                           precision=self.precision)

    def prompt(self, role: str | None, path: str | None = None) -> str | None:
        """The prompt the encoder (pretrained, or the one saved at `path`) puts before a text of `role`."""
        from ..lib.encoders import folder_prompt

        return folder_prompt(path or self.model_path or None, role)

    @property
    def cache_tag(self) -> str:
        """Suffix of embedding-cache names: vectors of another precision are other vectors."""
        return "" if self.precision in ("float32", "fp32") else f"-{self.precision}"

    def rank(self, queries, documents, k: int, path: str | None = None, query_max_length: int | None = None,
             doc_max_length: int | None = None):
        """Top-k documents per query (query_id, doc_id, score, rank) with this resource's token caps (or those
        given)."""
        from ..lib.dual_encoder import rank_documents

        return rank_documents(self.load(path), queries, documents, k,
                              query_max_length=query_max_length or self.query_max_length,
                              doc_max_length=doc_max_length or self.doc_max_length)
