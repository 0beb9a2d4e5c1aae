"""Helpers shared by the benchmark scripts: peak-memory measurement, Markdown tables, synthetic vectors, paths.

Not a benchmark itself. The scripts import it as `benchmarks._common` (run them from the repository root, as
`python benchmarks/<name>.py`; each script puts the repository root on sys.path).
"""

import os
import platform
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_dataset(name: str) -> tuple[Path | None, str]:
    """(folder, '') when ../shared/data/<name> exists, else (None, the reason it is skipped)."""
    folder = SHARED_DATA / name
    if folder.is_dir():
        return folder, ""
    return None, f"{folder} is absent (the shared real datasets are only on development machines)"


def machine_line() -> str:
    """One line describing this machine: CPUs, memory, torch threads, load."""
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:  # pragma: no cover - psutil comes with dagster
        memory = "? GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()} {os.cpu_count()} CPUs, {memory} RAM, Python {platform.python_version()}, "
            f"load avg {load}")


# ------------------------------------------------------------------------------------------------ peak memory


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_high_water_mark() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Give memory that glibc malloc holds but no longer uses back to the OS, so an earlier stage's freed
    blocks do not hide the next stage's growth (other allocators, e.g. polars' jemalloc, keep theirs a while)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def current_rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return psutil.Process().memory_info().rss


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_bytes: int = 0  # peak RSS during the block minus RSS when it started (C allocations included)
    method: str = ""

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


@contextmanager
def measure():
    """Wall time and peak extra resident memory of the block.

    Peak memory is RSS, so numpy/torch/hnswlib C allocations count (tracemalloc would miss them). On Linux the
    kernel's own high-water mark is reset before the block (`/proc/self/clear_refs`) and read after it (exact);
    elsewhere a thread samples RSS every 2 ms with psutil (may miss very short spikes). Memory an allocator kept
    from earlier work can be reused without growing RSS, so the figure is a lower bound of what the block needs.
    """
    result = Measurement()
    _release_free_memory()
    start_rss = current_rss_bytes()
    exact = _reset_high_water_mark() and _status_kib("VmHWM") is not None
    stop = threading.Event()
    sampled = [start_rss]
    sampler = None
    if not exact:
        def sample():
            while not stop.is_set():
                sampled[0] = max(sampled[0], current_rss_bytes())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        if exact:
            peak = _status_kib("VmHWM") * 1024
            result.method = "VmHWM"
        else:
            stop.set()
            sampler.join()
            peak = max(sampled[0], current_rss_bytes())
            result.method = "RSS sampling"
        result.peak_bytes = max(0, peak - start_rss)


# ------------------------------------------------------------------------------------------------ tables


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column, 'l' or 'r' (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 2) -> str:
    """Numbers for tables: thousands separators for big ones, `digits` decimals for small ones."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------ vectors


class ClusteredSpace:
    """Unit vectors with cluster structure, so nearest neighbours (and recall) mean something.

    A Gaussian mixture shaped like sentence embeddings: cluster centers lie in a `center_dim`-dimensional
    subspace of the `dim`-dimensional space (topics relate to each other, so an HNSW graph can route between
    them), each point is `center + spread * A z` with `z ~ N(0, I_latent)` and a random map `A` shared by all
    clusters, plus isotropic noise of total norm `noise`; then normalised. Real sentence embeddings also have a
    low intrinsic dimension (tens, not 384). With the defaults a query's nearest item has median cosine ~0.79
    and its 10th ~0.67 at 100K items, close to MiniLM on real text; pure isotropic noise in 384 dimensions
    (every neighbour nearly equidistant) or centers at random in all 384 dimensions (no path between clusters)
    are worst cases that no index handles and no real data shows.
    Queries and items drawn from one space (with different seeds) share its centers and map.
    """

    def __init__(self, dim: int = 384, n_clusters: int = 1000, center_dim: int = 64, latent_dim: int = 16,
                 spread: float = 0.25, noise: float = 0.2, seed: int = 0):
        rng = np.random.default_rng(seed)
        project = (rng.standard_normal((center_dim, dim)) / np.sqrt(dim)).astype(np.float32)
        centers = rng.standard_normal((n_clusters, center_dim)).astype(np.float32) @ project
        self.centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
        self.basis = (rng.standard_normal((latent_dim, dim)) / np.sqrt(dim)).astype(np.float32)  # rows of norm ~1
        self.spread, self.noise, self.dim = spread, noise, dim

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            block = self.centers[rng.integers(len(self.centers), size=m)]
            block += (rng.standard_normal((m, self.basis.shape[0]), dtype=np.float32) * self.spread) @ self.basis
            block += rng.standard_normal((m, self.dim), dtype=np.float32) * (self.noise / np.sqrt(self.dim))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + m] = block
        return out


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean |approx_i ∩ exact_i| / k over rows (k = exact.shape[1])."""
    k = exact.shape[1]
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / (k * len(exact)) if len(exact) else float("nan")


def unbiased_head_scorer(root: str | Path, dataset: str):
    """(storage, score(pairs, seed)): a one-vs-all head over the pretrained features of a dataset already run
    through the pipeline, trained on `pairs` and scored on its unbiased test set, as the sweeps score a point."""
    from skim_assets.assets.sweeps import frozen_features
    from skim_assets.lib.ova_head import OvaHeadConfig
    from skim_assets.lib.sweeps import score_training_pairs
    from skim_assets.resources import EncoderResource, StorageResource, Tables, TrainingView

    storage = StorageResource(root=str(Path(root)))
    read = lambda asset: storage.read_table(asset, dataset)  # noqa: E731
    view = TrainingView(Tables(folder=storage.artifact_dir("train_pairs", dataset)))  # every query, click-log ones too
    features = frozen_features(storage, EncoderResource(device="cpu"), dataset, view.queries, read("documents"))
    test = read("unbiased_test_qrels")

    def score(pairs, seed):
        started = time.monotonic()
        scores = score_training_pairs(pairs, features, test, OvaHeadConfig(seed=seed))
        print(f"  head on {pairs.height} pairs: {time.monotonic() - started:.0f}s", flush=True)
        return scores

    return storage, score
