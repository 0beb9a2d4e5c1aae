"""Atomic, idempotent writes of tables, JSON, model directories and sets of tables.

Every artifact is written to a temporary sibling and renamed into place, so a killed step leaves the
previous good artifact (or nothing) and a rerun simply replaces it. Temporary siblings are created like any other
file (the umask applies), and those a killed write left behind are removed by the next write to the same place.
Tables a step writes together (a dataset's documents, queries and labels) are written as one set
(`write_table_set`): readers that pin the set (`TableSetPins`) see all old or all new tables, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

# A temporary sibling untouched for this long belongs to a killed write (a live write keeps touching it).
ORPHAN_AGE_S = 600.0
SETS_FOLDER = ".sets"  # under the storage root: the version folders of table sets
WRITER_LOCK = ".writer.lock"  # in a set's folder: one writer of a set at a time
VERSION_LOCK = ".lock"  # in a version folder: readers hold it shared, so no writer prunes the version under them
PIN_ATTEMPTS = 100  # a version resolved but pruned before it was locked is resolved again, this many times


def _temp_sibling(path: Path, kind: str = "tmp") -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.{kind}"


def clean_orphans(path: str | Path, min_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove the temporary siblings of `path` (`.<name>.<id>.tmp`/`.old`, files or folders) that killed writes
    left behind, when untouched for `min_age_s` seconds; returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed, now = [], time.time()
    # `.old` is the previous artifact moved aside by `atomic_directory`: only junk once `path` is back in place.
    for kind in ("tmp", "old") if path.exists() else ("tmp",):
        for orphan in path.parent.glob(f".{path.name}.*.{kind}"):
            try:
                if now - orphan.lstat().st_mtime < min_age_s:
                    continue
                if orphan.is_dir() and not orphan.is_symlink():
                    shutil.rmtree(orphan)
                else:
                    orphan.unlink()
            except FileNotFoundError:  # another writer cleaned it first
                continue
            removed.append(orphan)
    return removed


def write_parquet_atomic(frame: pl.DataFrame | pl.LazyFrame, path: str | Path) -> Path:
    """Write `frame` to `path` as Parquet via a temp file + rename; a lazy frame is streamed (never held whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    tmp = _temp_sibling(path)
    try:
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(tmp)
        else:
            frame.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write `text` (UTF-8) to `path` via a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` for the caller to write (e.g. `torch.save`); when the block ends it is
    renamed to `path`, so readers see the previous file or the new one whole, never part of one. On an error the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    return write_text_atomic(json.dumps(obj, indent=2, sort_keys=True, default=str), path)


def read_json(path: str | Path, repair: str = "") -> Any:
    """A JSON file's value; a damaged file is a DataError naming it (and `repair`: how to write it again)."""
    from .formats import DataError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, f"damaged, not JSON ({error}){'; ' + repair if repair else ''}") from None


def read_artifact_table(path: str | Path, repair: str) -> pl.DataFrame:
    """A stored Parquet table; a damaged or truncated file is a DataError naming it and how to write it again
    (`repair`), not a bare `parquet: File out of specification` from deep inside a step."""
    from .formats import DataError

    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        if not Path(path).exists():
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(path, f"damaged Parquet file ({first_line}); {repair}") from None


def rematerialize_hint(asset: str, dataset: str | None) -> str:
    """How to write an asset's artifact again."""
    if dataset is None:
        return f"materialize asset '{asset}' again (the UI, or `skim materialize <dataset>`)"
    return (f"write it again: materialize asset '{asset}' for '{dataset}' (remove its folder and run `skim materialize "
            f"{dataset} --only-missing`)")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp directory; on success it replaces `path` whole, on error it is removed.

    The old directory is moved aside before the new one is renamed in, so readers never see a half-written
    directory; the window where `path` is missing is two renames long.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    tmp = _temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, path)


def replace_directory(staged: str | Path, path: str | Path) -> Path:
    """Move the finished folder `staged` (on the same file system) to `path`, replacing what was there.

    The old folder is moved aside first, so readers see the old or the new folder whole; the window where `path`
    is missing is two renames long. A link in `path`'s place (a table set's) is replaced, never followed."""
    staged, path = Path(staged), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    old = _temp_sibling(path, "old")
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        os.replace(path, old)
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


FOLDER_MANIFEST = ".files.json"  # in a folder artifact: the files it was written with


