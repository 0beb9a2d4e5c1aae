"""Table sets under concurrent writers and readers (issue 27): counts what goes wrong, in real processes.

    python benchmarks/table_set_race.py --writers-iterations 300 --reader-seconds 10

Writers: two processes import the same dataset at the same moment (`write_table_set`, as `dataset_tables`
does), `--writers-iterations` times as a first import (a fresh root each round) and as many times as a
re-import of an existing set. After each round the set must be whole: every table there, all of one import;
a set that is not is lost (missing or unreadable tables) or mixed. A writer that raises is a writer error.

Reader: one process re-imports the dataset in a loop for `--reader-seconds` while another reads documents,
queries and relevance labels as the IO manager does within a step (one `TableSetPins`). A read is mixed when
its tables come from different imports, failed when it raises. `--unpinned` reads through the links without
pinning (how readers read before the fix), to show that the check does detect mixes.
"""

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402

STEP, DATASET = "dataset_tables", "ds"
ASSETS = ("documents", "queries", "relevance_labels")
BARRIER_TIMEOUT_S = 120.0


def import_frames(marker: str, rows: int) -> dict[str, dict[str, pl.DataFrame]]:
    """One import's tables, each row carrying the import's `marker` (what a mix is told by)."""
    ids = [f"d{i}" for i in range(rows)]
    qids = [f"q{i}" for i in range(rows)]
    return {
        "documents": {"data": pl.DataFrame({"doc_id": ids, "title": [f"title {i}" for i in range(rows)],
                                            "import_id": [marker] * rows})},
        "queries": {"data": pl.DataFrame({"query_id": qids, "text": [f"query {i}" for i in range(rows)],
                                          "import_id": [marker] * rows})},
        "relevance_labels": {"data": pl.DataFrame({"query_id": qids, "doc_id": ids, "import_id": [marker] * rows})},
    }


def markers(frames: list[pl.DataFrame]) -> set[str]:
    return {marker for frame in frames for marker in frame["import_id"].unique().to_list()}


def set_state(root: Path) -> str:
    """'whole', 'lost' (a table missing or unreadable) or 'mixed' (tables of different imports)."""
    try:
        frames = [pl.read_parquet(root / asset / DATASET / "data.parquet") for asset in ASSETS]
    except Exception:
        return "lost"
    return "whole" if len(markers(frames)) == 1 else "mixed"


def _write(root: Path, marker: str, rows: int) -> None:
    from skim_assets.lib.storage import write_table_set

    write_table_set(root, STEP, DATASET, import_frames(marker, rows))


def _racing_writer(base: str, name: str, iterations: int, rows: int, start, done, results) -> None:
    errors = []
    for round_ in range(iterations):
        for root in (Path(base) / f"first-{round_}", Path(base) / "again"):
            start.wait()
            try:
                _write(root, f"{name}-{round_}", rows)
            except Exception as error:  # counted, and the race goes on
                errors.append(f"{type(error).__name__}: {error}")
            done.wait()
    results.put(errors)


def race_writers(base: str | Path, iterations: int, rows: int = 100) -> dict:
    """Two writer processes write one set at the same moment, `iterations` rounds of a first import and of a
    re-import each; returns the counts."""
    base = Path(base)
    _write(base / "again", "seed", rows)
    context = multiprocessing.get_context("spawn")
    start, done = (context.Barrier(3, timeout=BARRIER_TIMEOUT_S) for _ in range(2))
    results = context.Queue()
    writers = [context.Process(target=_racing_writer, args=(str(base), name, iterations, rows, start, done, results))
               for name in ("a", "b")]
    for writer in writers:
        writer.start()
    states = {"first": {"whole": 0, "lost": 0, "mixed": 0}, "again": {"whole": 0, "lost": 0, "mixed": 0}}
    try:
        for round_ in range(iterations):
            for kind, root in (("first", base / f"first-{round_}"), ("again", base / "again")):
                start.wait()
                done.wait()
                states[kind][set_state(root)] += 1
            shutil.rmtree(base / f"first-{round_}", ignore_errors=True)
        errors = [error for _ in writers for error in results.get(timeout=BARRIER_TIMEOUT_S)]
    finally:
        for writer in writers:
            writer.join(timeout=BARRIER_TIMEOUT_S)
            if writer.is_alive():
                writer.kill()
    return {"rounds": 2 * iterations,
            "sets_lost": states["first"]["lost"] + states["again"]["lost"],
            "sets_lost_first_import": states["first"]["lost"],
            "sets_mixed": states["first"]["mixed"] + states["again"]["mixed"],
            "writer_errors": len(errors), "writer_error_examples": sorted(set(errors))[:3]}


