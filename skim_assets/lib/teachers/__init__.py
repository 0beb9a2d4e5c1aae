"""Teachers: turn chat messages into text (the teacher demonstrations of SKIM's first stage).

One protocol (`protocol`), three backends: `OpenAIChatTeacher` (`openai_client`, the `openai` SDK with answers
cached by `cache`; its OpenAI Batch API mode in `batch`), `KeyphraseTeacher` (`keyphrase`, offline) and
`LocalHFTeacher` (`local_hf`). This module holds the factory and re-exports the public names. Parsing the answers
is the caller's business (`skim_assets.lib.parsing`). No Dagster here.
"""

from __future__ import annotations

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
    "TEACHER_KINDS",
    "KeyphraseTeacher",
    "LocalHFTeacher",
    "OpenAIChatTeacher",
    "ProgressFn",
    "ResponseCache",
    "Teacher",
    "TeacherRequest",
    "TeacherBatchSettings",
    "TeacherResponse",
    "build_teacher",
    "cache_key",
    "estimate_tokens",
    "format_queries",
]

TEACHER_KINDS = ("openai", "keyphrase", "hf-local")


def build_teacher(kind: str, **settings) -> Teacher:
    """A teacher by kind: "openai" (OpenAIChatTeacher), "keyphrase" (KeyphraseTeacher) or "hf-local"
    (LocalHFTeacher). For "keyphrase", `encoder` may also be a model path, or "default" for the bundled MiniLM."""
    kind = kind.strip().lower()
    if kind == "openai":
        return OpenAIChatTeacher(**settings)
    if kind == "keyphrase":
        encoder = settings.pop("encoder", None)
        encoder_path = settings.pop("encoder_path", None)
        if isinstance(encoder, (str, Path)):
            encoder_path, encoder = encoder, None
        if encoder is None and encoder_path:
            from skim_assets.lib.encoders import TextEncoder

            encoder = TextEncoder(None if str(encoder_path) == "default" else encoder_path)
        return KeyphraseTeacher(encoder=encoder, **settings)
    if kind == "hf-local":
        return LocalHFTeacher(**settings)
    raise ValueError(f"unknown teacher kind {kind!r}; expected one of {', '.join(TEACHER_KINDS)}")
