"""Mid-training checkpoints: what a killed, retried or re-run training step resumes from.

A training loop (LoRA SFT, the dual encoder) saves its whole state every `checkpoint_every_steps` optimizer steps
into `<checkpoint_dir>/checkpoint.pt`: the trainable weights, optimizer and scheduler state, every random number
generator it draws from (torch, numpy, python and the loop's own numpy `Generator`s), its position (epoch, batch,
step) and its history (loss curve, early-stopping state). The file is written to a temporary sibling and renamed
into place (`storage.atomic_file`), so a kill during a write leaves the previous checkpoint whole.

Each checkpoint carries a fingerprint of what the run computes: its settings (those that change the numbers,
`fingerprint_settings`), its training data as the loop sees it (token ids, texts, indices) and its starting model
(`module_digest`). A run resumes only from a checkpoint with its own fingerprint, and then continues exactly: a
resumed run ends with the same weights and loss curve as an uninterrupted one. A checkpoint of another run
(changed settings, data or model) is discarded with a log line. A finished run removes its checkpoint: the
trained model is the artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .settings import Settings
from .storage import atomic_file, clean_orphans

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1  # bumped when what a checkpoint holds changes: an older one is then stale
# settings that change nothing a run computes: a checkpoint stays valid when only these differ
NEUTRAL_SETTINGS = ("checkpoint_every_steps", "log_every_s")
ORPHAN_AGE_S = 60.0  # a temporary checkpoint untouched this long belongs to a killed write (a live one grows)
DIGEST_SAMPLES = 256  # values read per tensor by `module_digest`


def fingerprint_settings(settings: Settings) -> dict:
    """The settings that decide what a run computes (`NEUTRAL_SETTINGS` left out)."""
    return {k: v for k, v in settings.as_dict().items() if k not in NEUTRAL_SETTINGS}


class Digest:
    """A sha256 over a run's identity, fed piece by piece: settings (JSON), texts, arrays."""

    def __init__(self, kind: str):
        self._hash = hashlib.sha256(f"{kind}:{FORMAT}".encode())

    def _mark(self, tag: str) -> None:
        self._hash.update(b"\x1e" + tag.encode() + b"\x1f")

    def json(self, value: Any) -> Digest:
        self._mark("json")
        self._hash.update(json.dumps(value, sort_keys=True, default=str).encode())
        return self

    def texts(self, texts: Iterable[str | None]) -> Digest:
        self._mark("texts")
        for text in texts:
            self._hash.update(b"\x00" if text is None else text.encode("utf-8", "surrogatepass") + b"\x01")
        return self

    def array(self, array: np.ndarray | None) -> Digest:
        self._mark("array")
        if array is not None:
            array = np.ascontiguousarray(array)
            self._hash.update(f"{array.dtype.str}{array.shape}".encode())
            self._hash.update(array.tobytes())
        return self

    def arrays(self, arrays: Iterable[Iterable[int]]) -> Digest:
        """Ragged integer rows (token ids, index sets), each with its length."""
        self._mark("arrays")
        for row in arrays:
            row = np.asarray(list(row), dtype=np.int64)
            self._hash.update(len(row).to_bytes(8, "little") + row.tobytes())
        return self

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@torch.no_grad()
def module_digest(module: torch.nn.Module, samples: int = DIGEST_SAMPLES) -> str:
    """The identity of a model's weights, cheaply: every tensor's name, shape and dtype and `samples` of its values
    at evenly spaced positions (a different model or a fine-tuned one differs there; reading 540 MB whole for a
    135M model would cost seconds at every start)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        if flat.numel() > samples:  # integer positions: float32 steps overshoot the last index of a large tensor
            positions = torch.arange(samples, dtype=torch.int64) * (flat.numel() - 1) // (samples - 1)
            flat = flat[positions.to(flat.device)]
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(flat.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def rng_states() -> dict:
    """The global random number generators' states: torch (CPU and every CUDA device), numpy, python."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "python": random.getstate(),
    }


def restore_rng_states(states: dict) -> None:
    """Set the global generators back to `rng_states()`'s result."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(states["python"])


def ragged_to_tensors(rows: list[np.ndarray]) -> dict:
    """Integer rows of different lengths (e.g. mined negatives per query) as two tensors, not one file each."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    flat = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    return {"values": torch.from_numpy(flat), "lengths": torch.from_numpy(lengths)}


def tensors_to_ragged(stored: dict) -> list[np.ndarray]:
    values, lengths = stored["values"].numpy(), stored["lengths"].numpy()
    return [np.array(row, dtype=np.int64) for row in np.split(values, np.cumsum(lengths)[:-1])] if len(lengths) else []


class TrainingCheckpoint:
    """The resumable state of one training run in `<folder>/checkpoint.pt` (nothing is written when `folder` is
    None or `every_steps` is 0).

    `load()` at the start: the saved state when its fingerprint is this run's, else None (a stale or unreadable
    file is removed, with a log line). `due(step)` after each optimizer step, then `save(state)`; `remove()` once
    the trained model is saved. `state` holds tensors and plain Python values only (loaded with
    `weights_only=True`)."""

    def __init__(self, folder: str | Path | None, fingerprint: str, every_steps: int,
                 say: Callable[[str], None], label: str):
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = fingerprint
        self.every_steps = every_steps
        self.say = say
        self.label = label

    @property
    def enabled(self) -> bool:
        return self.folder is not None and self.every_steps > 0

    @property
    def path(self) -> Path | None:
        return self.folder / CHECKPOINT_FILE if self.folder is not None else None

    def load(self) -> dict | None:
        """This run's saved state (on the CPU), or None."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 (an older format, a foreign file: start afresh, say why)
            self.say(f"{self.label}: discarded the unreadable checkpoint {self.path} ({type(error).__name__}: "
                     f"{str(error).splitlines()[0] if str(error) else ''}); training from step 0")
            self.path.unlink(missing_ok=True)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            step = state.get("step", "?") if isinstance(state, dict) else "?"
            self.say(f"{self.label}: discarded a stale checkpoint {self.path} (step {step} of a run with other "
                     "settings, training data or starting model); training from step 0")
            self.path.unlink(missing_ok=True)
            return None
        return state

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every_steps == 0

    def save(self, state: dict) -> None:
        """Write `state` (with the fingerprint and the global generators' states) atomically."""
        with atomic_file(self.path) as tmp:
            torch.save({**state, "fingerprint": self.fingerprint, "format": FORMAT, "rng": rng_states()}, tmp)
        self.say(f"{self.label}: checkpoint at step {state.get('step')} ({self.path})")

    def remove(self) -> None:
        """Remove the checkpoint (and temporary files of killed writes): the run finished."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        clean_orphans(self.path, ORPHAN_AGE_S)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty: nothing else of the step is touched
