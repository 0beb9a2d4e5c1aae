"""Teachers: turn chat messages into text (the teacher demonstrations of SKIM's first stage).

One protocol (`protocol`), three backends: `OpenAIChatTeacher` (`openai_client`, the `openai` SDK with answers
cached by `cache`; its OpenAI Batch API mode in `batch`), `KeyphraseTeacher` (`keyphrase`, offline) and
`LocalHFTeacher` (`local_hf`). This module holds the factory (`TEACHERS`: kind -> `TeacherKind`, read by
`build_teacher` and the `teacher` resource) and re-exports the public names. Parsing the answers
is the caller's business (`skim_assets.lib.parsing`). No Dagster here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .batch import BatchFailed, BatchPending, TeacherBatchSettings
from .cache import CACHE_FORMAT_VERSION, ResponseCache, cache_key
from .keyphrase import STOPWORDS, KeyphraseTeacher, format_queries
from .local_hf import LocalHFTeacher
from .openai_client import OpenAIChatTeacher
from .protocol import ProgressFn, Teacher, TeacherRequest, TeacherResponse, estimate_tokens

__all__ = [
    "CACHE_FORMAT_VERSION",
    "BatchFailed",
    "BatchPending",
    "STOPWORDS",
    "TEACHERS",
    "TEACHER_KINDS",
    "KeyphraseTeacher",
    "LocalHFTeacher",
    "OpenAIChatTeacher",
    "ProgressFn",
    "ResponseCache",
    "Teacher",
    "TeacherRequest",
    "TeacherBatchSettings",
    "TeacherKind",
    "TeacherResponse",
    "UnknownTeacherKind",
    "build_teacher",
    "cache_key",
    "estimate_tokens",
    "format_queries",
    "teacher_kind",
]



def _keyphrase_teacher(encoder=None, encoder_path=None, **settings) -> KeyphraseTeacher:
    """`encoder` is an encoder object, or a model path (also as `encoder_path`), or "default" for the bundled
    MiniLM; none: YAKE-style statistics alone."""
    if isinstance(encoder, (str, Path)):
        encoder_path, encoder = encoder, None
    if encoder is None and encoder_path:
        from skim_assets.lib.encoders import TextEncoder

        encoder = TextEncoder(None if str(encoder_path) == "default" else encoder_path)
    return KeyphraseTeacher(encoder=encoder, **settings)


@dataclass(frozen=True)
class TeacherKind:
    """One kind of teacher: `build(**settings)` makes it (the settings are its constructor's)."""

    name: str
    build: Callable[..., Teacher]
    description: str


# The one list of teacher kinds: `TEACHER_KINDS`, `build_teacher` and the `teacher` resource's kinds derive from it.
TEACHERS: dict[str, TeacherKind] = {kind.name: kind for kind in (
    TeacherKind("openai", OpenAIChatTeacher, "any OpenAI-compatible chat endpoint (OpenAI, Azure, a local `vllm "
                "serve`), answers cached; optionally the OpenAI Batch API"),
    TeacherKind("keyphrase", _keyphrase_teacher, "offline and deterministic: KeyBERT-style diverse keyphrases of the "
                "metadata (YAKE-style statistics without an encoder)"),
    TeacherKind("hf-local", LocalHFTeacher, "a local Hugging Face instruct model with the few-shot prompt"),
)}
TEACHER_KINDS = tuple(TEACHERS)


class UnknownTeacherKind(ValueError):
    """A teacher kind no backend is registered for."""

    def __init__(self, kind: object, where: str = ""):
        self.kind = kind
        super().__init__(f"unknown teacher kind {kind!r}{where}; expected one of {', '.join(TEACHER_KINDS)}")


def teacher_kind(kind: str, where: str = "") -> TeacherKind:
    """The registered kind `kind` (any case, surrounding spaces ignored); UnknownTeacherKind naming it (and
    `where` it came from, e.g. " (from $SKIM_TEACHER)") and the known kinds otherwise."""
    name = kind.strip().lower() if isinstance(kind, str) else kind
    try:
        return TEACHERS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value is no kind either
        raise UnknownTeacherKind(kind, where) from None


def build_teacher(kind: str, **settings) -> Teacher:
    """A teacher by kind (`TEACHERS`): "openai" (OpenAIChatTeacher), "keyphrase" (KeyphraseTeacher) or "hf-local"
    (LocalHFTeacher), made with `settings`. For "keyphrase", `encoder` may also be a model path, or "default" for
    the bundled MiniLM."""
    return teacher_kind(kind).build(**settings)
