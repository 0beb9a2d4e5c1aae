"""Training throughput: the DEXML-style dual encoder (pairs/s) and LoRA SFT of the small LM (examples/s).

    python benchmarks/training.py --quick            # < 1 minute: 24-document world, 8 LoRA examples
    python benchmarks/training.py                    # 160-document demo world (the `make demo` size), 64 examples
    python benchmarks/training.py --skip-lora        # dual encoder only

Dual encoder: `skim_assets.lib.dual_encoder.train_dual_encoder` on the demo world's train labels (every train
(query, product) pair, weight 1), the bundled MiniLM, the demo profile's learning rate (1e-4), one epoch.
Baseline: the same run with in-batch negatives only (`hard_negatives=0`); the configured run mines 2 hard
negatives per pair from the top 20 (re-mined each epoch), which costs an encoding pass over all queries and
documents plus up to 2 x batch extra documents per step. pairs/s is the function's own figure (mining included).

LoRA SFT: `skim_assets.lib.distillation.train_lora_adapter` on SmolLM2-135M-Instruct (exported from the bundled
GGUF by `skim_assets.lib.slm.export_gguf_as_hf`, cached in the temp folder), demo student prompts with the
world's own queries as targets, r=8, the demo profile's effective batch 8, one epoch, fp32 on CPU.
Baseline: micro-batch 1 (8 forward/backward passes of one example per optimizer step) against the configured
micro-batch 8 (one pass of 8 length-sorted examples): same examples, same optimizer steps, same effective batch.
examples/s is the function's own figure (training loop only: not model loading, not the held-out loss passes).
Each part starts with a short untimed warm-up run, so the first variant does not pay first-call costs.
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
import polars as pl
import torch

from benchmarks._common import fmt, machine_line, markdown_table
from skim_assets.lib.demo import DemoWorldConfig, generate_demo_world

SMOLLM2_DIR = Path(tempfile.gettempdir()) / "skim_bench_smollm2"  # shared with benchmarks/generation.py


def world_tables(n_documents: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict]:
    """(pairs, queries, documents, world) of a demo world: every train label as a weight-1 pair."""
    world = generate_demo_world(DemoWorldConfig(n_documents=n_documents))
    documents = pl.DataFrame({"doc_id": [d["_id"] for d in world["documents"]],
                              "title": [d["title"] for d in world["documents"]],
                              "metadata": [d["text"] for d in world["documents"]]})
    queries = pl.DataFrame({"query_id": [q["_id"] for q in world["queries"]],
                            "text": [q["text"] for q in world["queries"]]})
    pairs = pl.DataFrame({"query_id": [q for q, _ in world["qrels"]["train"]],
                          "doc_id": [d for _, d in world["qrels"]["train"]],
                          "weight": [1.0] * len(world["qrels"]["train"])})
    return pairs, queries, documents, world


# the path before bf16 autocast and length buckets, then each change on its own, then the configured default
DUAL_ENCODER_VARIANTS = {
    "previous: fp32, shuffled batches": {"precision": "float32", "length_buckets": False, "remine_every": 1},
    "fp32 + length-bucketed batches": {"precision": "float32", "length_buckets": True, "remine_every": 1},
    "bf16 autocast, shuffled batches": {"precision": "auto", "length_buckets": False, "remine_every": 1},
    "bf16 autocast + length buckets": {"precision": "auto", "length_buckets": True, "remine_every": 1},
    "bf16 + buckets + cached negatives": {"precision": "auto", "length_buckets": True, "remine_every": 1,
                                          "cached_negatives": True},
    "bf16 + buckets + re-mining every 2 epochs (configured)": {"precision": "auto", "length_buckets": True,
                                                               "remine_every": 2},
}
REAL_VARIANTS = ("previous: fp32, shuffled batches", "bf16 autocast + length buckets",
                 "bf16 + buckets + re-mining every 2 epochs (configured)")


def real_dataset_tables(name: str, max_pairs: int | None = None, seed: int = 0):
    """(pairs, queries, documents, test qrels) of a shared BEIR dataset: train labels as weight-1 pairs (a seeded
    sample of `max_pairs` when given), or None when the dataset is absent."""
    from benchmarks._common import shared_dataset
    from skim_assets.lib.importers import read_beir

    folder, reason = shared_dataset(name)
    if folder is None:
        print(f"skipped {name}: {reason}")
        return None
    tables = read_beir(folder)
    split = tables.queries.select("query_id", "split")
    qrels = tables.qrels.join(split, on="query_id")
    pairs = qrels.filter(pl.col("split") == "train").select("query_id", "doc_id", weight=pl.lit(1.0))
    if max_pairs and pairs.height > max_pairs:
        pairs = pairs.sample(max_pairs, seed=seed)
    return pairs, tables.queries, tables.documents, qrels.filter(pl.col("split") == "test")


def dual_encoder_runs(n_documents: int, epochs: int = 1, variants: dict | None = None, tables=None,
                      evaluate: bool = False) -> dict:
    """pairs/s of train_dual_encoder per variant (a fresh MiniLM each): {name: report figures}. `tables` =
    (pairs, queries, documents, test qrels) of a real dataset (default: the demo world of `n_documents`);
    with `evaluate`, each trained encoder's R@10 / R@100 on the test qrels."""
    from skim_assets.lib.dual_encoder import DualEncoderConfig, rank_documents, train_dual_encoder
    from skim_assets.lib.encoders import TextEncoder
    from skim_assets.lib.metrics import evaluate_rankings

    pairs, queries, documents, test_qrels = tables or world_tables(n_documents)
    variants = variants or DUAL_ENCODER_VARIANTS
    # warm-up (first-call costs: thread pools, kernels), so the first variant is not penalised
    train_dual_encoder(TextEncoder(device="cpu"), pairs.head(16), queries, documents,
                       DualEncoderConfig(epochs=1, batch_size=8, hard_negatives=1, log_every_s=1e9),
                       progress=lambda _: None)
    results = {}
    for name, overrides in variants.items():
        encoder = TextEncoder(device="cpu")
        config = DualEncoderConfig(**{"epochs": epochs, "learning_rate": 1e-4, "log_every_s": 1e9, **overrides})
        report = train_dual_encoder(encoder, pairs, queries, documents, config, progress=lambda _: None)
        results[name] = {"pairs": report.pairs, "epochs": config.epochs, "steps": report.steps,
                         "seconds": report.seconds, "per_s": report.pairs_per_second,
                         "final_loss": report.epoch_losses[-1]}
        if evaluate and isinstance(test_qrels, pl.DataFrame):
            test = queries.join(test_qrels.select("query_id").unique(), on="query_id")
            metrics = evaluate_rankings(rank_documents(encoder, test, documents, k=100), test_qrels, ks=(10, 100))
            results[name] |= {"R@10": 100 * metrics["R@10"], "R@100": 100 * metrics["R@100"]}
        print(f"  {name}: {report.pairs_per_second:.1f} pairs/s" + (
            f", R@10 {results[name]['R@10']:.2f}, R@100 {results[name]['R@100']:.2f}"
            if "R@10" in results[name] else ""),
            flush=True)
    return results


