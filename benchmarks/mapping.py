"""Mapping search: hnswlib k-NN (k=10) vs exact blocked matrix-product search, the two searches SKIM's mapping uses.

    python benchmarks/mapping.py --quick            # < 1 minute: N = M = 20K synthetic, a SciFact slice
    python benchmarks/mapping.py                    # N = M = 100K and 1M synthetic, all of SciFact (~10 min)
    python benchmarks/mapping.py --sizes 100000     # one size

N query vectors are searched against M indexed vectors (384-dim, unit norm) with the project's own functions:
`skim_assets.lib.retrieval.exact_topk` (blocked `queries @ items.T` + top-k, what Algorithm 1, negative mining
and the recall check use) and `build_hnsw_index` / `hnsw_search` (what the mapping's `mapping_candidates` uses, as
`hnsw_topk`: the two together). Synthetic vectors come from a Gaussian mixture with low intrinsic dimension
(`benchmarks._common.ClusteredSpace`), so recall is meaningful; a second part embeds SciFact's titles and queries
with the bundled MiniLM (`../shared/data/scifact`; skipped with the reason printed when absent).

Exact search over all queries takes hours at 1M on 2 cores, so exact throughput and the ground truth come from a
random sample of `--exact-sample` queries (the output says so). hnswlib is built once (M, ef_construction), an
ef_search sweep runs on a sample of queries, and the smallest swept ef reaching `--target-recall` is then run
over all N queries. Peak memory is the growth of resident memory (C allocations included) during each stage.
Prints Markdown tables; ratios are against exact search measured in the same run.
"""

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import ClusteredSpace, fmt, machine_line, markdown_table, measure, recall_at_k, shared_dataset
from skim_assets.lib.retrieval import build_hnsw_index, exact_topk, hnsw_search

DEFAULT_SWEEP = (10, 20, 40, 80, 160, 320)


def benchmark_vectors(items: np.ndarray, queries: np.ndarray, *, k: int = 10, m: int = 16, ef_construction: int = 100,
                      ef_sweep=DEFAULT_SWEEP, target_recall: float = 0.95, exact_sample: int = 2000,
                      sweep_sample: int = 10_000, threads: int = 2, seed: int = 0, say=print) -> dict:
    """Exact vs hnswlib on one (items, queries) pair. Returns figures (all floats/ints) for the tables.

    exact: timed on `exact_sample` random queries (all when fewer); hnsw: index built once, ef sweep timed on
    `sweep_sample` queries (recall on the exact sample, which it contains), then all queries at the chosen ef.
    """
    rng = np.random.default_rng(seed)
    n_queries = len(queries)
    sweep_ids = rng.permutation(n_queries)[: min(sweep_sample, n_queries)]
    exact_ids = sweep_ids[: min(exact_sample, len(sweep_ids))]  # the exact sample is part of the sweep sample

    say(f"  exact search of {len(exact_ids):,} queries against {len(items):,} items ...")
    with measure() as exact_m:
        truth, truth_scores = exact_topk(queries[exact_ids], items, k)
    exact_qps = len(exact_ids) / exact_m.seconds

    say(f"  building hnswlib (M={m}, ef_construction={ef_construction}, {threads} threads) ...")
    with measure() as build_m:
        index = build_hnsw_index(items, m=m, ef_construction=ef_construction, seed=seed, num_threads=threads)

    sweep = []
    for ef in ef_sweep:
        with measure() as sweep_m:
            found, _ = hnsw_search(index, queries[sweep_ids], k, ef_search=ef, num_threads=threads)
        recall = recall_at_k(found[: len(exact_ids)], truth)
        sweep.append({"ef": ef, "recall": recall, "qps": len(sweep_ids) / sweep_m.seconds})
        say(f"  ef {ef}: recall@{k} {recall:.4f}, {sweep[-1]['qps']:,.0f} queries/s")
        if recall >= 0.999:
            break  # larger ef only costs time
    reaching = [s for s in sweep if s["recall"] >= target_recall]
    chosen = reaching[0] if reaching else sweep[-1]

    say(f"  hnswlib search of all {n_queries:,} queries at ef {chosen['ef']} ...")
    with measure() as search_m:
        found, _ = hnsw_search(index, queries, k, ef_search=chosen["ef"], num_threads=threads)
    hnsw_qps = n_queries / search_m.seconds
    recall = recall_at_k(found[exact_ids], truth)
    del index
    return {
        "items": len(items), "queries": n_queries, "k": k, "m": m, "ef_construction": ef_construction,
        "exact_sample": len(exact_ids), "sweep_sample": len(sweep_ids), "threads": threads,
        "exact_seconds": exact_m.seconds, "exact_qps": exact_qps, "exact_peak_mib": exact_m.peak_mib,
        "exact_all_seconds_estimate": n_queries / exact_qps,
        "build_seconds": build_m.seconds, "build_peak_mib": build_m.peak_mib,
        "ef": chosen["ef"], "reached_target": bool(reaching), "target_recall": target_recall,
        "hnsw_seconds": search_m.seconds, "hnsw_qps": hnsw_qps, "hnsw_peak_mib": search_m.peak_mib,
        "recall": recall, "speedup": hnsw_qps / exact_qps,
        "end_to_end_speedup": (n_queries / exact_qps) / (build_m.seconds + search_m.seconds),
        "memory_method": build_m.method, "sweep": sweep,
        "median_cos_1": float(np.median(truth_scores[:, 0])), "median_cos_k": float(np.median(truth_scores[:, -1])),
    }


