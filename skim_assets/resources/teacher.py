import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from ..lib.teachers import TEACHER_KINDS, Teacher, build_teacher, teacher_kind
from ..lib.teachers.batch import TeacherBatchSettings

# The settings the environment gives (README: `export SKIM_TEACHER=openai ...`), by field.
TEACHER_ENV = {
    "kind": "SKIM_TEACHER",
    "base_url": "SKIM_TEACHER_BASE_URL",
    "model": "SKIM_TEACHER_MODEL",
    "api_key": "SKIM_TEACHER_API_KEY",
}
_ENV_DEFAULTS = {"kind": "keyphrase", "base_url": "", "model": "", "api_key": None}


class TeacherResource(dg.ConfigurableResource, TeacherBatchSettings):
    """The teacher LLM that writes demonstration queries.

    kind 'keyphrase' (default) runs offline: KeyBERT-style diverse keyphrases of the metadata with the bundled
    MiniLM. 'openai' calls any OpenAI-compatible chat endpoint (OpenAI, Azure, a local `vllm serve`); the key
    comes from the environment variable SKIM_TEACHER_API_KEY (never logged or cached, never in run config).
    'hf-local' runs a local Hugging Face instruct model with the few-shot prompt.

    kind, base_url, model and api_key left unset (None) are read from their environment variables
    (`TEACHER_ENV`) when the teacher is built, not when the code location loads: run config replaces the
    resource's whole config, so a value baked in at import would be lost as soon as a run sets any one field.

    The `batch*` fields (`lib.teachers.TeacherBatchSettings`, one list for both) switch the 'openai' kind to the
    OpenAI Batch API: `batch: true` sends one batch per asset run at the batch price.
    """

    kind: str | None = Field(default=None, description=" | ".join(f"'{k}'" for k in TEACHER_KINDS)
                             + "; unset: $SKIM_TEACHER, else 'keyphrase'.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; "
                                                            "unset: $SKIM_TEACHER_BASE_URL.")
    model: str | None = Field(default=None, description="Model name sent to the endpoint; unset: $SKIM_TEACHER_MODEL.")
    api_key: str | None = Field(default=None, description="Secret; unset: $SKIM_TEACHER_API_KEY. Set it only as "
                                                           "dg.EnvVar(...), never as a value.")
    temperature: float = Field(default=0.8, description="Sampling temperature (paper: 0.8).")
    max_tokens: int = Field(default=200, description="Completion cap per document (paper: ~200).")
    concurrency: int = Field(default=4, description="Requests in flight.")
    max_retries: int = Field(default=5, description="Retries on 429 / 5xx / timeouts, exponential backoff.")
    timeout_s: float = Field(default=60.0, description="Bound on each attempt as a whole: connect, send, and the "
                                                       "whole answer however slowly it trickles in.")
    budget_usd: float | None = Field(default=None, description="Stop sending once this much was spent.")
    usd_per_1k_prompt_tokens: float = Field(default=0.0, description="Price for cost accounting.")
    usd_per_1k_completion_tokens: float = Field(default=0.0, description="Price for cost accounting.")
    max_answer_chars: int = Field(default=20_000, description="A longer answer is an error, never stored (about "
                                                              "5,000 tokens: 25x the default max_tokens).")
    local_model_path: str = Field(default="", description="HF folder for kind 'hf-local' (empty = the base SLM).")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str | None) -> str | None:
        """A configured kind must be registered (`lib.teachers.TEACHERS`): refused with the run config, not when
        the step builds its teacher. (A kind from $SKIM_TEACHER is checked when the teacher is built.)"""
        if kind is not None:
            teacher_kind(kind)
        return kind

    def setting(self, name: str) -> str | None:
        """Field `name` (one of `TEACHER_ENV`): as configured, else its environment variable now, else the
        default."""
        value = getattr(self, name)
        return value if value is not None else os.environ.get(TEACHER_ENV[name], _ENV_DEFAULTS[name])

    def build(self, cache_dir: Path, fallback_model_path: str = "", batch_dir: Path | None = None) -> Teacher:
        """The teacher. Answers are cached in `cache_dir`; `batch_dir` holds the state of the step's pending batch
        (batch mode; default `<cache_dir>/batches/default`): one folder per step that may run at once."""
        where = "" if self.kind is not None else f" (from ${TEACHER_ENV['kind']})"
        kind = teacher_kind(self.setting("kind"), where).name  # an unknown kind is refused here, naming the known
        if self.batch and kind != "openai":
            raise ValueError(f"batch: true is the OpenAI Batch API: it needs teacher kind 'openai', not {kind!r}")
        settings = SETTINGS_OF_KIND[kind](self, cache_dir=cache_dir, fallback_model_path=fallback_model_path,
                                          batch_dir=batch_dir)
        return build_teacher(kind, **settings)


def _keyphrase_settings(resource: "TeacherResource", **_) -> dict:
    from ..lib.encoders import TextEncoder

    return {"encoder": TextEncoder(device="cpu")}


def _openai_settings(resource: "TeacherResource", *, cache_dir: Path, batch_dir: Path | None, **_) -> dict:
    base_url, model = resource.setting("base_url"), resource.setting("model")
    if not base_url or not model:
        raise ValueError("teacher kind 'openai' needs base_url and model (or SKIM_TEACHER_BASE_URL and "
                         "SKIM_TEACHER_MODEL)")
    r = resource
    return dict(
        base_url=base_url, model=model, api_key=r.setting("api_key"), temperature=r.temperature,
        max_tokens=r.max_tokens, concurrency=r.concurrency, max_retries=r.max_retries, timeout_s=r.timeout_s,
        cache_dir=cache_dir, budget_usd=r.budget_usd, usd_per_1k_prompt_tokens=r.usd_per_1k_prompt_tokens,
        usd_per_1k_completion_tokens=r.usd_per_1k_completion_tokens, max_answer_chars=r.max_answer_chars,
        batch=TeacherBatchSettings.of(r), batch_dir=batch_dir,
    )


def _hf_local_settings(resource: "TeacherResource", *, fallback_model_path: str, **_) -> dict:
    return dict(model_path=resource.local_model_path or fallback_model_path, max_new_tokens=resource.max_tokens,
                temperature=resource.temperature)


# Teacher kind (`lib.teachers.TEACHERS`) -> the constructor settings this resource's config gives it. One entry per
# registered kind (tested): a kind added to the registry is added here, with the settings it takes.
SETTINGS_OF_KIND: dict[str, Callable[..., dict]] = {
    "openai": _openai_settings,
    "keyphrase": _keyphrase_settings,
    "hf-local": _hf_local_settings,
}