def smollm2_path() -> Path:
    if not (SMOLLM2_DIR / "config.json").exists():
        from skim_assets.lib.slm import export_gguf_as_hf

        print("exporting the bundled SmolLM2-135M-Instruct ...", flush=True)
        export_gguf_as_hf(SMOLLM2_DIR)
    return SMOLLM2_DIR


def lora_examples(n_examples: int) -> tuple[list[str], list[str]]:
    """Demo student prompts (with metadata) and targets: each product's own train and test queries."""
    from skim_assets.lib.prompts import student_prompt, student_target

    world = generate_demo_world(DemoWorldConfig(n_documents=max(n_examples, 24)))
    text_of = {q["_id"]: q["text"] for q in world["queries"]}
    queries_of: dict[str, list[str]] = {}
    for split in ("train", "test"):
        for q, d in world["qrels"][split]:
            queries_of.setdefault(d, []).append(text_of[q])
    docs = world["documents"][:n_examples]
    prompts = [student_prompt(d["title"], d["text"], [], "url-queries") for d in docs]
    targets = [student_target(queries_of.get(d["_id"], [])[:10]) for d in docs]
    return prompts, targets


def lora_runs(base: Path, n_examples: int, variants: dict | None = None, max_prompt_tokens: int = 320) -> dict:
    """examples/s of train_lora_adapter per micro-batch size (effective batch 8, one epoch)."""
    from skim_assets.lib.distillation import LoraSftConfig, train_lora_adapter

    prompts, targets = lora_examples(n_examples)
    variants = variants or {"micro-batch 1 (x8 accumulation), fp32": (1, "fp32"),
                            "micro-batch 8, fp32": (8, "fp32"),
                            "micro-batch 8, auto precision (configured)": (8, "auto")}
    with tempfile.TemporaryDirectory() as out:  # warm-up: one step of 2 examples
        train_lora_adapter(base, prompts[:3], targets[:3], out,
                           LoraSftConfig(epochs=1, effective_batch_size=2, micro_batch_size=2,
                                         max_prompt_tokens=64, log_every_s=1e9), progress=lambda _: None, device="cpu")
    results = {}
    for name, (micro, precision) in variants.items():
        config = LoraSftConfig(epochs=1, effective_batch_size=8, micro_batch_size=micro,
                               max_prompt_tokens=max_prompt_tokens, log_every_s=1e9, precision=precision, min_steps=0)
        with tempfile.TemporaryDirectory() as out:
            report = train_lora_adapter(base, prompts, targets, out, config, progress=lambda _: None, device="cpu")
        name = name.replace("auto precision", f"auto = {report.precision}")
        results[name] = {"examples": report.train_examples, "steps": report.steps, "seconds": report.seconds,
                         "per_s": report.examples_per_second,
                         "loss": (report.holdout_loss_before, report.holdout_loss_after)}
    return results


