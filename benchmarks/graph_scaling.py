"""Graph scaling: seconds and peak memory of every asset of a job as the generated catalogue world grows.

    python benchmarks/graph_scaling.py --sizes 10000 100000 1000000 [--root DIR] [--json PATH] [--plot PATH]
        [--config configs/scale_cpu.yaml] [--job skim_core] [--test-fraction F]

For each size N, in its own storage root DIR/N (Dagster home DIR/N/.dagster; default DIR: a fresh temp folder,
kept and printed, so a stopped run can be resumed with --root):

  world        `lib.demo.write_demo_dataset(DIR/N/inputs/catalogue-N, DemoWorldConfig(n_documents=N,
               world="catalogue", test_fraction=F))`, timed, in a process of its own (its peak RSS is that of the
               generation); F defaults to the share of the fact values that gives about 5,000 test queries
  import       `skim --root DIR/N import catalogue-N DIR/N/inputs/catalogue-N` (with the world's own dataset.json
               settings as flags: exposure window, prompt style, ...), timed as the process's wall time
  materialize  `skim --root DIR/N materialize catalogue-N --job JOB --config CONFIG --only-missing`: the job's
               executor runs every step in a process of its own; the output goes to DIR/N/materialize.log

World and import are done once per root (their figures are kept in DIR/N/prelude.json); the materialize command
runs every time with --only-missing, so an invocation after a stopped or failed one runs only what is missing.

The figures come from the Dagster instance, not from this script's clock: for every asset of the job, its latest
materialization for partition catalogue-N, that event's run and step, and

  seconds       the step's end_time - start_time from `instance.get_run_step_stats(run_id)`, STEP_START to
                STEP_SUCCESS (the assets of one multi-asset step share it; a graph asset, e.g. synthetic_queries'
                plan / generate[shard group] / write ops, counts the sum of its ops' steps in that run)
  peak_rss_mib  the step process's peak resident memory (Linux VmHWM; `lib.storage.peak_rss_mib`) that the IO
                manager records on the materialization and on every handled output; the max over the step's
                outputs (assets that write their own artifact and return no value record none of their own and
                take their step's figure; a step with no IO-manager output at all has none: "-"). Resident
                memory counts the pages a step shares with the executor's forkserver, which preloads the code
                location (about 0.5 GiB with torch), so that is the floor of every step

so an asset that a resumed invocation did not rerun keeps the figures of the run that materialized it.

total_seconds of a size = the sum of the distinct asset steps' seconds + world + import: time of work, not the
wall time of a run (steps that ran in parallel count each; outside it are the start of each step's process with
its imports, before STEP_START, several seconds a step on a small machine, the asset-check steps and the run's
own setup). The materialize command's own wall
time of this invocation is recorded as `last_invocation_wall_seconds` (small when little was missing).

Prints a Markdown table (asset, documents, seconds, peak_rss_mib; totals last) and the growth exponents per asset
(least-squares slope of log(seconds) over log(documents), n/a with fewer than two sizes; "noise-sized" when a
point is under 5 s, where fixed costs such as loading a model or reading inputs dominate a step), and writes a
log-log PNG (the 12 assets with the most seconds at the largest size, and the total). --json writes

    {"sizes": {"<N>": {"total_seconds", "peak_rss_mib", "assets": {"<asset>": {"seconds", "peak_rss_mib"}},
                       ...}}, "exponents": {"<asset>": e}}

(a size's peak_rss_mib is the max over its steps; extra keys of a size: documents, world_seconds, import_seconds,
last_invocation_wall_seconds, check_seconds, missing, failed, config, job, root). Exit status 1 when a
materialize run failed (after writing what there is; larger sizes are not started) or an asset of the job has no
materialization for its size (listed under "missing").
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD = "catalogue"
DEFAULT_CONFIG = "configs/scale_cpu.yaml"
DEFAULT_JOB = "skim_core"
NOISE_SECONDS = 5.0  # a step shorter than this is mostly fixed costs (loading models, reading inputs)
PLOT_TOP = 12
TEST_QUERIES = 5_000  # the default test_fraction aims at about this many test queries at every size
PSEUDO_ASSETS = ("world", "import")
PRELUDE = "prelude.json"
RESULT_PREFIX = "RESULT "
# dataset.json keys of the generated world -> `skim import` flags (the import writes the spec from its flags)
IMPORT_FLAGS = {"format": "--format", "title_words": "--title-words", "dev_split": "--dev-split",
                "exposure_k": "--exposure-k", "propensity_a": "--propensity-a", "propensity_b": "--propensity-b",
                "prompt_style": "--prompt-style", "generate": "--generate",
                "query_metadata_field": "--query-metadata-field", "tau": "--tau", "seed": "--seed",
                "click_model": "--click-model", "eta": "--eta", "score_scale": "--score-scale"}


def dataset_name(documents: int) -> str:
    return f"{WORLD}-{documents}"


def default_test_fraction(documents: int, test_queries: int = TEST_QUERIES) -> float:
    """The share of the world's fact values that get a test query so that about `test_queries` are written
    (fewer when some values have no product): evaluation scores every test query against every document, so a
    fixed count keeps it comparable across sizes (configs/scale_cpu.yaml)."""
    from skim_assets.lib.catalogue_world import vocabulary_sizes
    from skim_assets.lib.demo import DemoWorldConfig

    facts = sum(vocabulary_sizes(DemoWorldConfig(n_documents=documents, world=WORLD)).values())
    return round(min(1.0, test_queries / facts), 6)


# ------------------------------------------------------------------------------------------------ pure parts


def growth_exponent(documents, seconds) -> float | None:
    """Least-squares slope of log(seconds) on log(documents) over the points with seconds > 0; None with fewer
    than two distinct sizes."""
    points = [(math.log(n), math.log(s)) for n, s in zip(documents, seconds) if s is not None and s > 0 and n > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def _sorted_sizes(sizes: dict) -> list[tuple[int, dict]]:
    return sorted(((int(n), size) for n, size in sizes.items()), key=lambda item: item[0])


def asset_names(sizes: dict) -> list[str]:
    return sorted({asset for _, size in _sorted_sizes(sizes) for asset in size["assets"]})


def series(sizes: dict, asset: str) -> tuple[list[int], list[float]]:
    """(documents, seconds) of an asset over the sizes that have a figure for it ('total': the sizes' totals)."""
    points = []
    for n, size in _sorted_sizes(sizes):
        seconds = size.get("total_seconds") if asset == "total" else size["assets"].get(asset, {}).get("seconds")
        if seconds is not None:
            points.append((size.get("documents", n), seconds))
    return [n for n, _ in points], [s for _, s in points]


def exponents(sizes: dict) -> dict[str, float | None]:
    """{asset: growth exponent of its seconds, or None}: every asset (and pseudo-asset) of any size."""
    return {asset: growth_exponent(*series(sizes, asset)) for asset in asset_names(sizes)}


def noise_sized(sizes: dict, asset: str) -> bool:
    """Whether a point of the fit is under NOISE_SECONDS (fixed costs dominate such a step)."""
    return any(s < NOISE_SECONDS for s in series(sizes, asset)[1])


def _num(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def results_table(sizes: dict) -> str:
    """`| asset | documents | seconds | peak_rss_mib |`: a row per asset per size (by asset, then size), then the
    totals of every size."""
    rows = []
    for asset in asset_names(sizes):
        for n, size in _sorted_sizes(sizes):
            if asset in size["assets"]:
                figures = size["assets"][asset]
                rows.append([asset, f"{size.get('documents', n):,}", _num(figures.get("seconds"), 2),
                             _num(figures.get("peak_rss_mib"))])
    for n, size in _sorted_sizes(sizes):
        rows.append(["**total**", f"{size.get('documents', n):,}", _num(size.get("total_seconds"), 2),
                     _num(size.get("peak_rss_mib"))])
    return markdown_table(["asset", "documents", "seconds", "peak_rss_mib"], rows)


def exponents_table(sizes: dict) -> str:
    """`| asset | exponent | note |`: the growth exponent of every asset and of the total."""
    rows = []
    for asset in [*asset_names(sizes), "total"]:
        exponent = growth_exponent(*series(sizes, asset))
        if exponent is None:
            rows.append([asset if asset != "total" else "**total**", "n/a", "fewer than 2 sizes"])
            continue
        note = f"noise-sized (a point under {NOISE_SECONDS:g} s)" if noise_sized(sizes, asset) else ""
        rows.append([asset if asset != "total" else "**total**", f"{exponent:.2f}", note])
    return markdown_table(["asset", "exponent", "note"], rows, "lrl")


def step_group(step_key: str) -> str:
    """The node an asset's step belongs to: 'synthetic_queries' for 'synthetic_queries.synthetic_queries__write'
    and 'synthetic_queries.synthetic_queries__generate[shards_0]' (the ops of a graph asset), else the step."""
    return step_key.split(".", 1)[0].split("[", 1)[0]


def size_summary(documents: int, read: dict, prelude: dict, wall_seconds: float | None, **extra) -> dict:
    """A size's JSON entry from what the instance says (`read`: `read_instance`'s result) and the prelude.

    total_seconds: the distinct steps' seconds (assets of one step or one graph asset counted once) plus the
    world and the import; peak_rss_mib: the max over the steps and the prelude's processes."""
    assets, steps = {}, {}
    for asset, figures in read.get("assets", {}).items():
        assets[asset] = {"seconds": figures.get("seconds"), "peak_rss_mib": figures.get("peak_rss_mib"),
                         **{k: figures[k] for k in ("step", "run_id") if k in figures}}
        if figures.get("seconds") is not None:
            steps[(figures.get("run_id"), figures.get("step"))] = figures["seconds"]
    for pseudo in PSEUDO_ASSETS:
        if prelude.get(f"{pseudo}_seconds") is not None:
            assets[pseudo] = {"seconds": prelude[f"{pseudo}_seconds"],
                              "peak_rss_mib": prelude.get(f"{pseudo}_peak_rss_mib")}
    total = sum(steps.values()) + sum(prelude.get(f"{p}_seconds") or 0.0 for p in PSEUDO_ASSETS)
    peaks = [a["peak_rss_mib"] for a in assets.values() if a.get("peak_rss_mib") is not None]
    return {
        "documents": documents,
        "total_seconds": round(total, 2),
        "peak_rss_mib": max(peaks) if peaks else None,
        "assets": dict(sorted(assets.items())),
        "missing": sorted(read.get("missing", [])),
        "world_seconds": prelude.get("world_seconds"),
        "import_seconds": prelude.get("import_seconds"),
        "last_invocation_wall_seconds": None if wall_seconds is None else round(wall_seconds, 2),
        "check_seconds": read.get("check_seconds"),
        **extra,
    }


def report(sizes: dict) -> dict:
    """The --json document: {"sizes": {"<N>": size}, "exponents": {"<asset>": e or null}}."""
    ordered = {str(n): size for n, size in _sorted_sizes(sizes)}
    return {"sizes": ordered,
            "exponents": {a: (None if e is None else round(e, 3)) for a, e in exponents(ordered).items()}}


def write_json_atomic(obj, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def plot(sizes: dict, out: Path, top: int = PLOT_TOP) -> Path:
    """Log-log seconds over documents: the `top` assets with the most seconds at the largest size (one line for
    the assets of one step), and the total."""
    from skim_assets.lib.plots import plt, save_figure  # the Agg backend

    ordered = _sorted_sizes(sizes)
    largest = ordered[-1][1]["assets"] if ordered else {}
    ranked = sorted((a for a in asset_names(sizes) if series(sizes, a)[1]),
                    key=lambda a: (-(largest.get(a, {}).get("seconds") or 0.0), a))
    # the assets of one step (a multi-asset) have one line, named after the step
    by_step: dict[str, list[str]] = {}
    for asset in ranked:
        by_step.setdefault(largest.get(asset, {}).get("step") or asset, []).append(asset)
    lines = [(step if len(assets) > 1 else assets[0], assets[0], len(assets))
             for step, assets in list(by_step.items())[:top]]
    colors = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for i, (name, asset, count) in enumerate([*lines, ("total", "total", 1)]):
        xs, ys = series(sizes, asset)
        keep = [(x, y) for x, y in zip(xs, ys) if y > 0]
        if not keep:
            continue
        exponent = growth_exponent(xs, ys)
        label = name + (f" ({count} assets)" if count > 1 else "") + (
            f" (x^{exponent:.2f})" if exponent is not None else "")
        style = ({"color": "black", "linewidth": 2.5} if asset == "total"
                 else {"linewidth": 1.2, "color": colors[i % len(colors)]})
        ax.plot([x for x, _ in keep], [y for _, y in keep], marker="o", markersize=3, label=label, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("step seconds")
    ax.set_title(f"{WORLD} world: seconds per asset step vs corpus size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, out)


# ------------------------------------------------------------------------------------------------ child processes


def _result(obj) -> None:
    print(RESULT_PREFIX + json.dumps(obj), flush=True)


def child_world(folder: Path, documents: int, test_fraction: float | None) -> None:
    """Write the world (in this fresh process, so its peak RSS is the generation's)."""
    from dataclasses import asdict

    from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset
    from skim_assets.lib.storage import peak_rss_mib

    kwargs = {"n_documents": documents, "world": WORLD}
    if test_fraction is not None:
        kwargs["test_fraction"] = test_fraction
    config = DemoWorldConfig(**kwargs)
    started = time.perf_counter()
    counts = write_demo_dataset(folder, config)
    seconds = time.perf_counter() - started
    _result({"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "counts": counts, "config": asdict(config)})


def import_flags(spec: dict) -> list[str]:
    """`skim import` flags that reproduce the settings of a generated world's dataset.json."""
    flags = []
    for key, flag in IMPORT_FLAGS.items():
        if spec.get(key) not in (None, ""):
            flags += [flag, str(spec[key])]
    if spec.get("simulate_bias") is False:
        flags.append("--no-simulate-bias")
    return flags


def child_import(root: Path, name: str) -> None:
    """`skim --root ROOT import NAME ROOT/inputs/NAME` with the world's settings, in this process."""
    from skim_assets.cli import main
    from skim_assets.lib.storage import peak_rss_mib

    folder = root / "inputs" / name
    flags = import_flags(json.loads((folder / "dataset.json").read_text(encoding="utf-8")))
    code = main(["--root", str(root), "import", name, str(folder), *flags])
    _result({"returncode": code, "peak_rss_mib": peak_rss_mib(), "flags": flags})


def read_instance(root: Path, name: str, job: str) -> dict:
    """Every asset of `job`: its latest materialization of partition `name` in the instance at ROOT/.dagster, the
    step's seconds (get_run_step_stats) and peak RSS (IO-manager metadata); assets without one under missing."""
    import dagster as dg

    from skim_assets.definitions import all_checks, defs

    graph = defs.resolve_asset_graph()
    keys = sorted(defs.resolve_job_def(job).asset_layer.executable_asset_keys, key=lambda k: k.to_user_string())
    check_nodes = {c.node_def.name for c in all_checks}
    instance = dg.DagsterInstance.from_config(str(root / ".dagster"))
    stats, peaks = {}, {}  # run -> {step: seconds}, run -> {step group: peak}

    def run_figures(run_id: str):
        if run_id not in stats:
            stats[run_id] = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run_id)
                             if s.start_time is not None and s.end_time is not None}
            peaks[run_id] = {}
            for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.HANDLED_OUTPUT,
                                                            dg.DagsterEventType.ASSET_MATERIALIZATION}):
                event = entry.dagster_event
                if event is None or not entry.step_key:
                    continue
                data = event.event_specific_data
                metadata = (data.materialization.metadata if event.is_step_materialization
                            else getattr(data, "metadata", None)) or {}
                value = metadata.get("peak_rss_mib")
                value = getattr(value, "value", value)
                if isinstance(value, (int, float)):
                    group = step_group(entry.step_key)
                    peaks[run_id][group] = max(peaks[run_id].get(group, 0.0), float(value))
        return stats[run_id], peaks[run_id]

    assets, missing, runs = {}, [], set()
    try:
        for key in keys:
            asset = key.to_user_string()
            partitioned = graph.get(key).partitions_def is not None
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[name]) if partitioned else key, limit=1).records
            if not records:
                missing.append(asset)
                continue
            entry = records[0].event_log_entry
            step_seconds, step_peaks = run_figures(entry.run_id)
            group = step_group(entry.step_key or "")
            seconds = [s for step, s in step_seconds.items() if step_group(step) == group]
            runs.add(entry.run_id)
            assets[asset] = {"seconds": round(sum(seconds), 3) if seconds else None,
                             "peak_rss_mib": step_peaks.get(group), "step": group, "run_id": entry.run_id,
                             "steps": len(seconds)}
        check_seconds = sum(s for run in runs for step, s in stats[run].items() if step_group(step) in check_nodes)
    finally:
        instance.dispose()
    return {"assets": assets, "missing": missing, "check_seconds": round(check_seconds, 3)}


def child_read(root: Path, name: str, job: str) -> None:
    _result(read_instance(root, name, job))


# ------------------------------------------------------------------------------------------------ harness


def size_env(root: Path) -> dict:
    """The size's storage and instance; one step at a time (SKIM_MAX_CONCURRENT=1, unless set), so each step's
    seconds and memory are its own, not those of two steps sharing 2 cores."""
    return {"SKIM_MAX_CONCURRENT": "1",
            **dict(os.environ, DAGSTER_HOME=str(root / ".dagster"), SKIM_DATA_ROOT=str(root), HF_HUB_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")}


def run_child(args: list[str], root: Path, log_file=None, echo: str | None = None) -> tuple[int, dict | None, float]:
    """Run this script (or a module) in a fresh process with the size's environment; stream its output to
    `log_file` and, prefixed with `echo`, to stdout. Returns (exit status, its RESULT object, wall seconds)."""
    command = [sys.executable, *args] if args[0] == "-m" else [sys.executable, str(Path(__file__).resolve()), *args]
    started = time.perf_counter()
    result = None
    with subprocess.Popen(command, env=size_env(root), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
                continue
            if log_file is not None:
                log_file.write(line)
                log_file.flush()
            if echo is not None:
                print(f"{echo}{line}", end="", flush=True)
    return process.returncode, result, time.perf_counter() - started


def prepare(root: Path, documents: int, test_fraction: float | None) -> dict:
    """World and import of a size, once per root (figures kept in ROOT/prelude.json); returns the prelude."""
    name = dataset_name(documents)
    path = root / PRELUDE
    prelude = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    wanted = {"documents": documents, "test_fraction": test_fraction}
    if prelude and prelude.get("requested") != wanted:
        raise SystemExit(f"{root} holds {prelude.get('requested')}, not {wanted}: use another --root")
    prelude["requested"] = wanted
    imported = prelude.get("import_seconds") is not None and (root / "inputs" / name / "dataset.json").exists()
    if imported:
        print(f"[{documents:,}] world and import: done before ({prelude['world_seconds']:.1f}s + "
              f"{prelude['import_seconds']:.1f}s)", flush=True)
        return prelude
    root.mkdir(parents=True, exist_ok=True)
    (root / ".dagster").mkdir(exist_ok=True)
    with open(root / "prelude.log", "a", encoding="utf-8") as log:
        if prelude.get("world_seconds") is None:
            print(f"[{documents:,}] writing the {WORLD} world ...", flush=True)
            args = ["--child-world", str(root / "inputs" / name), "--documents", str(documents)]
            code, result, _ = run_child(args + (["--test-fraction", str(test_fraction)] if test_fraction is not None
                                                else []), root, log, f"[{documents:,}] world: ")
            if code != 0 or result is None:
                raise SystemExit(f"writing the world failed (exit {code}): see {root / 'prelude.log'}")
            prelude |= {"world_seconds": round(result["seconds"], 2), "world_peak_rss_mib": result["peak_rss_mib"],
                        "world_counts": result["counts"], "world_config": result["config"]}
            write_json_atomic(prelude, path)
            print(f"[{documents:,}] world: {result['counts']} in {result['seconds']:.1f}s", flush=True)
        code, result, wall = run_child(["--child-import", str(root), "--dataset", name], root, log,
                                       f"[{documents:,}] import: ")
        if code != 0 or result is None or result.get("returncode") != 0:
            raise SystemExit(f"`skim import {name}` failed: see {root / 'prelude.log'}")
        prelude |= {"import_seconds": round(wall, 2), "import_peak_rss_mib": result["peak_rss_mib"],
                    "import_flags": result["flags"]}
        write_json_atomic(prelude, path)
        print(f"[{documents:,}] import: {wall:.1f}s", flush=True)
    return prelude


def materialize(root: Path, documents: int, config: Path, job: str) -> tuple[bool, float]:
    name = dataset_name(documents)
    args = ["-m", "skim_assets.cli", "--root", str(root), "materialize", name, "--job", job, "--config", str(config),
            "--only-missing"]
    print(f"[{documents:,}] skim materialize {name} --job {job} --config {config} --only-missing "
          f"(log: {root / 'materialize.log'})", flush=True)
    with open(root / "materialize.log", "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args[1:])}\n")
        code, _, wall = run_child(args, root, log, f"[{documents:,}] ")
    print(f"[{documents:,}] materialize: exit {code} after {wall:.1f}s", flush=True)
    return code == 0, wall


def collect(root: Path, documents: int, job: str, prelude: dict, wall: float | None, failed: bool,
            extra: dict) -> dict:
    code, read, _ = run_child(["--child-read", str(root), "--dataset", dataset_name(documents), "--job", job], root,
                              echo=f"[{documents:,}] read: ")
    if code != 0 or read is None:
        print(f"[{documents:,}] reading the instance at {root / '.dagster'} failed (exit {code})", flush=True)
        read = {"assets": {}, "missing": ["(the instance could not be read)"]}
    return size_summary(documents, read, prelude, wall, failed=failed, **extra)


def resolve_config(value: str) -> Path:
    for candidate in (Path(value).expanduser(), REPO_ROOT / value):
        if candidate.is_file():
            return candidate.resolve()
    raise SystemExit(f"run config {value} not found (relative paths: to the working directory or the repository)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="documents")
    parser.add_argument("--root", help="folder of the size roots DIR/N (resumed when present; default: a new temp)")
    parser.add_argument("--json", help="write the figures as JSON here")
    parser.add_argument("--plot", help="log-log PNG (default DIR/graph_scaling.png)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"run config (default {DEFAULT_CONFIG})")
    parser.add_argument("--job", default=DEFAULT_JOB, help=f"job to materialize (default {DEFAULT_JOB})")
    parser.add_argument("--test-fraction", type=float,
                        help=f"the world's test_fraction (default: about {TEST_QUERIES:,} test queries at every size)")
    parser.add_argument("--child-world", help=argparse.SUPPRESS)
    parser.add_argument("--child-import", help=argparse.SUPPRESS)
    parser.add_argument("--child-read", help=argparse.SUPPRESS)
    parser.add_argument("--documents", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_world:
        return child_world(Path(args.child_world), args.documents, args.test_fraction) or 0
    if args.child_import:
        return child_import(Path(args.child_import), args.dataset) or 0
    if args.child_read:
        return child_read(Path(args.child_read), args.dataset, args.job) or 0

    config = resolve_config(args.config)
    base = Path(args.root).expanduser().resolve() if args.root else Path(tempfile.mkdtemp(prefix="skim_graph_scaling_"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"storage roots under {base} (pass --root {base} to resume); job {args.job}, config {config}", flush=True)
    sizes, failed = {}, False
    for documents in sorted(set(args.sizes)):
        root = base / str(documents)
        test_fraction = args.test_fraction if args.test_fraction is not None else default_test_fraction(documents)
        prelude = prepare(root, documents, test_fraction)
        ok, wall = materialize(root, documents, config, args.job)
        sizes[str(documents)] = collect(root, documents, args.job, prelude, wall, failed=not ok,
                                        extra={"job": args.job, "config": str(config), "root": str(root)})
        if not ok:
            failed = True
            print(f"[{documents:,}] the run failed: larger sizes are not started", flush=True)
            break
    document = report(sizes)
    print()
    print(results_table(sizes))
    print()
    print(exponents_table(sizes))
    missing = {n: s["missing"] for n, s in sizes.items() if s["missing"]}
    for n, assets in missing.items():
        print(f"\n{int(n):,} documents: no materialization for {len(assets)} asset(s) of {args.job}: "
              f"{', '.join(assets)}")
    out = plot(sizes, Path(args.plot) if args.plot else base / "graph_scaling.png")
    print(f"\nplot: {out}")
    if args.json:
        print(f"JSON: {write_json_atomic(document, Path(args.json))}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