def write_folder_manifest(folder: str | Path) -> Path:
    """Record the files of a finished folder artifact (relative paths), so a file deleted later (a model's
    weights) makes the artifact incomplete instead of present."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != FOLDER_MANIFEST)
    return write_json_atomic(files, folder / FOLDER_MANIFEST)


def missing_files(folder: str | Path) -> list[str]:
    """Files a folder artifact was written with that are gone now (none known for folders without a manifest)."""
    manifest = Path(folder) / FOLDER_MANIFEST
    if not manifest.exists():
        return []
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [FOLDER_MANIFEST]
    return [name for name in files if not (Path(folder) / name).exists()]


STAGING_ORPHAN_AGE_S = 86_400.0  # a staging folder of another host (or of this one, pid unknown) this old is junk


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this pid runs (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (rounded to 0.1).

    Linux: the kernel's high-water mark of this process's memory (`VmHWM` in /proc/self/status), which starts
    afresh at exec (and at fork, from the RSS the child starts with). `getrusage(RUSAGE_SELF).ru_maxrss` would
    be wrong for a process started by fork + exec (`subprocess`, multiprocessing's spawn and forkserver
    start): Linux carries the parent's RSS at the fork over the exec into ru_maxrss, so a small process started
    by a big one reports at least the big one's size. Elsewhere it is ru_maxrss (KiB on Linux, bytes on
    macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    import resource
    import sys

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(maxrss / (2**20 if sys.platform == "darwin" else 1024), 1)


def new_staging_directory(parent: str | Path) -> Path:
    """A fresh, empty folder under `parent` for a step to write an artifact into before it is moved into place
    (`replace_directory`). Its name carries the host and pid of the process writing it, so the folders of killed
    steps are removed here (their process is gone) while a live step, however long it trains, keeps its own."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    host, now = socket.gethostname(), time.time()
    for orphan in parent.iterdir():
        owner_host, _, rest = orphan.name.rpartition("~")[0].partition("~") if "~" in orphan.name else ("", "", "")
        try:
            dead = (owner_host == host and rest.isdigit() and not process_alive(int(rest))) or \
                now - orphan.lstat().st_mtime >= STAGING_ORPHAN_AGE_S
            if dead:
                shutil.rmtree(orphan) if orphan.is_dir() and not orphan.is_symlink() else orphan.unlink()
        except FileNotFoundError:
            continue
    staged = parent / f"{host}~{os.getpid()}~{uuid.uuid4().hex}"
    staged.mkdir()
    return staged


