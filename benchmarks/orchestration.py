"""Orchestration overhead: a slice of the demo graph through Dagster vs the same lib calls in one plain script.

    python benchmarks/orchestration.py --quick       # < 1 minute: 24-document world, 1 epoch
    python benchmarks/orchestration.py               # the demo world (160 documents) with the demo profile

Both sides run the same well-defined subset of the graph for a freshly written demo world, each in a fresh
Python process with its own temp storage root (SKIM_DATA_ROOT) and Dagster home:

  datasets     documents, queries, relevance_labels (BEIR import), click_log_pairs (no drops: empty tables)
  simulation   click_train_pairs, mar_train_pairs, oracle_train_pairs, biased/unbiased_test_qrels (Algorithm 1
               with the zero-shot MiniLM ranking every document, exposure curve plot)
  training     train_pairs; base, oracle and mar models: dual encoders (the demo profile: 3 epochs at lr 1e-4, the
               asset defaults otherwise) and one-vs-all heads (asset defaults: 30 epochs)
  evaluation   retrieval_metrics (zero-shot + the six models on both test sets, DuckDB catalogue refresh)

Left out on both sides: teacher, LoRA, generation and mapping (SKIM's own branch: minutes of LM work that no
plain script would do differently), the other baselines and comparison_report. The plain side
(`plain_pipeline`) is what those assets' bodies do, call for call (same lib functions, same Parquet/model
writes, same plots, the same model loads). The Dagster side is `skim demo`'s path: `skim_core` from the code
location's Definitions, `execute_in_process` with an asset selection, the run config of `cli.demo_run_config`,
a real DagsterInstance (SQLite under DAGSTER_HOME). The asset checks that belong to the selected assets run
too (that is what the job does); their step time is reported separately.

Prints both totals (process wall time, and the pipeline alone without interpreter start and imports), the
Dagster time split into asset steps, check steps and the rest (run setup, event log, step orchestration), and
the overhead in percent of the plain script.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET = "demo"
METHODS = ("base", "oracle", "mar")
PAIRS_OF = {"base": "train_pairs", "oracle": "oracle_train_pairs", "mar": "mar_train_pairs"}
SUBSET = ["documents", "queries", "relevance_labels", "click_log_pairs", "click_train_pairs", "mar_train_pairs",
          "oracle_train_pairs", "biased_test_qrels", "unbiased_test_qrels", "train_pairs",
          *[f"{m}_models" for m in METHODS], "retrieval_metrics"]
EVAL_KS = (1, 5, 10, 25, 100)  # as assets/evaluation.py
DEFAULT_EXPOSURE_KS = (1, 5, 10, 25, 50, 100)


def profile(quick: bool) -> dict:
    """Retriever settings of `cli.demo_run_config` (3 epochs, lr 1e-4); quick: 1 epoch."""
    return {"epochs": 1 if quick else 3, "learning_rate": 1e-4}


# --------------------------------------------------------------------------------------------------- plain side


def plain_pipeline(root: Path, dataset: str, epochs: int, learning_rate: float, log=print) -> dict:
    """The subset's asset bodies as plain lib calls, in dependency order; returns {stage: seconds}."""
    import numpy as np
    import polars as pl

    from skim_assets.lib.baselines import click_propensities
    from skim_assets.lib.catalogue import refresh_catalogue
    from skim_assets.lib.clicklogs import aggregate_click_logs, click_log_files
    from skim_assets.lib.datasets import CLICKS_FOLDER, import_tables, read_spec
    from skim_assets.lib.dual_encoder import DualEncoderConfig, rank_documents, train_dual_encoder
    from skim_assets.lib.encoders import TextEncoder
    from skim_assets.lib.formats import union_pairs
    from skim_assets.lib.layout import CLICK_LOG_CACHE, EMBEDDING_CACHE, Layout
    from skim_assets.lib.mapping import embed_with_cache
    from skim_assets.lib.metrics import evaluate_rankings
    from skim_assets.lib.ova_head import OvaHeadConfig, ova_topk, train_ova_head
    from skim_assets.lib.plots import line_plot
    from skim_assets.lib.report_tables import metrics_table_markdown
    from skim_assets.lib.retrieval import topk_frame
    from skim_assets.lib.simulation import exposure_curve, labels_as_pairs, missing_at_random_sample, simulate_click_log
    from skim_assets.lib.storage import atomic_directory, write_parquet_atomic

    layout = Layout(root)  # the paths the storage resource gives the assets

    def path(asset, table="data"):
        return layout.table(asset, dataset, table)

    def write(asset, frame, table="data"):
        return write_parquet_atomic(frame, path(asset, table))

    def read(asset, table="data"):
        return pl.read_parquet(path(asset, table))

    def load(model_path=None):  # EncoderResource.load: a fresh encoder each time
        return TextEncoder(model_path, device="auto", max_length=32)

    def rank(queries, documents, k, model_path=None):  # EncoderResource.rank
        return rank_documents(load(model_path), queries, documents, k, query_max_length=32, doc_max_length=32)

    def all_queries(pairs_asset=None):
        queries = read("queries")
        for asset in ("click_log_pairs", pairs_asset):
            extra = path(asset, "queries") if asset else None
            if extra is not None and extra.exists():
                queries = pl.concat([queries, pl.read_parquet(extra)])
        return queries

    def pretrained_embeddings(texts, max_length):
        model = load()
        cache = layout.state(EMBEDDING_CACHE, dataset, "pretrained", f"texts-{max_length}.parquet")
        return embed_with_cache(texts, lambda batch: model.encode(batch, max_length=max_length), cache)[0]

    stages, clock = {}, [time.perf_counter()]

    def done(stage):
        now = time.perf_counter()
        stages[stage] = now - clock[0]
        clock[0] = now
        log(f"plain: {stage} {stages[stage]:.1f}s")

    inputs = layout.inputs(dataset)
    # datasets: dataset_tables, click_log_pairs
    spec = read_spec(inputs)
    tables = import_tables(inputs, spec)
    for asset, attribute in {"documents": "documents", "queries": "queries", "relevance_labels": "qrels"}.items():
        write(asset, getattr(tables, attribute))
    ingest = aggregate_click_logs(click_log_files(inputs / CLICKS_FOLDER), read("documents"), read("queries"),
                                  cache_dir=layout.state(CLICK_LOG_CACHE, dataset))
    write("click_log_pairs", ingest.new_queries, "queries")
    write("click_log_pairs", ingest.aggregate, "aggregate")
    write("click_log_pairs", ingest.pairs)
    done("datasets")

    # simulation: simulated_clicks (simulate_bias is true for the demo world)
    documents, queries = read("documents"), read("queries")
    qrels = read("relevance_labels").join(queries.select("query_id", "split"), on="query_id")
    train_labels, test_labels = (qrels.filter(pl.col("split") == s).drop("split") for s in ("train", "test"))
    depth = min(max(spec.exposure_k, max(DEFAULT_EXPOSURE_KS)), documents.height)
    ranked = rank(queries, documents, depth)
    log = simulate_click_log(ranked, train_labels, spec.click_simulation)
    clicks = log.pairs
    write("click_train_pairs", log.impressions, "impressions")
    biased_test = simulate_click_log(ranked, test_labels, spec.click_simulation).pairs.select(
        "query_id", "doc_id", pl.col("weight").alias("relevance"))
    curve = exposure_curve(ranked, train_labels, [k for k in DEFAULT_EXPOSURE_KS if k <= depth])
    line_plot({"train labels kept": (curve["exposure_k"].to_list(), curve["fraction_kept"].to_list())},
              "Labels surviving exposure", "exposure window K", "fraction kept",
              layout.figure("click_train_pairs", dataset, "exposure_curve.png"))
    metrics_table_markdown(curve.to_dicts(), curve.columns)
    for name, frame in {
        "click_train_pairs": clicks,
        "mar_train_pairs": missing_at_random_sample(train_labels, clicks.height, seed=spec.seed),
        "oracle_train_pairs": labels_as_pairs(train_labels, "oracle"),
        "biased_test_qrels": biased_test,
        "unbiased_test_qrels": test_labels.filter(pl.col("relevance") > 0),
    }.items():
        write(name, frame)
    done("simulation")

    # training: train_pairs, each method's models (its dual encoder and one-vs-all head)
    write("train_pairs", union_pairs(read("click_train_pairs"), read("click_log_pairs")))
    done("train_pairs")
    for method in METHODS:
        name, pairs_asset = f"{method}_models", PAIRS_OF[method]
        pairs = read(pairs_asset)
        model = load()
        report = train_dual_encoder(model, pairs, all_queries(pairs_asset), read("documents"),
                                    DualEncoderConfig(epochs=epochs, learning_rate=learning_rate),
                                    progress=lambda _: None)
        documents = read("documents")
        queries = all_queries(pairs_asset).join(pairs.select("query_id").unique(), on="query_id")
        query_index = {q: i for i, q in enumerate(queries["query_id"].to_list())}
        doc_index = {d: i for i, d in enumerate(documents["doc_id"].to_list())}
        weights, biases, _ = train_ova_head(
            pretrained_embeddings(queries["text"].to_list(), 32),
            np.array([query_index[q] for q in pairs["query_id"].to_list()]),
            np.array([doc_index[d] for d in pairs["doc_id"].to_list()]),
            pairs["weight"].to_numpy(),
            pretrained_embeddings(documents["title"].to_list(), 32),
            OvaHeadConfig(), progress=lambda _: None,
        )
        with atomic_directory(layout.artifact(name, dataset)) as tmp:
            model.save(tmp / "encoder")
            (tmp / "training.json").write_text(json.dumps(report.__dict__, indent=2))
            line_plot({"loss": (list(range(1, len(report.loss_curve) + 1)), report.loss_curve)},
                      f"{name} training loss", "log window", "weighted decoupled-softmax loss", tmp / "loss.png")
            np.savez(tmp / "head.npz", weights=weights, biases=biases, doc_ids=np.array(documents["doc_id"].to_list()))
        done(name)

    # evaluation: retrieval_metrics
    documents = read("documents")
    test_sets = {"biased": read("biased_test_qrels"), "unbiased": read("unbiased_test_qrels")}
    test_ids = pl.concat([t.select("query_id") for t in test_sets.values()]).unique()
    queries = read("queries").join(test_ids, on="query_id").sort("query_id")
    propensities = click_propensities(documents, read("train_pairs"), spec.propensity_a, spec.propensity_b)

    def ova_rank(head_path):
        head = np.load(head_path)
        vectors = pretrained_embeddings(queries["text"].to_list(), 32)
        indices, scores = ova_topk(vectors, head["weights"], head["biases"], max(EVAL_KS))
        return topk_frame(queries["query_id"], head["doc_ids"].tolist(), indices, scores)

    models = [("zero_shot", lambda: rank(queries, documents, max(EVAL_KS)))]
    for method in METHODS:
        folder = layout.artifact(f"{method}_models", dataset)
        models.append((f"{method}_retriever",
                       lambda p=str(folder / "encoder"): rank(queries, documents, max(EVAL_KS), p)))
        models.append((f"{method}_ova_head", lambda p=folder / "head.npz": ova_rank(p)))
    rows, rankings = [], []
    for model, ranker in models:
        ranked = ranker()
        rankings.append(ranked.with_columns(pl.lit(model).alias("model")))
        for test_name, test_qrels in test_sets.items():
            rows.append({"model": model, "test_set": test_name,
                         **evaluate_rankings(ranked, test_qrels, EVAL_KS, propensities)})
    table = pl.DataFrame(rows)
    write("retrieval_metrics", table)
    write("retrieval_metrics", pl.concat(rankings), "rankings")
    metrics_table_markdown(table.to_dicts(), list(table.columns))
    refresh_catalogue(root)
    done("retrieval_metrics")
    return stages


