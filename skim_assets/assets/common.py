"""Metadata helpers and settings shared by the asset modules."""


from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from ..deployment import GPU_TAGS, gpu_op_tags
from ..lib.plots import Plot
from ..resources import Tables, TrainingView
from ..resources.artifacts import table_preview

# Model steps (training, distillation, generation, ranking) share the `gpu` pool and carry the GPU op tags: the
# local executor runs them one at a time, the k8s profile gives each a GPU (see `deployment.py`). Asset tags
# repeat the marker so the UI can filter model assets.
GPU_POOL = "gpu"
MODEL_STEP = {"pool": GPU_POOL, "tags": GPU_TAGS, "op_tags": gpu_op_tags()}
MODEL_OP = {"pool": GPU_POOL, "tags": MODEL_STEP["op_tags"]}  # the same for an op inside a graph asset
# Cheap training tables follow their upstream (a new click drop, a retrained encoder, new synthetic queries).
EAGER = dg.AutomationCondition.eager()

# Folders inside model artifacts that more than one stage opens.
BASE_MODEL = "model"  # in `base_slm`'s folder: the HF model, or a link to the configured one
LORA_FOLDER = "adapter"  # in a LoRA adapter's folder: the peft adapter
RETRIEVER_FOLDER = "encoder"  # in a method's models folder: the dual encoder (a sentence-transformers model)
HEAD_FILE = "head.npz"  # in a method's models folder: the one-vs-all head


def pretrained_space(storage, encoder, dataset: str):
    """The pretrained encoder's cached vectors and document index for `dataset` (`lib.spaces.PretrainedSpace`)."""
    from ..lib.retrieval import SearchSettings
    from ..lib.spaces import PretrainedSpace

    return PretrainedSpace(encoder.load, storage.step_dir("embedding_cache", dataset, f"pretrained{encoder.cache_tag}"),
                           storage.step_dir("document_index", dataset), SearchSettings.of(encoder.search),
                           encoder.prompt)


def base_model_folder(base_slm: Path) -> Path:
    """The small LM's Hugging Face folder inside the `base_slm` artifact."""
    return base_slm / BASE_MODEL


def pairs_output(pairs: pl.DataFrame | Tables, extra: dict | None = None) -> dg.MaterializeResult:
    """A training-pairs table as the asset's value, described by a count per `source` (the IO manager adds rows,
    columns and a preview)."""
    frame = pairs.data if isinstance(pairs, Tables) else pairs
    by_source = dict(frame.group_by("source").len().iter_rows())
    return dg.MaterializeResult(value=pairs, metadata={f"pairs_{s}": n for s, n in sorted(by_source.items())}
                                | (extra or {}))


SETTINGS_TABLE = "settings"  # side table: the settings that wrote an artifact's tables, as one JSON row


def settings_table(settings) -> pl.DataFrame:
    """Side table `settings` of a pydantic settings object (a `lib` settings class or a Dagster config), for
    whatever repeats the step with another model (the SLM-size sweep)."""
    return pl.DataFrame({"config_json": [settings.model_dump_json()]})


def settings_of(tables: Tables, settings_class):
    """The settings stored by `settings_table` beside `tables`, as `settings_class`."""
    if SETTINGS_TABLE not in tables:
        raise ValueError(f"{tables.folder} has no `{SETTINGS_TABLE}` table: materialize it again with this version")
    return settings_class.model_validate_json(tables[SETTINGS_TABLE]["config_json"][0])


@dataclass(frozen=True)
class RetrievalInput:
    """What a retriever reads: the queries' and documents' texts and their token caps."""

    queries: pl.DataFrame
    documents: pl.DataFrame
    query_max_length: int
    doc_max_length: int


def retrieval_input(direction: str, metadata_input: bool, queries: pl.DataFrame, documents: pl.DataFrame,
                    encoder) -> RetrievalInput:
    """The short texts (query text, document title), or for metadata-augmented retrieval (`metadata_input`) the
    side that holds the dataset's metadata with it: documents for queries_for_documents, queries for
    documents_for_queries (`lib.retrieval.with_metadata`), under the encoder's longer token cap."""
    if not metadata_input:
        return RetrievalInput(queries, documents, encoder.query_max_length, encoder.doc_max_length)
    from ..lib.formats import DOCUMENTS_FOR_QUERIES
    from ..lib.retrieval import with_metadata

    side = "queries" if direction == DOCUMENTS_FOR_QUERIES else "documents"
    queries, documents = with_metadata(queries, documents, side)
    long = encoder.metadata_max_length
    return RetrievalInput(queries, documents, long if side == "queries" else encoder.query_max_length,
                          long if side == "documents" else encoder.doc_max_length)


def generation_sources_of(direction: str, view: TrainingView) -> tuple[pl.DataFrame, dict]:
    """What the teacher and student write for in the dataset's direction, and each source's known outputs
    (`lib.demonstrations.generation_sources` over every query, click-log ones included)."""
    from ..lib.demonstrations import generation_sources

    return generation_sources(direction, view.documents, view.queries, view.clicks)


def quality_metadata(figures: dict, prefix: str) -> dict:
    """Query-quality figures (`lib.quality.query_quality`) as asset metadata named `<prefix>_...`."""
    return {
        f"{prefix}_queries": dg.MetadataValue.int(figures["queries"]),
        f"{prefix}_grounded_share": dg.MetadataValue.float(round(figures["grounded_share"], 4)),
        f"{prefix}_junk_share": dg.MetadataValue.float(round(figures["junk_share"], 4)),
        f"{prefix}_junk_by_reason": dg.MetadataValue.json(figures["junk_by_reason"]),
        f"{prefix}_distinct_queries_per_document": dg.MetadataValue.float(
            round(figures["distinct_queries_per_document"], 2)),
        f"{prefix}_document_coverage": dg.MetadataValue.float(round(figures["document_coverage"], 4)),
    }


def sample_table(judged: pl.DataFrame, documents: pl.DataFrame, n: int = 12, seed: int = 0) -> dg.TableMetadataValue:
    """A seeded sample of judged queries beside their document's title, to read in the UI."""
    rows = judged.sample(min(n, judged.height), seed=seed).join(documents.select("doc_id", "title"), on="doc_id",
                                                                 how="left").sort("doc_id")
    return table_preview(rows.select("doc_id", "title", "query", "grounded", pl.col("junk").fill_null("")), n)


def plot_metadata(name: str, plot: Plot, stored_at: Path | None = None) -> dict:
    """A plot in the UI: its sketch inline (Markdown shorter than 1,000 characters renders without a click), the
    full PNG's path beside it (the HTML report embeds the PNG). `stored_at`: where the PNG will be once its
    folder artifact is moved into place (a plot drawn into a staging folder)."""
    path = str(stored_at or plot.path)
    return {name: dg.MetadataValue.md(plot.sketch) if plot.sketch else dg.MetadataValue.path(path),
            f"{name}_png": dg.MetadataValue.path(path)}
