"""The `skim` command: generate and run the demo, import datasets, materialize them, print reports."""

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path

DEMO_DATASET = "demo"


class UsageError(Exception):
    """Bad arguments or environment: `skim` prints the message as one line and exits with status 2."""


def _use_root(root: str) -> Path:
    """Point every resource default and the Dagster instance at `root` (before definitions are imported)."""
    root_path = Path(root).expanduser().resolve()
    if root_path.exists() and not root_path.is_dir():
        raise UsageError(f"--root {root}: {root_path} is a file, not a folder (the storage root is a folder)")
    from .deployment import deployment, install_instance_config

    try:
        deployment()  # the executor is built from it when the code location loads: refuse it here, in one line
    except ValueError as error:
        raise UsageError(str(error)) from None
    os.environ["SKIM_DATA_ROOT"] = str(root_path)
    os.environ.setdefault("DAGSTER_HOME", str(root_path / ".dagster"))
    install_instance_config(os.environ["DAGSTER_HOME"])  # the `gpu` pool's limit across runs
    return root_path


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def register_dataset(name: str, instance) -> None:
    from .lib.layout import check_dataset_name
    from .partitions import dataset_partitions

    check_dataset_name(name)
    if not instance.has_dynamic_partition(dataset_partitions.name, name):
        instance.add_dynamic_partitions(dataset_partitions.name, [name])


LOG_LEVEL_ENV = "SKIM_LOG_LEVEL"
CLI_PID_TAG, CLI_HOST_TAG = "skim/cli_pid", "skim/cli_host"  # which `skim` process runs a run in-process


def cli_run_tags() -> dict[str, str]:
    """Tags of a run this `skim` process executes in-process: which process on which machine runs it."""
    return {CLI_PID_TAG: str(os.getpid()), CLI_HOST_TAG: socket.gethostname()}


def _live_step_processes(instance, run_id: str) -> list[int]:
    """Step processes of a run that are still alive (a killed `skim` can leave them training)."""
    from .lib.storage import process_alive

    started, ended = set(), set()
    for record in instance.all_logs(run_id):  # one read of the run's events
        event = record.dagster_event
        if event is None or not event.pid:
            continue
        if event.event_type_value == "STEP_WORKER_STARTED":
            started.add(event.pid)
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ended.add(event.pid)
    return sorted(pid for pid in started - ended if process_alive(pid))