def _reimporting_writer(root: str, seconds: float, rows: int, start, results) -> None:
    start.wait()
    deadline, writes, errors = time.monotonic() + seconds, 0, []
    while time.monotonic() < deadline:
        try:
            _write(Path(root), f"w-{writes}", rows)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
        writes += 1
    results.put(("writer", writes, errors))


def read_import(root: Path, pinned: bool) -> list[pl.DataFrame]:
    """Documents, queries and labels as one step reads them: through one `TableSetPins` (or through the links)."""
    folders = [root / asset / DATASET for asset in ASSETS]
    if not pinned:
        return [pl.read_parquet(folder / "data.parquet") for folder in folders]
    from skim_assets.lib.storage import TableSetPins

    with TableSetPins() as pins:
        return [pl.read_parquet(pins.folder(folder) / "data.parquet") for folder in folders]


def _reader(root: str, seconds: float, pinned: bool, start, results) -> None:
    start.wait()
    deadline, reads, mixed, failures = time.monotonic() + seconds, 0, 0, []
    while time.monotonic() < deadline:
        reads += 1
        try:
            mixed += len(markers(read_import(Path(root), pinned))) > 1
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
    results.put(("reader", reads, mixed, failures))


def race_reader(base: str | Path, seconds: float, rows: int = 1000, pinned: bool = True) -> dict:
    """A writer process re-imports one set for `seconds` while a reader process reads it; returns the counts."""
    root = Path(base) / "reader"
    _write(root, "seed", rows)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2, timeout=BARRIER_TIMEOUT_S), context.Queue()
    processes = [context.Process(target=_reimporting_writer, args=(str(root), seconds, rows, start, results)),
                 context.Process(target=_reader, args=(str(root), seconds, pinned, start, results))]
    for process in processes:
        process.start()
    try:
        reports = {report[0]: report[1:] for report in (results.get(timeout=seconds + BARRIER_TIMEOUT_S)
                                                         for _ in processes)}
    finally:
        for process in processes:
            process.join(timeout=BARRIER_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    writes, writer_errors = reports["writer"]
    reads, mixed, failures = reports["reader"]
    return {"writes": writes, "writer_errors": len(writer_errors), "reads": reads, "mixed_reads": mixed,
            "failed_reads": len(failures), "failed_read_examples": sorted(set(failures))[:3],
            "versions_left": len(list((root / ".sets" / STEP / DATASET).glob("v-*")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers-iterations", type=int, default=300, help="rounds of two simultaneous writers "
                        "(each round: a first import and a re-import)")
    parser.add_argument("--reader-seconds", type=float, default=10.0, help="how long the reader races re-imports")
    parser.add_argument("--rows", type=int, default=1000, help="rows of each table in the reader race")
    parser.add_argument("--unpinned", action="store_true", help="read through the links without pinning")
    parser.add_argument("--root", help="a folder to race in (default: a temporary one, removed after)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.root) as base:
        if args.writers_iterations > 0:
            started = time.monotonic()
            writers = race_writers(Path(base) / "writers", args.writers_iterations)
            print(f"writers: {writers['rounds']} rounds ({args.writers_iterations} first imports, "
                  f"{args.writers_iterations} re-imports) in {time.monotonic() - started:.1f}s: "
                  f"sets lost {writers['sets_lost']} (first imports {writers['sets_lost_first_import']}), "
                  f"sets mixed {writers['sets_mixed']}, writer errors {writers['writer_errors']}")
            for example in writers["writer_error_examples"]:
                print(f"  writer error: {example}")
        if args.reader_seconds > 0:
            reader = race_reader(base, args.reader_seconds, args.rows, pinned=not args.unpinned)
            print(f"reader ({'unpinned' if args.unpinned else 'pinned'}) over {args.reader_seconds:g}s of "
                  f"re-imports: {reader['reads']} reads, mixed reads {reader['mixed_reads']}, failed reads "
                  f"{reader['failed_reads']}; {reader['writes']} re-imports, writer errors {reader['writer_errors']}, "
                  f"{reader['versions_left']} versions left")
            for example in reader["failed_read_examples"]:
                print(f"  failed read: {example}")


if __name__ == "__main__":
    main()