# -------------------------------------------------------------------------------------------------- dagster side


def dagster_pipeline(root: Path, dataset: str, epochs: int, learning_rate: float, log=print) -> dict:
    """`skim demo`'s path restricted to SUBSET: returns seconds split into asset steps, check steps and the rest."""
    import dagster as dg

    from skim_assets.cli import _instance, register_dataset
    from skim_assets.definitions import all_checks, defs

    started = time.perf_counter()
    job = defs.resolve_job_def("skim_core")
    instance = _instance()
    register_dataset(dataset, instance)
    run_config = {"ops": {f"{m}_models": {"config": {"dual_encoder": {"epochs": epochs,
                                                                      "learning_rate": learning_rate}}}
                          for m in METHODS}}
    result = job.execute_in_process(partition_key=dataset, instance=instance, run_config=run_config,
                                    asset_selection=[dg.AssetKey(k) for k in SUBSET], raise_on_error=False)
    total = time.perf_counter() - started
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    failed_checks = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations()
                     if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    if not result.success and not (set(SUBSET) <= materialized and failed_checks):
        raise RuntimeError("the Dagster run failed: see the log above")
    if failed_checks:  # every asset was materialized (and timed); only a check's verdict failed the run
        log(f"dagster: run marked failed by blocking check(s) {failed_checks}; every asset was materialized")
    starts, steps = {}, {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            steps[event.step_key] = entry.timestamp - starts[event.step_key]
    check_keys = set(steps) & {c.node_def.name for c in all_checks}
    checks = len(result.get_asset_check_evaluations())
    return {
        "total": total,
        "asset_steps": sum(v for k, v in steps.items() if k not in check_keys),
        "check_steps": sum(steps[k] for k in check_keys),
        "steps": steps,
        "materialized": sorted(materialized),
        "checks": checks,
        "failed_checks": failed_checks,
    }


# -------------------------------------------------------------------------------------------------- harness


def write_world(root: Path, quick: bool) -> dict:
    from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset

    config = DemoWorldConfig(n_documents=24, docs_per_fact=3.0, exposure_k=3, seed=5) if quick else DemoWorldConfig()
    return write_demo_dataset(root / "inputs" / DATASET, config)


def child(side: str, root: Path, quick: bool) -> None:
    """Run one side in this (fresh) process and print its figures as one JSON line."""
    process_start = float(os.environ.get("SKIM_BENCH_T0", time.time()))
    os.environ["SKIM_DATA_ROOT"] = str(root)
    os.environ["DAGSTER_HOME"] = str(root / ".dagster")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    settings = profile(quick)
    imported = time.perf_counter()
    if side == "plain":
        import skim_assets.lib.dual_encoder  # noqa: F401  (the imports a plain script pays)
    else:
        import skim_assets.definitions  # noqa: F401
    import_seconds = time.perf_counter() - imported
    started = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if side == "plain":
        figures = {"stages": plain_pipeline(root, DATASET, settings["epochs"], settings["learning_rate"], log)}
    else:
        figures = dagster_pipeline(root, DATASET, settings["epochs"], settings["learning_rate"], log)
    figures["pipeline"] = time.perf_counter() - started
    figures["imports"] = import_seconds
    figures["process"] = time.time() - process_start
    print("RESULT " + json.dumps(figures))


def run_side(side: str, quick: bool, keep: Path | None = None) -> dict:
    """One side in a fresh Python process with a fresh storage root; wall time measured from here."""
    with tempfile.TemporaryDirectory(prefix=f"skim_bench_{side}_") as tmp:
        root = (keep / side) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        write_world(root, quick)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", SKIM_BENCH_T0=repr(time.time()))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", side, "--root", str(root)]
                              + (["--quick"] if quick else []), env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-5000:])
            raise RuntimeError(f"the {side} side failed (exit {done.returncode})")
        line = next(text for text in done.stdout.splitlines() if text.startswith("RESULT "))
        figures = json.loads(line.removeprefix("RESULT "))
        figures["wall"] = wall
        return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="24-document world, 1 epoch")
    parser.add_argument("--keep", help="keep both storage roots under this folder (default: temp, removed)")
    parser.add_argument("--child", choices=["plain", "dagster"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, Path(args.root), args.quick)

    from benchmarks._common import fmt, machine_line, markdown_table

    print(f"machine: {machine_line()}", flush=True)
    settings = profile(args.quick)
    print(f"demo world {'24 (quick)' if args.quick else 160} documents; retrievers {settings['epochs']} epoch(s) at lr "
          f"{settings['learning_rate']}; subset: {', '.join(SUBSET)}", flush=True)
    keep = Path(args.keep) if args.keep else None
    results = {}
    for side in ("plain", "dagster"):
        print(f"running the {side} side ...", flush=True)
        results[side] = run_side(side, args.quick, keep)
        print(f"  {results[side]['wall']:.1f}s", flush=True)
    plain, dagster = results["plain"], results["dagster"]
    rows = []
    for label, key in (("process wall time (start, imports, pipeline)", "wall"), ("pipeline only", "pipeline")):
        overhead = (dagster[key] - plain[key]) / plain[key] * 100
        rows.append([label, fmt(plain[key], 1), fmt(dagster[key], 1), f"{overhead:+.1f}%"])
    rows.append(["imports", fmt(plain["imports"], 1), fmt(dagster["imports"], 1), ""])
    without_checks = dagster["pipeline"] - dagster["check_steps"]
    rows.append(["pipeline without the check steps", fmt(plain["pipeline"], 1), fmt(without_checks, 1),
                 f"{(without_checks - plain['pipeline']) / plain['pipeline'] * 100:+.1f}%"])
    print()
    print(markdown_table(["", "plain script s", "Dagster s", "Dagster overhead"], rows))
    rest = dagster["total"] - dagster["asset_steps"] - dagster["check_steps"]
    print(f"\nDagster run ({len(dagster['materialized'])} assets materialized, {dagster['checks']} check evaluations): "
          f"asset steps {dagster['asset_steps']:.1f}s, check steps {dagster['check_steps']:.1f}s, the rest "
          f"(run setup, event log, step orchestration) {rest:.1f}s of {dagster['total']:.1f}s.")
    if dagster["failed_checks"]:
        print(f"(The run was marked failed by blocking check(s) {', '.join(dagster['failed_checks'])} after every "
              f"asset had been materialized; the timings stand.)")
    steps_of = {"datasets": ("dataset_tables", "click_log_pairs"), "simulation": ("simulated_clicks",)}
    rows = []
    for stage, seconds in plain["stages"].items():
        step_seconds = sum(dagster["steps"].get(k, 0.0) for k in steps_of.get(stage, (stage,)))
        rows.append([stage, fmt(seconds, 2), fmt(step_seconds, 2), f"{step_seconds - seconds:+.2f}"])
    print("\nPer stage (Dagster: STEP_START to STEP_SUCCESS of the asset's step, from the event log):\n")
    print(markdown_table(["stage", "plain s", "Dagster step s", "difference s"], rows))
    overhead = (dagster["wall"] - plain["wall"]) / plain["wall"] * 100
    print(f"\nOverhead of Dagster on the whole process: {dagster['wall'] - plain['wall']:+.1f}s = {overhead:+.1f}% "
          f"(target <= 10%: {'met' if overhead <= 10 else 'NOT met'}).")


if __name__ == "__main__":
    main()
