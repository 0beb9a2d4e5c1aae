from pathlib import Path

import dagster as dg
from pydantic import Field


class TeacherResource(dg.ConfigurableResource):
    """The teacher LLM that writes demonstration queries.

    kind 'keyphrase' (default) runs offline: KeyBERT-style diverse keyphrases of the metadata with the bundled
    MiniLM. 'openai' calls any OpenAI-compatible chat endpoint (OpenAI, Azure, a local `vllm serve`); set the key
    with the environment variable SKIM_TEACHER_API_KEY (read through dg.EnvVar, never logged or cached).
    'hf-local' runs a local Hugging Face instruct model with the few-shot prompt.
    """

    kind: str = Field(default="keyphrase", description="'keyphrase' | 'openai' | 'hf-local'.")
    base_url: str = Field(default="", description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(default="", description="Model name sent to the endpoint.")
    api_key: str | None = Field(default=None, description="Secret; pass dg.EnvVar('SKIM_TEACHER_API_KEY').")
    temperature: float = Field(default=0.8, description="Sampling temperature (paper: 0.8).")
    max_tokens: int = Field(default=200, description="Completion cap per document (paper: ~200).")
    concurrency: int = Field(default=4, description="Requests in flight.")
    max_retries: int = Field(default=5, description="Retries on 429 / 5xx / timeouts, exponential backoff.")
    timeout_s: float = Field(default=60.0, description="Per-request timeout.")
    budget_usd: float | None = Field(default=None, description="Stop sending once this much was spent.")
    usd_per_1k_prompt_tokens: float = Field(default=0.0, description="Price for cost accounting.")
    usd_per_1k_completion_tokens: float = Field(default=0.0, description="Price for cost accounting.")
    local_model_path: str = Field(default="", description="HF folder for kind 'hf-local' (empty = the base SLM).")

    def build(self, cache_dir: Path, fallback_model_path: str = ""):
        from ..lib.encoders import TextEncoder
        from ..lib.teachers import build_teacher

        if self.kind == "keyphrase":
            return build_teacher("keyphrase", encoder=TextEncoder(device="cpu"))
        if self.kind == "openai":
            if not self.base_url or not self.model:
                raise ValueError("teacher kind 'openai' needs base_url and model")
            return build_teacher(
                "openai", base_url=self.base_url, model=self.model, api_key=self.api_key,
                temperature=self.temperature, max_tokens=self.max_tokens, concurrency=self.concurrency,
                max_retries=self.max_retries, timeout_s=self.timeout_s, cache_dir=cache_dir,
                budget_usd=self.budget_usd, usd_per_1k_prompt_tokens=self.usd_per_1k_prompt_tokens,
                usd_per_1k_completion_tokens=self.usd_per_1k_completion_tokens,
            )
        if self.kind == "hf-local":
            return build_teacher("hf-local", model_path=self.local_model_path or fallback_model_path,
                                 max_new_tokens=self.max_tokens, temperature=self.temperature)
        raise ValueError(f"unknown teacher kind {self.kind!r}")
