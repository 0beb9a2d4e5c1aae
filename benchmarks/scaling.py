"""Scaling of the cheap CPU stages with the number of documents: time, peak memory, growth exponents, a plot.

    python benchmarks/scaling.py --quick                       # < 1 minute: 1K and 5K documents
    python benchmarks/scaling.py                               # 1K, 5K, 20K, 100K documents (~4 minutes)
    python benchmarks/scaling.py --sizes 1000 10000 --out /tmp/scaling.png

What runs, per size N (documents), with the project's own functions on a synthetic dataset:
  setup (not timed)  N documents (title of 3-5 words, a 30-word text), N/2 queries (80% train, 20% test), each
                     query relevant to 1-3 random documents, written as a BEIR folder; 384-dim unit vectors in
                     place of the MiniLM encoder and the small LM (which would take hours at 100K on 2 cores):
                     documents from `ClusteredSpace`, each query near the sum of its relevant documents, 2
                     synthetic queries per document near their document (see `related_vectors`); one 200-document
                     warm-up run first (imports, first calls), not reported
  import             `lib.datasets.import_tables` (BEIR reader + every validation)
  ranking            Algorithm 1's exposure ranking: exact top-100 documents for every query
                     (`lib.retrieval.exact_topk` + `topk_frame`), what `simulated_clicks` does after encoding
  simulation         `simulate_clicks` (exposure 10) on train and test labels, `missing_at_random_sample`,
                     `labels_as_pairs`, `exposure_curve`
  mapping            `lib.mapping.map_once` (hnswlib with the asset defaults M=32, ef 200; its
                     recall check against exact search on 1,000 synthetic queries; the pair table)
  metrics            `lib.metrics.evaluate_rankings` (P/R/nDCG/PSP at 1..100) of the test queries' rankings with
                     `click_propensities` from the clicks
Not included: encoding, dual-encoder/one-vs-all training, teacher, LoRA, generation, Dagster.

Peak memory is the growth of resident memory during the stage (C allocations included). The growth exponent
is the least-squares slope of log(seconds) (or log(MiB)) over log(N). Writes a PNG (matplotlib, Agg) to --out.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import ClusteredSpace, fmt, machine_line, markdown_table, measure

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scaling.png"
STAGES = ("import", "ranking", "simulation", "mapping", "metrics")
WORDS = ("alpha beta gamma delta omega sigma theta kappa lambda zeta cell protein gene drug trial dose brain heart "
         "tumor virus immune signal pathway model mouse human risk rate effect study level growth factor").split()


def write_synthetic_dataset(folder: Path, n_documents: int, seed: int = 0) -> dict:
    """A BEIR folder with N documents and N/2 queries (each relevant to 1-3 random documents)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    words = np.array(WORDS)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for i in range(n_documents):
            title = " ".join(words[rng.integers(len(words), size=rng.integers(3, 6))])
            text = " ".join(words[rng.integers(len(words), size=30)])
            out.write(json.dumps({"_id": f"D{i}", "title": f"{title} {i}", "text": text}) + "\n")
    n_queries = max(n_documents // 2, 10)
    split = np.where(rng.random(n_queries) < 0.8, "train", "test")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for i in range(n_queries):
            out.write(json.dumps({"_id": f"Q{i}",
                                  "text": " ".join(words[rng.integers(len(words), size=5)]) + f" {i}"}) + "\n")
    files = {s: open(folder / "qrels" / f"{s}.tsv", "w", encoding="utf-8") for s in ("train", "test")}
    for f in files.values():
        f.write("query-id\tcorpus-id\tscore\n")
    for i in range(n_queries):
        for d in rng.choice(n_documents, size=rng.integers(1, 4), replace=False):
            files[split[i]].write(f"Q{i}\tD{d}\t1\n")
    for f in files.values():
        f.close()
    (folder / "dataset.json").write_text(json.dumps({"format": "beir", "source": ".", "exposure_k": 10}))
    return {"documents": n_documents, "queries": n_queries}


def _normalised(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def related_vectors(space: ClusteredSpace, documents, queries, qrels, synthetic_per_document: int, seed: int):
    """Vectors that behave like an encoder's: a query lies near the sum of its relevant documents, a synthetic
    query near its document (each plus a random vector of the space at half / 0.7 weight), so the exposure
    ranking finds some relevant documents and the mapping finds related train queries."""
    doc_vectors = space.sample(documents.height, seed=seed + 1)
    doc_row = {d: i for i, d in enumerate(documents["doc_id"].to_list())}
    query_row = {q: i for i, q in enumerate(queries["query_id"].to_list())}
    query_vectors = 0.5 * space.sample(queries.height, seed=seed + 2)
    np.add.at(query_vectors, [query_row[q] for q in qrels["query_id"].to_list()],
              doc_vectors[[doc_row[d] for d in qrels["doc_id"].to_list()]])
    synthetic = np.repeat(doc_vectors, synthetic_per_document, axis=0)
    synthetic += 0.7 * space.sample(len(synthetic), seed=seed + 3)
    return doc_vectors, _normalised(query_vectors), _normalised(synthetic)


def run_size(n_documents: int, workdir: Path, synthetic_per_document: int = 2, seed: int = 0) -> dict:
    """Seconds and peak MiB of every stage for one size."""
    import polars as pl

    from skim_assets.lib.baselines import click_propensities
    from skim_assets.lib.datasets import import_tables, read_spec
    from skim_assets.lib.mapping import MappingSettings, map_once
    from skim_assets.lib.metrics import evaluate_rankings
    from skim_assets.lib.retrieval import exact_topk, topk_frame
    from skim_assets.lib.simulation import exposure_curve, labels_as_pairs, missing_at_random_sample, simulate_clicks

    folder = workdir / f"n{n_documents}"
    write_synthetic_dataset(folder, n_documents, seed)
    space = ClusteredSpace(seed=seed)
    figures = {}

    with measure() as m:
        tables = import_tables(folder, read_spec(folder))
    figures["import"] = m
    documents, queries = tables.documents, tables.queries
    doc_vectors, query_vectors, synthetic_vectors = related_vectors(space, documents, queries, tables.qrels,
                                                                    synthetic_per_document, seed)

    depth = min(100, documents.height)
    with measure() as m:
        indices, scores = exact_topk(query_vectors, doc_vectors, depth)
        ranked = topk_frame(queries["query_id"], documents["doc_id"], indices, scores)
    figures["ranking"] = m
    del indices, scores

    qrels = tables.qrels.join(queries.select("query_id", "split"), on="query_id")
    train_labels, test_labels = (qrels.filter(pl.col("split") == s).drop("split") for s in ("train", "test"))
    with measure() as m:
        clicks = simulate_clicks(ranked, train_labels, exposure_k=10)
        biased_test = simulate_clicks(ranked, test_labels, exposure_k=10)
        mar = missing_at_random_sample(train_labels, clicks.height)
        oracle = labels_as_pairs(train_labels, "oracle")
        curve = exposure_curve(ranked, train_labels)
    figures["simulation"] = m

    train_mask = (queries["split"] == "train").to_numpy()
    train_ids = queries.filter(pl.col("split") == "train")["query_id"].to_list()
    synthetic_doc_ids = np.repeat(np.asarray(documents["doc_id"].to_list(), dtype=object),
                                  synthetic_per_document).tolist()
    with measure() as m:
        pairs, stats = map_once(synthetic_doc_ids, synthetic_vectors, train_ids, query_vectors[train_mask],
                                MappingSettings())
    figures["mapping"] = m

    test_ids = queries.filter(pl.col("split") == "test").select("query_id")
    with measure() as m:
        propensities = click_propensities(documents, clicks, 0.55, 1.5)
        test_ranked = ranked.join(test_ids, on="query_id")
        unbiased = evaluate_rankings(test_ranked, test_labels, (1, 5, 10, 25, 100), propensities)
        biased = evaluate_rankings(test_ranked, biased_test.rename({"weight": "relevance"}).drop("source"),
                                   (1, 5, 10, 25, 100), propensities)
    figures["metrics"] = m

    return {
        "documents": documents.height, "queries": queries.height, "labels": tables.qrels.height,
        "synthetic_queries": len(synthetic_doc_ids), "clicks": clicks.height, "mar": mar.height,
        "oracle": oracle.height, "exposure_points": curve.height, "mapped_pairs": pairs.height,
        "hnsw_recall": stats["hnsw_recall"], "unbiased_R@100": unbiased["R@100"], "biased_R@100": biased["R@100"],
        "seconds": {s: figures[s].seconds for s in STAGES},
        "peak_mib": {s: figures[s].peak_mib for s in STAGES},
        "memory_method": figures["import"].method,
    }


def growth_exponent(sizes, values) -> float:
    """Least-squares slope of log(values) on log(sizes) (nan with fewer than two usable points)."""
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    keep = values > 0
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes[keep]), np.log(values[keep]), 1)[0])