def directory_size_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes: the identity of a written table (our Parquet writes are deterministic)."""
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


# ------------------------------------------------------------------------------------------------------ table sets


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _switch_link(link: Path, target: str) -> None:
    """Point symlink `link` at `target` with one rename (atomic: readers see the old or the new target).

    A real folder in the link's place (a root copied with its links followed, e.g. by `shutil.copytree`) cannot be
    renamed over: it is moved aside first (its tables were already adopted into the new version)."""
    aside = None
    if link.is_dir() and not link.is_symlink():
        aside = _temp_sibling(link, "old")
        os.replace(link, aside)
    tmp = _temp_sibling(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _adopt_artifact_folders(root: Path, set_dir: Path, dataset: str, assets: list[str]) -> None:
    """Turn each `<root>/<asset>/<dataset>` into a link to `<set_dir>/current/<asset>`, keeping what readers see.

    Folders written before table sets existed (plain folders) are first copied (hard links) into a version that
    becomes `current`, so each folder swapped for its link shows the same tables: all old until the new set."""
    links = {asset: root / asset / dataset for asset in assets}
    plain = {asset: link for asset, link in links.items() if not link.is_symlink() and link.is_dir()}
    current = set_dir / "current"
    if plain:
        version = f"v-{uuid.uuid4().hex}"
        tmp = set_dir / f".{version}.tmp"
        tmp.mkdir()
        for asset in assets:
            source = plain.get(asset) or (current / asset)
            if source.is_dir():
                shutil.copytree(source, tmp / asset, copy_function=_link_or_copy)
        os.replace(tmp, set_dir / version)
        _switch_link(current, version)
    for asset, link in links.items():
        if link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(current / asset, link.parent)
        if asset in plain:  # a folder cannot be renamed over: move it aside, link in its place
            aside = _temp_sibling(link, "old")
            os.replace(link, aside)
            os.symlink(target, link)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.symlink(target, link)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing); waits for the holder to finish."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _current_version(current: Path) -> str | None:
    try:
        return os.readlink(current)
    except OSError:  # no set yet, or `current` a plain folder (a root copied with its links followed)
        return None


def _prune_versions(set_dir: Path, keep: set[str]) -> None:
    """Remove the versions not in `keep` that no reader holds; a held one is left for a later write to prune.

    A version is renamed away before it is removed, so a reader that locks it later finds it gone and resolves
    `current` again instead of reading a half-removed folder."""
    for old in set_dir.glob("v-*"):
        if old.name in keep or not old.is_dir():
            continue
        try:
            fd = os.open(old / VERSION_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            doomed = _temp_sibling(old)
            try:
                os.rename(old, doomed)  # unreachable by its name now: the lock can go before the files do
            except OSError:  # pruning is housekeeping: the new version is in place already
                continue
        finally:
            os.close(fd)
        shutil.rmtree(doomed, ignore_errors=True)


def _pin_current(set_dir: Path) -> tuple[Path, int | None] | None:
    """The version folder `current` points at now, with a shared lock on it (the fd, None where the root is
    read-only); None when the set has no `current` link."""
    for _ in range(PIN_ATTEMPTS):
        version = _current_version(set_dir / "current")
        if version is None:
            return None
        folder = set_dir / version
        lock = folder / VERSION_LOCK
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            if not folder.is_dir():
                continue  # pruned since it was resolved
            try:  # a version written before versions had locks
                fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o666)
            except FileNotFoundError:
                continue
            except OSError:  # cannot write the root: rely on writers keeping the previous version
                return folder, None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            held = os.path.samestat(os.stat(lock), os.fstat(fd))
        except FileNotFoundError:
            held = False
        if held:
            return folder, fd
        os.close(fd)  # pruned between resolving and locking: resolve again
    raise RuntimeError(f"could not pin a version of the table set {set_dir}: it was replaced {PIN_ATTEMPTS} times "
                       "while being resolved")


def _set_of_link(folder: Path) -> tuple[Path, str] | None:
    """(set folder, asset) when `folder` is an artifact's link into a table set (`.../.sets/<step>/<dataset>/
    current/<asset>`), else None."""
    try:
        target = os.readlink(folder)
    except OSError:  # a plain folder, or nothing
        return None
    path = Path(os.path.normpath(folder.parent / target))
    if path.parent.name != "current" or SETS_FOLDER not in path.parts:
        return None
    return path.parent.parent, path.name


class TableSetPins:
    """Pins the table sets one read goes through: each set's `current` is resolved once, and that version is
    held (a shared lock) until `release`, so every table read through the pins comes from one import and no
    writer removes it meanwhile. Folders that are not in a set are read where they are."""

    def __init__(self) -> None:
        self._versions: dict[Path, tuple[Path, int | None]] = {}

    def folder(self, folder: str | Path) -> Path:
        """Where to read the artifact folder `folder` (`<root>/<asset>/<dataset>`) from: its pinned version."""
        folder = Path(folder)
        found = _set_of_link(folder)
        if found is None:
            return folder
        set_dir, asset = found
        if set_dir not in self._versions:
            pinned = _pin_current(set_dir)
            if pinned is None:
                return folder
            self._versions[set_dir] = pinned
        return self._versions[set_dir][0] / asset

    def release(self) -> None:
        for _, fd in self._versions.values():
            if fd is not None:
                os.close(fd)
        self._versions.clear()

    def __enter__(self) -> TableSetPins:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit `os` may be gone; the fds go with the process
            self.release()


def write_table_set(root: str | Path, step: str, dataset: str,
                    tables: Mapping[str, Mapping[str, pl.DataFrame | Path]]) -> dict[str, dict[str, Path]]:
    """Write the tables of several artifacts as one set; returns {asset: {table: path}}.

    A table given as the Path of a stored Parquet file (another artifact's table, carried along) is hard-linked
    (copied across file systems): the same bytes, no rewrite.

    `tables` maps each asset to its tables ({"documents": {"data": frame}, ...}); readers keep using
    `<root>/<asset>/<dataset>/<table>.parquet`. Each `<root>/<asset>/<dataset>` is a link to
    `<root>/.sets/<step>/<dataset>/current/<asset>` and `current` a link to a version folder: the new version is
    written whole, then `current` switches to it with one rename, so a killed write leaves the previous set intact.
    A reader that pins the set (`TableSetPins`) reads every table from one version, never documents of one import
    with labels of another. Writers of one set take turns (a lock in its folder); each keeps the previous version
    (a reader may have just resolved it) and removes older ones no reader holds.
    The tables of an asset are the whole artifact: a table not given is gone in the new set.
    """
    root = Path(root)
    set_dir = root / SETS_FOLDER / step / dataset
    set_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(set_dir / WRITER_LOCK):
        for orphan in set_dir.glob(".*.tmp"):  # a killed write's version folder or link
            try:
                if time.time() - orphan.lstat().st_mtime < ORPHAN_AGE_S:
                    continue
            except FileNotFoundError:
                continue
            if orphan.is_dir() and not orphan.is_symlink():
                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)
        assets = list(tables)
        _adopt_artifact_folders(root, set_dir, dataset, assets)
        previous = _current_version(set_dir / "current")
        version = f"v-{uuid.uuid4().hex}"
        tmp = set_dir / f".{version}.tmp"
        tmp.mkdir()
        paths: dict[str, dict[str, Path]] = {}
        try:
            (tmp / VERSION_LOCK).touch()
            for asset, frames in tables.items():
                (tmp / asset).mkdir()
                for table, frame in frames.items():
                    if isinstance(frame, (str, Path)):  # a stored table carried along: linked, not rewritten
                        _link_or_copy(str(frame), str(tmp / asset / f"{table}.parquet"))
                    else:
                        frame.write_parquet(tmp / asset / f"{table}.parquet")
                    paths.setdefault(asset, {})[table] = root / asset / dataset / f"{table}.parquet"
            os.replace(tmp, set_dir / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _switch_link(set_dir / "current", version)
        _prune_versions(set_dir, {version, previous} - {None})
    return paths
