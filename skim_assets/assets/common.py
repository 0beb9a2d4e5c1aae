"""The Dagster glue every asset module shares, and the only module an asset module imports from this package:
step tags and pools, the stores' paths a step's services need (pretrained and click spaces), metadata builders,
stored settings, and the wiring of `lib.checks` verdicts into asset checks.

Everything Dagster-free (a stage's artifact format, its science, the plumbing stages share) lives in `lib/`; an
asset module is wiring: what it reads (parameters the IO manager loads), which `lib` service it calls, what it
reports. `test_architecture.py` holds the package to that.
"""

import warnings
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from ..deployment import GPU_TAGS, gpu_op_tags
from ..lib.checks import (
    FINITE_WEIGHTS_DESCRIPTION,
    GROUNDED_SHARE_WARN,
    JUNK_SHARE_WARN,
    Evaluate,
    Outcome,
    evaluate_finite_weights,
    evaluate_query_quality,
    evaluate_safely,
)
from ..lib.layout import DOCUMENT_INDEX, EMBEDDING_CACHE
from ..lib.plots import Plot
from ..partitions import dataset_partitions
from ..resources import Tables
from ..resources.artifacts import table_preview

# Model steps (training, distillation, generation, ranking) share the `gpu` pool and carry the GPU op tags: the
# local executor runs them one at a time, the k8s profile gives each a GPU (see `deployment.py`). Asset tags
# repeat the marker so the UI can filter model assets.
GPU_POOL = "gpu"
MODEL_STEP = {"pool": GPU_POOL, "tags": GPU_TAGS, "op_tags": gpu_op_tags()}
MODEL_OP = {"pool": GPU_POOL, "tags": MODEL_STEP["op_tags"]}  # the same for an op inside a graph asset
# Cheap training tables follow their upstream (a new click drop, a retrained encoder, new synthetic queries).
EAGER = dg.AutomationCondition.eager()



def pretrained_space(storage, encoder, dataset: str):
    """The pretrained encoder's cached vectors and document index for `dataset` (`lib.spaces.PretrainedSpace`)."""
    from ..lib.retrieval import SearchSettings
    from ..lib.spaces import PretrainedSpace

    return PretrainedSpace(encoder.load, storage.step_dir(EMBEDDING_CACHE, dataset, f"pretrained{encoder.cache_tag}"),
                           storage.step_dir(DOCUMENT_INDEX, dataset), SearchSettings.of(encoder.search),
                           encoder.prompt)


def click_space(storage, encoder, dataset: str, base_models: Path, documents: pl.DataFrame):
    """The click-trained encoder's space over `documents` (`lib.click_space.ClickSpace`), its embeddings cached in
    the dataset's embedding cache."""
    from ..lib.click_space import ClickSpace

    return ClickSpace(encoder, base_models, storage.step_dir(EMBEDDING_CACHE, dataset),
                      pretrained_space(storage, encoder, dataset), documents)


def student_model_folder(storage, name_or_path: str, log=None) -> Path:
    """A student's base model: a bundled small LM by name (exported once under the root), or a local HF causal-LM
    folder (checked)."""
    from ..lib.layout import STUDENT_MODELS
    from ..lib.slm import BUNDLED_SLMS
    from ..lib.student import export_bundled_student, local_student_folder

    if name_or_path in BUNDLED_SLMS:
        return export_bundled_student(name_or_path, storage.store(STUDENT_MODELS, name_or_path),
                                      storage.staging_dir, log)
    return local_student_folder(name_or_path)


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


# ----------------------------------------------------------------------------------------------- asset checks
#
# A check is a `lib.checks` verdict over the artifact it guards, loaded by the IO manager as the check's input
# (`Tables` for a table asset, the folder's `Path` for a model), declared with the asset's dataset partitions:
# it runs inside the partitioned run that materializes its asset, on that partition's artifact, after it.
# Checks marked blocking stop the run's downstream assets when they fail with severity ERROR (a WARN failure never
# blocks): a broken table, an empty generation or a non-finite model would otherwise poison everything after it.
# Dagster 1.13 marks partitioned asset checks a preview (its PreviewWarning is silenced below); verified: a
# blocking check that fails with ERROR in a partitioned run skips that partition's downstream assets.
# In the 1.13 UI, a check page's "Latest execution / Timestamp" is when the run planned the check (Dagster logs
# every check's ASSET_CHECK_EVALUATION_PLANNED when it creates the run), so on a long run it reads earlier than
# the target materialization; the check's execution history and the run's event log show its own time.


def check_result(outcome: Outcome, dataset: str | None = None) -> dg.AssetCheckResult:
    """A `lib.checks` verdict as Dagster's check result (the dataset it judged named in front)."""
    described = f"{dataset}: {outcome.description}" if dataset else outcome.description
    return dg.AssetCheckResult(passed=outcome.passed, severity=dg.AssetCheckSeverity[outcome.severity],
                               description=described,
                               metadata=({"dataset": dataset} if dataset else {}) | outcome.metadata)


def partition_of(context) -> str | None:
    return context.partition_key if context.has_partition_key else None


def asset_check(asset: str, name: str, *, blocking: bool, description: str,
                additional_ins: dict[str, dg.AssetIn] | None = None) -> Callable:
    """`@dg.asset_check` of `asset` over the dataset partitions (for a check with inputs besides its asset)."""
    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned asset checks are preview in 1.13
            return dg.asset_check(asset=asset, name=name, blocking=blocking, description=description,
                                  partitions_def=dataset_partitions, additional_ins=additional_ins)(fn)

    return decorate


def build_check(asset: str, name: str, evaluate: Evaluate, *, blocking: bool, description: str,
                artifact: type = Tables) -> dg.AssetChecksDefinition:
    """A dataset-partitioned check of `asset` whose verdict is `evaluate(<the asset's artifact>)`: its tables
    (`artifact=Tables`) or its folder (`artifact=Path`)."""
    def _check(context: dg.AssetCheckExecutionContext, artifact) -> dg.AssetCheckResult:
        return check_result(evaluate_safely(evaluate, artifact), partition_of(context))

    _check.__annotations__["artifact"] = artifact  # what the IO manager loads for the input
    return asset_check(asset, name, blocking=blocking, description=description)(_check)


def build_query_quality_check(asset: str) -> dg.AssetChecksDefinition:
    """The non-blocking `query_quality` check of a query writer (the teacher, or a synthetic-queries asset)."""
    return build_check(
        asset, "query_quality", evaluate_query_quality, blocking=False,
        description=f"WARN when under {GROUNDED_SHARE_WARN:.0%} of the written queries are grounded in their document "
                    f"or over {JUNK_SHARE_WARN:.0%} are junk (measured before the generation's quality filter).",
    )


def build_finite_weights_check(asset: str, folder: str, pattern: str, reader: Callable[[Path], dict],
                               required=(), name: str = "weights_finite") -> dg.AssetChecksDefinition:
    """The blocking `weights_finite` check of a model asset (`lib.checks.evaluate_finite_weights`); `name` tells
    apart the checks of an asset holding two models."""
    return build_check(asset, name, evaluate_finite_weights(folder, pattern, reader, required), blocking=True,
                       description=FINITE_WEIGHTS_DESCRIPTION, artifact=Path)
