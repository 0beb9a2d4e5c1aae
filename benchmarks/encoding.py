"""Encoding throughput: our `TextEncoder.encode` against sentence-transformers on the same saved folder.

    python benchmarks/encoding.py --quick              # < 1 minute: 256 demo texts
    python benchmarks/encoding.py                      # 2,000 demo texts, two rounds
    python benchmarks/encoding.py --dataset nfcorpus-dev   # titles of a shared BEIR dataset instead

Both read the folder a trained retriever is saved as (`TextEncoder.save`), so the vectors must agree; the script
prints texts/s of each, the ratio, and the largest difference between the two vectors of a text.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_line, markdown_table, shared_dataset  # noqa: E402
from skim_assets.lib.demo import DemoWorldConfig, generate_demo_world  # noqa: E402
from skim_assets.lib.encoders import TextEncoder  # noqa: E402


def texts_of(n: int, dataset: str | None) -> list[str]:
    if dataset:
        from skim_assets.lib.importers import read_beir

        folder, reason = shared_dataset(dataset)
        if folder is None:
            raise SystemExit(f"{dataset}: {reason}")
        return read_beir(folder).documents["title"].to_list()[:n]
    world = generate_demo_world(DemoWorldConfig(n_documents=max(20, n // 2)))
    texts = [d["text"] for d in world["documents"]] + [q["text"] for q in world["queries"]]
    return texts[:n]


def compare(texts: list[str], rounds: int, max_length: int = 32, batch_size: int = 64) -> dict:
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as folder:
        TextEncoder(device="cpu", max_length=max_length).save(folder, max_length)
        ours = TextEncoder(folder, device="cpu", max_length=max_length)
        theirs = SentenceTransformer(folder, device="cpu")
        ours.encode(texts[:8]), theirs.encode(texts[:8])  # warm-up
        figures = {"ours": [], "sentence-transformers": []}
        for _ in range(rounds):  # interleaved, so a busy machine slows both alike
            start = time.perf_counter()
            a = ours.encode(texts, batch_size=batch_size)
            figures["ours"].append(len(texts) / (time.perf_counter() - start))
            start = time.perf_counter()
            b = theirs.encode(texts, batch_size=batch_size)
            figures["sentence-transformers"].append(len(texts) / (time.perf_counter() - start))
        return {"texts_per_s": {k: float(np.median(v)) for k, v in figures.items()},
                "max_abs_diff": float(np.abs(a - b).max())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--texts", type=int)
    parser.add_argument("--dataset", help="a shared BEIR dataset whose titles to encode (default: the demo world)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = texts_of(args.texts or (256 if args.quick else 2000), args.dataset)
    result = compare(texts, rounds=1 if args.quick else 2)
    ours = result["texts_per_s"]["ours"]
    print(f"{machine_line()}\n{len(texts)} texts ({args.dataset or 'demo world'}), max length 32, batch 64\n")
    print(markdown_table(["encoder", "texts/s", "x ours"],
                         [[name, f"{v:.1f}", f"{v / ours:.2f}"] for name, v in result["texts_per_s"].items()]))
    print(f"\nlargest difference between the two vectors of a text: {result['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