def synthetic(n: int, *, seed: int = 0, **settings) -> dict:
    """N = M = n synthetic clustered vectors (items and queries drawn separately from one space)."""
    space = ClusteredSpace(seed=seed)
    started = time.perf_counter()
    items, queries = space.sample(n, seed=seed + 1), space.sample(n, seed=seed + 2)
    result = benchmark_vectors(items, queries, seed=seed, **settings)
    result["name"] = f"synthetic {n:,} x {n:,}"
    result["generate_seconds"] = time.perf_counter() - started - result["exact_seconds"] - result["build_seconds"]
    return result


def scifact(folder: Path, *, max_documents: int | None = None, max_queries: int | None = None, **settings) -> dict:
    """SciFact titles (indexed) and queries embedded by the bundled MiniLM (the project's TextEncoder)."""
    from skim_assets.lib.encoders import TextEncoder
    from skim_assets.lib.importers import read_beir

    tables = read_beir(folder)
    titles = tables.documents["title"].to_list()[:max_documents]
    texts = tables.queries["text"].to_list()[:max_queries]
    encoder = TextEncoder(device="cpu")
    started = time.perf_counter()
    items, queries = encoder.encode(titles, max_length=32), encoder.encode(texts, max_length=32)
    encode_seconds = time.perf_counter() - started
    result = benchmark_vectors(items, queries, **settings)
    result["name"] = f"SciFact MiniLM {len(texts):,} queries x {len(titles):,} titles"
    result["encode_seconds"] = encode_seconds
    return result