def print_table(title: str, unit: str, results: dict) -> float:
    baseline = next(iter(results.values()))["per_s"]
    quality = all("R@10" in r for r in results.values())
    rows = [[name, r.get("pairs", r.get("examples")), r["steps"], fmt(r["seconds"], 1), fmt(r["per_s"], 2),
             fmt(r["per_s"] / baseline, 2), *([fmt(r["R@10"], 2), fmt(r["R@100"], 2)] if quality else [])]
            for name, r in results.items()]
    print(f"\n{title}\n")
    print(markdown_table(["run", unit, "optimizer steps", "seconds", f"{unit}/s", "x first row",
                          *(["test R@10", "test R@100"] if quality else [])], rows))
    configured = next((r for name, r in results.items() if "(configured)" in name), list(results.values())[-1])
    return configured["per_s"] / baseline


def pick_variant(prefix: str) -> str:
    matches = [name for name in DUAL_ENCODER_VARIANTS if name.startswith(prefix)]
    if len(matches) != 1:
        raise SystemExit(f"--variants {prefix!r} matches {matches or 'nothing'}; names: {list(DUAL_ENCODER_VARIANTS)}")
    return matches[0]


def print_seed_spread(by_seed: dict) -> None:
    """Mean and range over seeds of each variant's test recall and pairs/s."""
    seeds = list(by_seed)
    rows = []
    for variant in by_seed[seeds[0]]:
        runs = [by_seed[seed][variant] for seed in seeds]
        cells = []
        for key in ("R@10", "R@100", "per_s"):
            values = np.array([r[key] for r in runs])
            cells.append(f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})")
        rows.append([variant, *cells, ", ".join(f"{r['R@10']:.2f}/{r['R@100']:.2f}" for r in runs)])
    print(f"\nOver seeds {seeds}: mean (min-max)\n")
    print(markdown_table(["run", "test R@10", "test R@100", "pairs/s", "R@10/R@100 per seed"], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--documents", type=int, help="demo world size for the dual encoder (default 160; quick 24)")
    parser.add_argument("--epochs", type=int, default=1, help="dual-encoder epochs")
    parser.add_argument("--examples", type=int, help="LoRA SFT examples (default 64; quick 10)")
    parser.add_argument("--skip-lora", action="store_true")
    parser.add_argument("--skip-demo", action="store_true", help="no demo-world dual-encoder runs")
    parser.add_argument("--real", nargs="*", default=[], metavar="DATASET",
                        help="also train on these shared datasets' titles (scifact, nfcorpus-dev): SciFact on all "
                             "train labels (the oracle row) for --real-epochs with test recall, others on a seeded "
                             "sample of --real-pairs train labels for one epoch")
    parser.add_argument("--real-pairs", type=int, default=4096)
    parser.add_argument("--real-epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seeds of the --real runs: "
                        "several give each variant's spread (mean and range printed)")
    parser.add_argument("--variants", nargs="*", help="names (or unique prefixes) of the dual-encoder variants "
                        "of the --real runs (default: the previous path, the configured one, cached negatives)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n_documents = args.documents or (24 if args.quick else 160)
    n_examples = args.examples or (10 if args.quick else 64)
    print(f"machine: {machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    started = time.perf_counter()
    if not args.skip_demo:
        dual = dual_encoder_runs(n_documents, args.epochs)
        print(f"dual encoder runs done in {time.perf_counter() - started:.0f}s", flush=True)
        ratio = print_table(f"Dual encoder (bundled MiniLM, demo world of {n_documents} products, every train label, "
                            f"{args.epochs} epoch(s), batch 64, 2 mined hard negatives per pair):", "pairs", dual)
        print(f"\nThe configured path trains {ratio:.2f}x the pairs/s of the previous one.")
    for name in args.real:
        oracle = name == "scifact"
        tables = real_dataset_tables(name, None if oracle else args.real_pairs)
        if tables is None:
            continue
        epochs = args.real_epochs if oracle else 1
        chosen = [pick_variant(v) for v in args.variants] if args.variants else list(REAL_VARIANTS)
        by_seed = {}
        for seed in args.seeds:
            variants = {variant: {**DUAL_ENCODER_VARIANTS[variant], "seed": seed} for variant in chosen}
            print(f"{name}, seed {seed}:", flush=True)
            by_seed[seed] = dual_encoder_runs(0, epochs, variants=variants, tables=tables, evaluate=oracle)
        dual = by_seed[args.seeds[0]]
        ratio = print_table(f"Dual encoder on {name} titles ({tables[0].height} train pairs, {epochs} epoch(s), "
                            f"batch 64, 2 mined hard negatives; seed {args.seeds[0]}):", "pairs", dual)
        print(f"\nThe configured path trains {ratio:.2f}x the pairs/s of the previous one on {name}.")
        if len(args.seeds) > 1 and oracle:
            print_seed_spread(by_seed)
    if not args.skip_lora:
        base = smollm2_path()
        lora = lora_runs(base, n_examples, max_prompt_tokens=96 if args.quick else 320)
        ratio = print_table(f"LoRA SFT (SmolLM2-135M-Instruct, r=8, {n_examples} demo examples minus 10% "
                            f"held out, effective batch 8, 1 epoch):", "examples", lora)
        print(f"\nThe configured run gives {ratio:.2f}x the examples/s of micro-batch 1 in fp32.")
        for name, r in lora.items():
            print(f"- {name}: held-out target loss {r['loss'][0]:.3f} -> {r['loss'][1]:.3f}")


if __name__ == "__main__":
    main()
