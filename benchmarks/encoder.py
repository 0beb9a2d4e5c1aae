"""Encoder throughput: the bundled MiniLM on CPU, TextEncoder.encode vs one sentence at a time.

    python benchmarks/encoder.py --quick             # < 1 minute: 300 texts
    python benchmarks/encoder.py                     # every SciFact title (5,183) or 2,000 demo-world texts
    python benchmarks/encoder.py --max-length 128    # another token cap (the pipeline uses 32)

Texts: SciFact titles from ../shared/data/scifact when present (short claims-like titles of varied length),
else the demo world's titles, queries and metadata paragraphs (skim_assets.lib.demo), in file order.
Three ways to embed the same texts with the same model and token cap:
  naive loop        one `embed([text])` call per text in file order, under torch.no_grad (no batching, no sorting)
  batched, unsorted batches of 64 in file order under torch.inference_mode (isolates what length sorting adds)
  TextEncoder.encode the project's path: batches of 64 of length-sorted texts, inference_mode
and, when sentence-transformers is installed (the `dev` extra), `SentenceTransformer.encode` on the folder
`TextEncoder.save` writes (what a trained retriever is saved as). Prints sentences/s and the ratio against the naive
loop measured in the same run, and checks that all three give the same vectors.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks._common import fmt, machine_line, markdown_table, shared_dataset


def load_texts(n: int | None) -> tuple[list[str], str]:
    """(texts, where they come from): SciFact titles when present, else demo-world texts."""
    folder, reason = shared_dataset("scifact")
    if folder is not None:
        from skim_assets.lib.importers import read_beir

        titles = read_beir(folder).documents["title"].to_list()
        return titles[:n], f"SciFact titles ({folder})"
    from skim_assets.lib.demo import DemoWorldConfig, generate_demo_world

    world = generate_demo_world(DemoWorldConfig(n_documents=max(200, (n or 2000) // 3)))
    texts = [t for d in world["documents"] for t in (d["title"], d["text"])] + [q["text"] for q in world["queries"]]
    return texts[: n or 2000], f"demo world titles, metadata and queries (SciFact skipped: {reason})"


def naive_loop(encoder, texts: list[str], max_length: int) -> np.ndarray:
    with torch.no_grad():
        return np.stack([encoder.embed([t], max_length)[0].float().cpu().numpy() for t in texts])


def batched_unsorted(encoder, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([encoder.embed(texts[i : i + batch_size], max_length).float().cpu().numpy()
                               for i in range(0, len(texts), batch_size)])


def run(texts: list[str], max_length: int = 32, batch_size: int = 64, encoder=None) -> dict:
    """Sentences/s of the three ways on `texts`; returns {name: {"seconds", "per_s"}} plus "max_abs_diff"."""
    from skim_assets.lib.encoders import TextEncoder

    encoder = encoder or TextEncoder(device="cpu", max_length=max_length)
    ways = {
        "naive loop (1 at a time, file order)": lambda: naive_loop(encoder, texts, max_length),
        f"batched ({batch_size}), unsorted": lambda: batched_unsorted(encoder, texts, max_length, batch_size),
        f"TextEncoder.encode (batch {batch_size}, length-sorted)":
            lambda: encoder.encode(texts, batch_size=batch_size, max_length=max_length),
    }
    encoder.encode(texts[:batch_size], batch_size=batch_size, max_length=max_length)  # warm-up
    naive_loop(encoder, texts[:8], max_length)
    with tempfile.TemporaryDirectory() as folder:
        try:
            from sentence_transformers import SentenceTransformer

            saved = SentenceTransformer(str(encoder.save(folder, max_length)), device="cpu")
            saved.encode(texts[:8])  # warm-up
            ways[f"sentence-transformers on the saved folder (batch {batch_size})"] = \
                lambda: saved.encode(texts, batch_size=batch_size)
        except ImportError:
            pass
        results, vectors = {}, []
        for name, way in ways.items():
            started = time.perf_counter()
            vectors.append(way())
            seconds = time.perf_counter() - started
            results[name] = {"seconds": seconds, "per_s": len(texts) / seconds}
    return {"ways": results, "max_abs_diff": float(max(np.abs(v - vectors[0]).max() for v in vectors)),
            "texts": len(texts), "tokens_mean": float(np.mean([len(encoder.tokenizer(t)["input_ids"]) for t in texts]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 texts")
    parser.add_argument("--texts", type=int, help="how many texts (default: all SciFact titles / 2,000 demo texts)")
    parser.add_argument("--max-length", type=int, default=32, help="token cap (the pipeline's default is 32)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts, source = load_texts(args.texts or (300 if args.quick else None))
    print(f"machine: {machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    print(f"{len(texts):,} texts: {source}; bundled all-MiniLM-L6-v2, max_length {args.max_length}", flush=True)
    result = run(texts, args.max_length, args.batch_size)
    baseline = next(iter(result["ways"].values()))["per_s"]
    rows = [[name, fmt(r["seconds"], 2), fmt(r["per_s"], 1), fmt(r["per_s"] / baseline, 2)]
            for name, r in result["ways"].items()]
    print()
    print(markdown_table(["way", "seconds", "sentences/s", "x naive loop"], rows))
    ratio = next(r for name, r in result["ways"].items() if name.startswith("TextEncoder"))["per_s"] / baseline
    print(f"\nmean {result['tokens_mean']:.1f} tokens per text (before the cap); largest difference between the ways' "
          f"vectors {result['max_abs_diff']:.1e}. TextEncoder.encode is {ratio:.2f}x the naive loop "
          f"(target >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}).")


if __name__ == "__main__":
    main()