def print_tables(results: list[dict]) -> None:
    rows = []
    for r in results:
        rows.append([r["name"], f"exact (blocked matmul), {r['exact_sample']:,} sampled queries", "-",
                     fmt(r["exact_qps"], 1), "1.000", fmt(r["exact_peak_mib"], 0), "1.0",
                     fmt(r["exact_all_seconds_estimate"], 1)])
        rows.append([r["name"], f"hnswlib M={r['m']} efC={r['ef_construction']} ef={r['ef']}, all queries",
                     fmt(r["build_seconds"], 1), fmt(r["hnsw_qps"], 1), f"{r['recall']:.3f}",
                     f"{fmt(r['build_peak_mib'], 0)} build / {fmt(r['hnsw_peak_mib'], 0)} search",
                     fmt(r["speedup"], 1), fmt(r["build_seconds"] + r["hnsw_seconds"], 1)])
    print(markdown_table(["vectors", "method", "build s", "queries/s", "recall@10", "peak MiB",
                          "x exact (queries/s)", "all queries s (exact: estimated)"], rows, "llrrrrrr"))
    print()
    sweep_rows = [[r["name"], s["ef"], f"{s['recall']:.4f}", fmt(s["qps"], 0), fmt(s["qps"] / r["exact_qps"], 1)]
                  for r in results for s in r["sweep"]]
    print(f"ef_search sweep (queries/s on {results[0]['sweep_sample']:,} sampled queries, or all when fewer; "
          f"recall@10 against exact search on the exact sample of {results[0]['exact_sample']:,}, or all):\n")
    print(markdown_table(["vectors", "ef", "recall@10", "queries/s", "x exact"], sweep_rows, "lrrrr"))
    print()
    for r in results:
        verdict = "met" if (r["reached_target"] and r["speedup"] >= 10) else "NOT met"
        if r["items"] < 1_000_000:
            verdict += " (the target is set at 1M)"
        print(f"- {r['name']}: hnswlib at ef {r['ef']} has recall@10 {r['recall']:.3f} and {r['speedup']:.1f}x the "
              f"queries/s of exact search; build + all queries {r['end_to_end_speedup']:.1f}x faster than exact "
              f"over all queries (estimated). Target (recall >= {r['target_recall']}, >= 10x): {verdict}. "
              f"Median cosine of the 1st / 10th exact neighbour: {r['median_cos_1']:.2f} / {r['median_cos_k']:.2f}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = M = 20K synthetic and 500 SciFact titles")
    parser.add_argument("--sizes", type=int, nargs="+", help="N = M sizes (default 100000 1000000; quick 20000)")
    parser.add_argument("--m", type=int, default=16, help="hnswlib M")
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef", type=int, nargs="+", default=list(DEFAULT_SWEEP), help="ef_search values to sweep")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--exact-sample", type=int, default=2000, help="queries searched exactly (ground truth)")
    parser.add_argument("--sweep-sample", type=int, default=10_000, help="queries timed per ef in the sweep")
    parser.add_argument("--threads", type=int, default=2, help="hnswlib threads (numpy/torch use all cores)")
    parser.add_argument("--no-real", action="store_true", help="skip the SciFact/MiniLM part")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = args.sizes or ([20_000] if args.quick else [100_000, 1_000_000])
    settings = dict(m=args.m, ef_construction=args.ef_construction, ef_sweep=tuple(args.ef),
                    target_recall=args.target_recall, exact_sample=args.exact_sample,
                    sweep_sample=args.sweep_sample, threads=args.threads)
    print(f"machine: {machine_line()}", flush=True)
    results = []
    for n in sizes:
        print(f"synthetic N = M = {n:,} (384-dim clustered unit vectors) ...", flush=True)
        results.append(synthetic(n, say=lambda s: print(s, flush=True), **settings))
    reason = "--no-real given" if args.no_real else ""
    folder = None
    if not reason:
        folder, reason = shared_dataset("scifact")
    if folder is not None:
        print("SciFact: embedding titles and queries with the bundled MiniLM ...", flush=True)
        real = scifact(folder, max_documents=500 if args.quick else None, max_queries=200 if args.quick else None,
                       say=lambda s: print(s, flush=True), **settings)
        print(f"  encoded in {real['encode_seconds']:.1f}s", flush=True)
        results.append(real)
    print()
    print_tables(results)
    if folder is None:
        print(f"- SciFact/MiniLM part skipped: {reason}")
    print(f"\nExact search: `exact_topk` (numpy matmul, score blocks of at most 2^26 entries, torch.topk). Its "
          f"ground truth and queries/s come from a random sample of {args.exact_sample:,} queries per size; "
          f"'all queries s' for exact is that rate extrapolated to every query. Peak MiB: growth of resident "
          f"memory during the stage ({results[0]['memory_method']}).")


if __name__ == "__main__":
    main()
