"""How the student decodes: `SamplingSettings`, and the settings of each of a document's several outputs."""

from __future__ import annotations

from pydantic import Field

from ..settings import Settings


class SamplingSettings(Settings):
    """Decoding of the student. Defaults suit a small (~135M) student: greedy decoding (temperature 0). A 135M
    model sampled at the paper's temperature 0.8 / top-k 200 (set for Llama2-7B) wanders off the document; set
    those for a large student."""

    temperature: float = Field(default=0.0, description="0 = greedy (default, for a ~135M student); the paper's "
                               "0.8 with top_k 200 suits a 7B student.")
    top_k: int = Field(default=200, description="Top-k when sampling (paper: 200).")
    max_new_tokens: int = Field(default=128, description="Generated-token cap per document (paper: 250; a list of "
                                "ten short queries fits in ~100).")
    no_repeat_ngram_size: int = Field(default=0, description="> 1: never repeat an n-gram of the output (the prompt "
                                      "is exempt; transformers backend). Off: it corrupts copied names.")
    seed: int = Field(default=0, description="Base seed; shard i samples with seed + i.")
    min_new_tokens: int = Field(default=0, description="> 0 forces equal-length outputs (throughput benchmarks).")
    # On the demo a greedy 135M student writes ~4.8 distinct queries per document, 94% grounded; a second output
    # sampled at 0.7 from the prompt's words raises that to ~6, 93% grounded, for 2x the time (RESULTS.md).
    samples: int = Field(default=1, description="Outputs per document, merged into one query list: the first "
                         "decoded as above (greedy by default), the others sampled at diversity_temperature. More "
                         "samples, more distinct queries, proportionally more time.")
    diversity_temperature: float = Field(default=0.7, description="Temperature of the extra samples (top_k as "
                                         "above). Unconstrained sampling from a small student loses grounding fast "
                                         "(RESULTS.md).")
    prompt_words_only: bool = Field(default=False, description="Decode only tokens that spell words of the prompt "
                                    "(the document's title, text and known queries), line breaks and the end "
                                    "marker: a small student cannot write a fact its document lacks. Applies to the "
                                    "first output; off for a large student, and where users type words the "
                                    "documents never use.")
    samples_prompt_words_only: bool = Field(default=True, description="`prompt_words_only` for the extra samples: "
                                            "sampling from a 135M model is what invents facts (RESULTS.md measures "
                                            "it on the demo).")


def sample_settings(sampling: SamplingSettings, sample: int) -> SamplingSettings:
    """Decoding of output number `sample` of each document: the first as configured, each extra one sampled at
    `diversity_temperature` from its own seed (from the prompt's words when `samples_prompt_words_only`)."""
    if sample == 0:
        return sampling
    return sampling.with_(temperature=sampling.diversity_temperature, seed=sampling.seed + 100_003 * sample,
                          prompt_words_only=sampling.samples_prompt_words_only)
