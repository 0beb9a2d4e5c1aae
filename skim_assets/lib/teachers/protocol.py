"""The teacher protocol: one request and its response, the `Teacher` interface, and helpers every backend
shares (token estimates, throttled progress messages)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


@dataclass
class TeacherRequest:
    """One prompt: `key` names it in results and logs (e.g. the doc_id)."""

    key: str
    messages: list[dict]
    title: str = ""
    metadata: str = ""
    style: str = "url-queries"  # the prompt style: what an offline teacher writes under which header


@dataclass
class TeacherResponse:
    """The teacher's answer to one request. `text` is None exactly when `error` is set."""

    key: str
    text: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    error: str | None = None
    attempts: int = 0  # HTTP attempts made for this answer (0: cached or offline backend)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@runtime_checkable
class Teacher(Protocol):
    """What every teacher offers its callers, so none probes for a hook (`hasattr`, `getattr`).

    A backend subclasses this class and gets the defaults of the optional hooks: `adapt_to_dataset` does nothing
    (a teacher with nothing to learn of the dataset), `stats` is empty (no usage counted) and `batches` is empty
    (no Batch API jobs). It must implement `complete` and set `backend` and `model`.
    """

    backend: str
    model: str
    # What each Batch API job of this instance did (asset metadata); a batching backend sets its own list.
    batches: Sequence[dict] = ()

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        """Answers in the order of `requests`."""
        ...

    def adapt_to_dataset(self, corpus: Sequence[str], reference_queries: Sequence[str] = ()) -> None:
        """Learn what the teacher needs of the dataset before `complete`: the texts it writes from (`corpus`) and
        the dataset's own queries (`reference_queries`). Default: nothing to learn."""
        return None

    @property
    def stats(self) -> dict:
        """Usage totals over this instance's life (e.g. `cost_usd`, `requests_sent`). Default: none counted."""
        return {}


def estimate_tokens(text: str) -> int:
    """A rough token count (~4 characters a token) for when a backend reports none."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _messages_text(messages: Sequence[dict]) -> str:
    parts = []
    for message in messages:
        content = message.get("content", "")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(str(content))
    return "\n".join(parts)


class _Progress:
    """Throttled progress messages: at most one every `every_s` seconds, plus a final one."""

    def __init__(self, fn: ProgressFn | None, label: str, total: int, every_s: float):
        self.fn, self.label, self.total, self.every_s = fn, label, total, every_s
        self.done = self.cached = self.errors = self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd = 0.0
        self.last = time.monotonic()

    def add(self, response: TeacherResponse, cost_usd: float = 0.0) -> None:
        self.done += 1
        self.cached += int(response.cached)
        self.errors += int(response.error is not None)
        if not response.cached:
            self.prompt_tokens += response.prompt_tokens
            self.completion_tokens += response.completion_tokens
        self.cost_usd += cost_usd
        if time.monotonic() - self.last >= self.every_s:
            self.emit()

    def message(self) -> str:
        return (
            f"{self.label}: {self.done}/{self.total} done, {self.cached} cached, {self.errors} errors, "
            f"{self.prompt_tokens}+{self.completion_tokens} tokens, ${self.cost_usd:.4f}"
        )

    def emit(self) -> None:
        self.last = time.monotonic()
        # one or the other: the library logger reaches the run's event log too (managed_python_loggers), so a
        # message also given to the caller's progress function (the step's log) would show twice
        (self.fn or log.info)(self.message())
