import os
from pathlib import Path

import dagster as dg
from pydantic import Field

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

    kind: str | None = Field(default=None, description="'keyphrase' | 'openai' | 'hf-local'; unset: $SKIM_TEACHER, "
                                                        "else 'keyphrase'.")
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

    def setting(self, name: str) -> str | None:
        """Field `name` (one of `TEACHER_ENV`): as configured, else its environment variable now, else the
        default."""
        value = getattr(self, name)
        return value if value is not None else os.environ.get(TEACHER_ENV[name], _ENV_DEFAULTS[name])

    def build(self, cache_dir: Path, fallback_model_path: str = "", batch_dir: Path | None = None):
        """The teacher. Answers are cached in `cache_dir`; `batch_dir` holds the state of the step's pending batch
        (batch mode; default `<cache_dir>/batches/default`): one folder per step that may run at once."""
        from ..lib.encoders import TextEncoder
        from ..lib.teachers import build_teacher

        kind = self.setting("kind")
        if self.batch and kind != "openai":
            raise ValueError(f"batch: true is the OpenAI Batch API: it needs teacher kind 'openai', not {kind!r}")
        if kind == "keyphrase":
            return build_teacher("keyphrase", encoder=TextEncoder(device="cpu"))
        if kind == "openai":
            base_url, model = self.setting("base_url"), self.setting("model")
            if not base_url or not model:
                raise ValueError("teacher kind 'openai' needs base_url and model (or SKIM_TEACHER_BASE_URL and "
                                 "SKIM_TEACHER_MODEL)")
            return build_teacher(
                "openai", base_url=base_url, model=model, api_key=self.setting("api_key"),
                temperature=self.temperature, max_tokens=self.max_tokens, concurrency=self.concurrency,
                max_retries=self.max_retries, timeout_s=self.timeout_s, cache_dir=cache_dir,
                budget_usd=self.budget_usd, usd_per_1k_prompt_tokens=self.usd_per_1k_prompt_tokens,
                usd_per_1k_completion_tokens=self.usd_per_1k_completion_tokens,
                max_answer_chars=self.max_answer_chars, batch=TeacherBatchSettings.of(self), batch_dir=batch_dir,
            )
        if kind == "hf-local":
            return build_teacher("hf-local", model_path=self.local_model_path or fallback_model_path,
                                 max_new_tokens=self.max_tokens, temperature=self.temperature)
        raise ValueError(f"unknown teacher kind {kind!r}")