def plot(results: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["documents"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    for stage in (*STAGES, "total"):
        seconds = [sum(r["seconds"].values()) if stage == "total" else r["seconds"][stage] for r in results]
        style = {"color": "black", "linewidth": 2} if stage == "total" else {}
        left.plot(sizes, seconds, marker="o", label=f"{stage} (x^{growth_exponent(sizes, seconds):.2f})", **style)
        if stage != "total":
            right.plot(sizes, [max(r["peak_mib"][stage], 0.1) for r in results], marker="o", label=stage)
    for axis, title, ylabel in ((left, "time per stage", "seconds"), (right, "peak extra resident memory", "MiB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("documents")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle("skim_assets CPU stages vs corpus size (synthetic data, random vectors)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def print_tables(results: list[dict]) -> None:
    sizes = [r["documents"] for r in results]
    rows = []
    for r in results:
        rows.append([f"{r['documents']:,}", f"{r['queries']:,}", f"{r['synthetic_queries']:,}",
                     *[fmt(r["seconds"][s], 2) for s in STAGES], fmt(sum(r["seconds"].values()), 2),
                     *[fmt(r["peak_mib"][s], 0) for s in STAGES]])
    rows.append(["growth exponent", "", "",
                 *[f"{growth_exponent(sizes, [r['seconds'][s] for r in results]):.2f}" for s in STAGES],
                 f"{growth_exponent(sizes, [sum(r['seconds'].values()) for r in results]):.2f}",
                 *[f"{growth_exponent(sizes, [r['peak_mib'][s] for r in results]):.2f}" for s in STAGES]])
    print(markdown_table(["documents", "queries", "synthetic queries", *[f"{s} s" for s in STAGES], "total s",
                          *[f"{s} MiB" for s in STAGES]], rows))
    print()
    for r in results:
        print(f"- {r['documents']:,} documents: {r['labels']:,} labels, {r['clicks']:,} clicks, {r['mapped_pairs']:,} "
              f"mapped pairs, hnsw recall@10 {r['hnsw_recall']:.3f}, unbiased R@100 {r['unbiased_R@100']:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1K and 5K documents only")
    parser.add_argument("--sizes", type=int, nargs="+", help="documents per run (default 1000 5000 20000 100000)")
    parser.add_argument("--synthetic-per-document", type=int, default=2, help="synthetic queries per document")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"PNG path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1000, 5000] if args.quick else [1000, 5000, 20_000, 100_000])
    print(f"machine: {machine_line()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="skim_scaling_") as tmp:
        run_size(200, Path(tmp), args.synthetic_per_document)  # warm-up: imports (torch, hnswlib) and first calls
        for n in sizes:
            print(f"{n:,} documents ...", flush=True)
            results.append(run_size(n, Path(tmp), args.synthetic_per_document))
            print("  " + ", ".join(f"{s} {results[-1]['seconds'][s]:.2f}s" for s in STAGES), flush=True)
    print()
    print_tables(results)
    out = plot(results, Path(args.out))
    print(f"\nPeak MiB: growth of resident memory during the stage ({results[0]['memory_method']}). "
          f"Plot: {out} ({os.path.getsize(out) / 1024:.0f} KiB).")


if __name__ == "__main__":
    main()