def reap_dead_cli_runs(instance) -> list[str]:
    """Runs a `skim` process on this machine started and never finished because the process is gone (killed,
    machine restarted): marked failed, and their `gpu` pool slots freed. Without this, a killed run would hold
    its slot forever and every later model step would wait for it. A run whose step processes are still alive
    keeps its slots (freeing them would let a second model step start beside one still training): it is reaped
    by the first `skim` after they end."""
    import dagster as dg

    from .lib.storage import process_alive

    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                                       tags={CLI_HOST_TAG: cli_run_tags()[CLI_HOST_TAG]})):
        pid = int(run.tags.get(CLI_PID_TAG, "0") or 0)
        if not pid or pid == os.getpid() or process_alive(pid):
            continue
        alive = _live_step_processes(instance, run.run_id)
        if alive:
            print(f"run {run.run_id[:8]} of a killed skim process still has step process(es) {alive} running; "
                  "its pool slots stay held until they end (stop them with `kill PID`)")
            continue
        instance.report_run_failed(run, f"the skim process (pid {pid}) that ran it is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    if reaped:
        print(f"marked {len(reaped)} run(s) of a killed skim process as failed and freed their pool slots: "
              f"{', '.join(r[:8] for r in reaped)}")
    _free_slots_of_finished_runs(instance)
    return reaped


def _free_slots_of_finished_runs(instance) -> list[str]:
    """Pool slots still claimed by runs that have finished (a run killed with its step mid-way is marked failed by
    its own process, but the step's slot is never given back): freed once none of their step processes lives, or
    every later model step would wait for them forever."""
    storage = instance.event_log_storage
    holders = {slot.run_id for key in storage.get_concurrency_keys()
               for slot in storage.get_concurrency_info(key).claimed_slots}
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if (run is None or run.is_finished) and not _live_step_processes(instance, run_id):
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    if freed:
        print(f"freed the pool slots still held by {len(freed)} finished run(s): {', '.join(r[:8] for r in freed)}")
    return freed


def cli_job(job_name: str, in_process: bool = False):
    """A job of the code location, with `in_process` on the in-process executor. The run's step processes rebuild
    it from this function (`dg.build_reconstructable_job`)."""
    import dagster as dg

    from .definitions import defs

    job = defs.resolve_job_def(job_name)
    return job.with_executor_def(dg.in_process_executor) if in_process else job


WORKSPACE_FILE = Path(__file__).resolve().parents[1] / "workspace.yaml"  # beside the package: the repo, the image
DEFINITIONS_MODULE = "skim_assets.definitions"


def code_location_origin(workspace: Path = WORKSPACE_FILE):
    """The code location serving this package's definitions, read from `workspace` by Dagster's own loader, as the
    webserver reads it (so its location name is the file's); without that file, the location of
    `dagster dev -m skim_assets.definitions` (named after the module)."""
    from dagster._core.workspace.load import location_origin_from_module_name, location_origins_from_yaml_paths

    if not workspace.exists():
        return location_origin_from_module_name(DEFINITIONS_MODULE, None, None)
    for origin in location_origins_from_yaml_paths([str(workspace)]):
        target = getattr(origin, "loadable_target_origin", None)
        if target is not None and target.module_name == DEFINITIONS_MODULE:
            return origin
    raise UsageError(f"{workspace} loads no code location from {DEFINITIONS_MODULE}")


def remote_job_origin(job_name: str):
    """The job `job_name` of the workspace's code location, which the UI files a run under: a run that carries it
    shows on the job's page and on Overview like a run the UI launched, and the UI can re-execute it."""
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin

    from .definitions import defs

    return RemoteJobOrigin(RemoteRepositoryOrigin(code_location_origin(), defs.get_repository_def().name), job_name)


def materialize_dataset(name: str, instance, run_config: dict | None = None, job_name: str = "skim_pipeline",
                        only_missing_under: Path | None = None, in_process: bool = False) -> bool:
    """Run a job (default: the whole graph) for one dataset partition through the instance; returns success.

    The run is created as the UI creates one: filed under the job of the workspace's code location, with the
    job's own config for the partition (what the launchpad loads) under the CLI's loggers and `run_config`. It
    runs in this process through the job's executor (every step a process of its own, `deployment.py`; the demo
    jobs run their steps in this process), so the instance's pools and the executor's limits apply as to any run
    the UI or a sensor launches. `in_process` runs the steps one after another in this process whatever the job's
    executor. With `only_missing_under` (a storage root), only the assets without an artifact there and everything
    downstream of them run: a long run that stopped half way picks up where it stopped, without retraining
    finished models."""
    import dagster as dg
    from dagster._core.execution.api import execute_run

    from .jobs import REFRESH_ALWAYS

    selection = None
    if job_name in REFRESH_ALWAYS:
        selection = existing_assets(Path(os.environ.get("SKIM_DATA_ROOT", "data")).resolve(), name, job_name)
        print(f"refreshing what {name!r} has: {', '.join(k.to_user_string() for k in selection)}")
    if only_missing_under is not None:
        selection = missing_assets(only_missing_under, name, job_name)
        if not selection:
            print(f"every asset of {job_name} has an artifact for {name!r}; nothing to run")
            return True
        print(f"running {len(selection)} assets without artifacts (and what they feed): "
              f"{', '.join(sorted(k.to_user_string() for k in selection))}")
    # the console shows one line per asset step and long steps' progress (`console.py`), not Dagster's event
    # stream; SKIM_LOG_LEVEL=INFO or DEBUG brings Dagster's console logger back. The instance's event log keeps
    # every event for the UI either way.
    level = os.environ.get(LOG_LEVEL_ENV, "").upper()
    loggers = {"console": {"config": {"log_level": level}}} if level else {"skim_progress": {}}
    reap_dead_cli_runs(instance)
    job = dg.build_reconstructable_job("skim_assets.cli", "cli_job", (job_name, in_process))
    job_def = job.get_definition()
    partition_config = job_def.partitioned_config.get_run_config_for_partition_key(name)
    # the given config wins setting by setting: what it does not name (an op, or one model of a method's two) keeps
    # the job's profile
    ops = merged_config(partition_config.get("ops", {}), (run_config or {}).get("ops", {}))
    with _terminate_as_interrupt():
        run = instance.create_run_for_job(
            job_def, run_config={**partition_config, "loggers": loggers, **(run_config or {}), "ops": ops},
            tags={**job_def.run_tags, **cli_run_tags(), "dagster/partition": name},
            asset_selection=frozenset(selection) if selection else None,
            job_code_origin=job.get_python_origin(), remote_job_origin=remote_job_origin(job_name))
        return execute_run(job, run, instance).success


def merged_config(base: dict, given: dict) -> dict:
    """`given` over `base`, nested dicts merged key by key (a value that is not a dict replaces the base's)."""
    merged = dict(base)
    for key, value in given.items():
        merged[key] = (merged_config(merged[key], value)
                       if isinstance(value, dict) and isinstance(merged.get(key), dict) else value)
    return merged


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (`kill PID`, a supervisor stopping `skim`) handled like Ctrl-C: Dagster's executor then stops the
    step processes and marks the run, instead of leaving them training with nobody to report to."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"skim received signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _artifacts_of(root: Path, name: str, job_name: str):
    """(the job's asset keys, has_artifact(key) for dataset `name` under `root`), and the asset graph."""
    from .definitions import defs
    from .resources import StorageResource

    storage = StorageResource(root=str(root))
    graph = defs.resolve_asset_graph()

    def has_artifact(key) -> bool:  # unpartitioned assets (base_slm) live at <root>/<asset>/
        if key.path[-1] == "duckdb_catalogue":  # one database for every dataset
            return storage.layout.catalogue.exists()
        partitioned = graph.get(key).partitions_def is not None
        return storage.has_artifact(key.path[-1], name if partitioned else None)

    return defs.resolve_job_def(job_name).asset_layer.executable_asset_keys, has_artifact, graph


def existing_assets(root: Path, name: str, job_name: str) -> list:
    """Keys of the refresh job `job_name` that dataset `name` already has artifacts of (plus those it always runs,
    `jobs.REFRESH_ALWAYS`), as the sensors' refreshes select them."""
    from .jobs import REFRESH_ALWAYS

    in_job, has_artifact, _ = _artifacts_of(root, name, job_name)
    return sorted(k for k in in_job if k.path[-1] in REFRESH_ALWAYS[job_name] or has_artifact(k))


def missing_assets(root: Path, name: str, job_name: str) -> list:
    """Keys of `job_name` with no artifact for dataset `name` under `root`, and every key downstream of them."""
    import dagster as dg

    from .lib.datasets import TABLE_ASSETS, source_changed_since_import

    in_job, has_artifact, graph = _artifacts_of(root, name, job_name)
    missing = [k for k in in_job if not has_artifact(k)]
    if source_changed_since_import(root, name):  # edited in place: the tables and all they feed are stale
        print(f"the source files of {name!r} changed since its tables were imported: importing them again")
        missing += [k for k in in_job if k.path[-1] in TABLE_ASSETS]
    if not missing:
        return []
    return sorted(dg.AssetSelection.assets(*missing).downstream().resolve(graph) & set(in_job))


def print_report(root: Path, name: str) -> int:
    import polars as pl

    from .assets.evaluation import TABLE_COLUMNS
    from .lib.catalogue import refresh_catalogue
    from .lib.layout import Layout
    from .lib.report_tables import metrics_table_markdown

    layout = Layout(root)
    path = layout.table("retrieval_metrics", name)
    if not path.exists():
        print(f"no metrics for dataset {name!r} yet ({path} is missing)", file=sys.stderr)
        return 1
    table = pl.read_parquet(path)
    counts = {asset: pl.scan_parquet(layout.table(asset, name)).select(pl.len()).collect().item()
              for asset in ("teacher_demonstrations", "synthetic_queries", "mapped_pairs")
              if layout.table(asset, name).exists()}
    if counts:
        print(f"\nKnowledge infusion for '{name}': {counts.get('teacher_demonstrations', 0)} teacher demonstrations, "
              f"{counts.get('synthetic_queries', 0)} synthetic queries, "
              f"{counts.get('mapped_pairs', 0)} new mapped pairs")
    print_knowledge_infusion(root, name)
    print(f"\nRetrieval metrics for dataset '{name}' (percent; queries without labels excluded):\n")
    print(metrics_table_markdown(table.to_dicts(), TABLE_COLUMNS))
    comparison = layout.table("comparison_report", name)
    if comparison.exists():
        report = pl.read_parquet(comparison)
        columns = ["method", *[c for c in report.columns if "unbiased" in c]]
        print(f"\nComparison on the unbiased test set (all methods; full table: {comparison}):\n")
        print(metrics_table_markdown(report.select(columns).to_dicts(), columns))
    views = refresh_catalogue(root)
    print(f"\nDuckDB catalogue: {layout.catalogue} ({len(views)} views, e.g. "
          f"`SELECT * FROM retrieval_metrics WHERE dataset = '{name}'`)")
    return 0


def print_knowledge_infusion(root: Path, name: str) -> None:
    """What the teacher and the student wrote (grounded, junk, distinct per document) and the label repair of
    every method that adds pairs (precision against the held-back train labels, recall of them)."""
    import polars as pl

    from .lib.quality import judged_quality
    from .lib.report_tables import metrics_table_markdown
    from .resources import StorageResource

    storage = StorageResource(root=str(root))
    rows = []
    for asset in ("teacher_demonstrations", "synthetic_queries", "synthetic_queries_no_metadata",
                  "synthetic_queries_udapdr"):
        if not storage.table_path(asset, name, "judged").exists():
            continue
        # the writer's own verdicts (before any filter), what it was asked and what was kept: of one version
        judged, raw, data = storage.read_asset_tables(asset, name, "judged", "raw", "data")
        asked = raw["doc_id"].n_unique()
        versions = [("", judged)]
        if asset != "teacher_demonstrations":
            kept = judged.join(data.select("doc_id", "query"), on=["doc_id", "query"], how="semi")
            versions = [(" (written)", judged), (" (kept)", kept)]
        for label, table in versions:
            figures = judged_quality(table, asked)
            rows.append({"writer": asset + label, "queries": figures["queries"],
                         "grounded %": figures["grounded_share"],
                         "junk %": figures["junk_share"],
                         "distinct per doc": figures["distinct_queries_per_document"]})
    if rows:
        print(f"\nWhat the teacher and the student wrote for '{name}':\n")
        shares = {"grounded %": ("share", ""), "junk %": ("share", "")}  # fractions, printed as percentages
        print(metrics_table_markdown(rows, list(rows[0]), shares))
    repair = storage.table_path("label_repair_report", name)
    if repair.exists():
        table = pl.read_parquet(repair).rename({"precision": "precision %", "recall": "recall %"})
        columns = ["method", "pairs_added", "pairs_correct", "precision %", "held_back_labels", "recall %",
                   "documents_repaired", *(["note"] if "note" in table.columns else [])]
        print("\nLabel repair: added pairs judged against the held-back train labels (all train labels minus the "
              "clicks):\n")
        print(metrics_table_markdown(table.select(columns), columns,
                                     {"precision %": ("share", ""), "recall %": ("share", "")}))


def demo_run_config(job_name: str = "demo") -> dict:
    """The demo profile (`jobs.demo_run_config`) for the ops of `job_name`: the `demo` job's own config."""
    from .definitions import defs
    from .jobs import demo_run_config as profile

    return profile(defs.resolve_job_def(job_name).graph.node_dict)


def demo_job(all_methods: bool) -> str:
    return "demo_all_methods" if all_methods else "demo"


def cmd_demo(args) -> int:
    root = _use_root(args.root)
    from .lib.demo import DemoWorldConfig, write_demo_dataset

    name = DEMO_DATASET if args.world == "products" else f"{DEMO_DATASET}-{args.world}"
    counts = write_demo_dataset(root / "inputs" / name, DemoWorldConfig(n_documents=args.documents, world=args.world))
    print(f"demo world written to {root / 'inputs' / name}: {counts}", flush=True)
    instance = _instance()
    register_dataset(name, instance)
    if not materialize_dataset(name, instance, job_name=demo_job(args.all_methods)):  # the profile is the job's
        print("the demo run failed: see the log above", file=sys.stderr)
        return 1
    return print_report(root, name)


def cmd_import(args) -> int:
    root = _use_root(args.root)
    from .lib.datasets import DatasetSpec, import_tables, input_changes, write_spec
    from .lib.formats import DataError
    from .lib.layout import Layout, check_dataset_name

    name = check_dataset_name(args.name)
    try:
        source = Path(args.source).expanduser().resolve()
    except (RuntimeError, OSError) as error:  # e.g. a symlink loop
        print(f"import failed: source {args.source}: {error}", file=sys.stderr)
        return 2
    spec, problems = DatasetSpec.parse(dict(
        format=args.format, source=str(source), title_words=args.title_words, dev_split=args.dev_split,
        simulate_bias=not args.no_simulate_bias, exposure_k=args.exposure_k, click_model=args.click_model,
        eta=args.eta, score_scale=args.score_scale,
        propensity_a=args.propensity_a, propensity_b=args.propensity_b, prompt_style=args.prompt_style,
        generate=args.generate, query_metadata_field=args.query_metadata_field, tau=args.tau, seed=args.seed))
    if problems:
        print("import failed: " + "; ".join(f"--{field.replace('_', '-')} {problem}" for field, problem in problems),
              file=sys.stderr)
        return 2
    folder = root / "inputs" / name
    try:
        tables = import_tables(folder, spec)  # validate everything before registering anything
    except DataError as error:
        print(f"import failed: {error}", file=sys.stderr)
        return 2
    changes = input_changes(root, name, spec, tables)
    stale = Layout(root).artifacts_of(name) if changes else []
    if stale and not args.replace:
        print(f"import refused: dataset {name!r} exists and this input differs ({'; '.join(changes)}), while its "
              f"artifacts hold the old data ({', '.join(stale)}); pass --replace to re-point it (then re-materialize "
              "it), or import under a new name", file=sys.stderr)
        return 2
    if stale:
        print(f"warning: the input of {name!r} changed ({'; '.join(changes)}); stale until re-materialized "
              f"(`skim materialize {name}`): {', '.join(stale)}", file=sys.stderr)
    for warning in tables.warnings():
        print(f"warning: {name}: {warning}", file=sys.stderr)
    instance = _instance()
    # The partition first, then dataset.json: a kill in between leaves a partition whose runs fail with "no
    # dataset.json", never a spec without a partition that the dataset-folder sensor would run the pipeline for.
    register_dataset(name, instance)
    write_spec(folder, spec)
    print(f"registered dataset {name!r}: {tables.documents.height} documents, {tables.queries.height} queries, "
          f"{tables.qrels.height} labels ({spec.format} from {source})")
    if args.materialize:
        if not materialize_dataset(name, instance):
            return 1
        return print_report(root, name)
    return 0


def load_run_config(path: str | None) -> dict:
    """A Dagster run config from a YAML or JSON file (the `ops:` mapping the UI's launchpad takes)."""
    if not path:
        return {}
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise UsageError(f"--config {path}: {error.strerror or error}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()
        raise UsageError(f"--config {path}: not valid YAML or JSON ({' '.join(first[:3])})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: a run config must be a mapping (e.g. `ops: {{...}}`), got {type(config).__name__}")
    return config


def cmd_materialize(args) -> int:
    """Run the job for each named dataset in turn (a backfill over datasets from the command line)."""
    from .lib.layout import SPEC_FILE, check_dataset_name

    names = [check_dataset_name(name) for name in args.names]  # every name before any run
    root = _use_root(args.root)
    run_config = load_run_config(args.config)
    # a mistyped name must not become a partition that stays in the UI forever
    unknown = [name for name in names if not (root / "inputs" / name / SPEC_FILE).exists()]
    if unknown:
        raise UsageError(f"no dataset {', '.join(map(repr, unknown))} under {root / 'inputs'} (no {SPEC_FILE}): "
                         "import it first (`skim import NAME SOURCE`)")
    instance = _instance()
    failed = []
    for name in names:
        register_dataset(name, instance)
        if not materialize_dataset(name, instance, run_config, args.job, root if args.only_missing else None):
            failed.append(name)
            continue
        print_report(root, name)
    if failed:
        print(f"failed: {', '.join(failed)} (see the log above)", file=sys.stderr)
    return 1 if failed else 0


def write_html_report(root: Path, name: str, path: Path) -> Path:
    """The `html_report` asset's page, written from the stored report tables and plots to `path`."""
    from .lib.html_report import ReportContent, render_report, report_sections
    from .lib.storage import write_text_atomic
    from .resources import StorageResource

    storage = StorageResource(root=str(root))

    def read(asset: str, table: str):
        return storage.read_table(asset, name, table) if storage.table_path(asset, name, table).exists() else None

    return write_text_atomic(render_report(ReportContent(name, report_sections(read), storage.figures(name))), path)


def cmd_report(args) -> int:
    from .lib.layout import check_dataset_name

    root, name = _use_root(args.root), check_dataset_name(args.name)
    status = print_report(root, name)
    if args.html is not None and status == 0:
        print(f"\nHTML report: {write_html_report(root, name, Path(args.html).expanduser().resolve())}")
    return status


def build_parser() -> argparse.ArgumentParser:
    from typing import get_args

    from .lib.datasets import DatasetSpec
    from .lib.demo import WORLDS, DemoWorldConfig
    from .lib.formats import DIRECTIONS
    from .lib.importers import FORMATS, IMPORTERS
    from .lib.simulation import ClickModel

    defaults = DatasetSpec()
    parser = argparse.ArgumentParser(prog="skim", description=__doc__)
    parser.add_argument("--root", default=os.environ.get("SKIM_DATA_ROOT", "data"),
                        help="storage root (default ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate the demo world, materialize every asset, print the metrics")
    demo.add_argument("--documents", type=int, default=DemoWorldConfig().n_documents, help="demo world size")
    demo.add_argument("--world", choices=WORLDS, default=DemoWorldConfig().world,
                      help="products: queries written for products from their metadata (dataset 'demo'); "
                           "categories: the reverse direction, categories written for products asked about as "
                           "queries, from the queries' metadata (dataset 'demo-categories'); catalogue: the "
                           "products world at any size (160 to 1,000,000+), growing vocabularies and long-tailed "
                           "label frequencies (dataset 'demo-catalogue')")
    demo.add_argument("--all-methods", action="store_true",
                      help="also run the generation ablations (UDAPDR-style, SKIM without metadata)")
    demo.set_defaults(func=cmd_demo)

    imp = sub.add_parser("import", help="validate and register a dataset folder as a partition")
    imp.add_argument("name", help="dataset (partition) name")
    imp.add_argument("source", help="folder with the raw files")
    imp.add_argument("--format", choices=FORMATS, default=defaults.format,  # the importer registry, one source
                     help="layout of the raw files (each may be .gz): "
                          + "; ".join(f"{i.name}: {i.description}" for i in IMPORTERS.values()))
    imp.add_argument("--title-words", type=int, default=defaults.title_words)
    imp.add_argument("--dev-split", choices=["ignore", "train", "test"], default=defaults.dev_split)
    imp.add_argument("--no-simulate-bias", action="store_true", help="labels already are clicks")
    imp.add_argument("--exposure-k", type=int, default=defaults.exposure_k)
    imp.add_argument("--click-model", choices=get_args(ClickModel), default=defaults.click_model,
                     help="which shown relevant documents the simulation clicks: every one (Algorithm 1), by "
                          "sigmoid(score), or by the position-based model (1 / position) ** eta")
    imp.add_argument("--eta", type=float, default=defaults.eta, help="the position-based click model's exponent")
    imp.add_argument("--score-scale", type=float, default=defaults.score_scale,
                     help="the sigmoid click model's score scale")
    imp.add_argument("--propensity-a", type=float, default=defaults.propensity_a)
    imp.add_argument("--propensity-b", type=float, default=defaults.propensity_b)
    imp.add_argument("--prompt-style", choices=["url-queries", "wiki-categories"], default=defaults.prompt_style)
    imp.add_argument("--generate", choices=["", *DIRECTIONS], default=defaults.generate,
                     help="queries_for_documents (document metadata) or documents_for_queries (query metadata); "
                          "default: by prompt style")
    imp.add_argument("--query-metadata-field", default=defaults.query_metadata_field,
                     help="BEIR: the queries.jsonl key ('key' or 'metadata.key') holding query-side metadata text")
    imp.add_argument("--tau", type=float, default=defaults.tau)
    imp.add_argument("--seed", type=int, default=defaults.seed)
    imp.add_argument("--materialize", action="store_true", help="also run the whole graph for it")
    imp.add_argument("--replace", action="store_true",
                     help="re-point an existing dataset whose input changed (its artifacts are stale until rerun)")
    imp.set_defaults(func=cmd_import)

    mat = sub.add_parser("materialize", help="run the whole graph for one or more registered datasets")
    mat.add_argument("names", nargs="+", metavar="dataset")
    mat.add_argument("--config", help="run config file (YAML/JSON), e.g. configs/scifact_cpu.yaml")
    mat.add_argument("--job", default="skim_pipeline",
                     choices=["skim_pipeline", "skim_core", "dataset_import", "click_refresh", "model_refresh", "demo",
                              "demo_all_methods"],
                     help="skim_core leaves out the generation ablations; dataset_import only imports and checks; "
                          "click_refresh renews the tables new click-log drops change (no model step); model_refresh "
                          "retrains what the train pairs feed; demo and demo_all_methods run skim_core or the whole "
                          "graph under the demo profile")
    mat.add_argument("--only-missing", action="store_true",
                     help="run only assets without an artifact yet, and what they feed (resume a long run)")
    mat.set_defaults(func=cmd_materialize)

    rep = sub.add_parser("report", help="print a dataset's metrics table and refresh the DuckDB catalogue")
    rep.add_argument("name")
    rep.add_argument("--html", metavar="PATH", help="also write the report as one self-contained HTML page (every "
                                                     "report table and plot; the `html_report` asset's page)")
    rep.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .lib.layout import DatasetNameError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetNameError, UsageError) as error:  # one clear line, no traceback
        print(f"skim {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
