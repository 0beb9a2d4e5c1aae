"""Teachers: turn chat messages into text (the teacher demonstrations of SKIM's first stage).

One protocol, three backends:

- `OpenAIChatTeacher`: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, Azure with a deployment
  base URL and an `api-key` header, a local `vllm serve`). Bounded concurrency, retries with exponential
  backoff and jitter (honouring `Retry-After`), a persistent response cache keyed by the prompt hash (a rerun
  never pays twice), token/cost accounting and a budget. The API key never leaves the request headers.
- `KeyphraseTeacher`: offline and deterministic; KeyBERT-style keyphrases from the document's metadata
  (cosine to the document embedding, Maximal Marginal Relevance), or YAKE-style statistics without an encoder.
- `LocalHFTeacher`: any local Hugging Face causal LM with a chat template, batched sampling with `generate`.

Every backend answers with the teacher output format (a `Queries:` header then one query per line for the
keyphrase teacher; whatever the model wrote for the others). Parsing is the caller's business
(`skim_assets.lib.parsing`). No Dagster here.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

log = logging.getLogger(__name__)

try:  # the output header shared with the prompts; the literal is the documented format
    from skim_assets.lib.prompts import QUERIES_HEADER
except ImportError:  # pragma: no cover - only while prompts.py is absent
    QUERIES_HEADER = "Queries:"

ProgressFn = Callable[[str], None]
CACHE_FORMAT_VERSION = 1
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx


# --------------------------------------------------------------------------------------------------------------
# The protocol


@dataclass
class TeacherRequest:
    """One prompt: `key` names it in results and logs (e.g. the doc_id)."""

    key: str
    messages: list[dict]
    title: str = ""
    metadata: str = ""


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
    backend: str
    model: str

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        """Answers in the order of `requests`."""
        ...


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
        message = self.message()
        log.info(message)
        if self.fn is not None:
            self.fn(message)


# --------------------------------------------------------------------------------------------------------------
# OpenAI-compatible chat endpoint


def cache_key(model: str, messages: Sequence[dict], temperature: float, max_tokens: int) -> str:
    """sha256 of the canonical JSON of what determines an answer."""
    canonical = json.dumps(
        {"model": model, "messages": list(messages), "temperature": float(temperature), "max_tokens": int(max_tokens)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _chat_completions_url(base_url: str) -> str:
    """`{base_url}/chat/completions`, keeping any query string (Azure's `?api-version=...`)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class _ResponseCache:
    """One JSON file per cache key under `root/<key[:2]>/<key>.json`, written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable teacher cache entry %s: %s", path, exc)
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, ensure_ascii=False, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json"))


class OpenAIChatTeacher:
    """A client for an OpenAI-compatible chat endpoint, safe to rerun: answers are cached by prompt hash.

    `base_url` is the API root (`http://127.0.0.1:8000/v1`, `https://api.openai.com/v1`, or an Azure deployment
    URL such as `https://<res>.openai.azure.com/openai/deployments/<dep>?api-version=...` with
    `extra_headers={"api-key": ...}`). Failed requests come back with `error` set and `text` None; the run goes
    on and the caller decides what to do with them. 429, 408/409/425, 5xx, timeouts and connection errors are
    retried `max_retries` times (exponential backoff from `backoff_s` plus up to 25% jitter, or the server's
    `Retry-After`, both capped at `max_backoff_s`); other 4xx and malformed bodies are not. Costs and the budget
    are per instance (all `complete` calls); requests already in flight when the budget runs out still land.
    """

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 0.8,
        max_tokens: int = 200,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        concurrency: int = 4,
        cache_dir: str | Path | None = None,
        budget_usd: float | None = None,
        usd_per_1k_prompt_tokens: float = 0.0,
        usd_per_1k_completion_tokens: float = 0.0,
        extra_headers: dict | None = None,
        progress_every_s: float = 5.0,
        seed: int | None = None,
    ):
        if not base_url:
            raise ValueError("base_url is required (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ValueError("model is required")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url
        self.url = _chat_completions_url(base_url)
        self.model = model
        self._api_key = api_key or None
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.concurrency = int(concurrency)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = _ResponseCache(self.cache_dir) if self.cache_dir is not None else None
        self.budget_usd = budget_usd
        self.usd_per_1k_prompt_tokens = float(usd_per_1k_prompt_tokens)
        self.usd_per_1k_completion_tokens = float(usd_per_1k_completion_tokens)
        self._extra_headers = dict(extra_headers or {})
        self.progress_every_s = float(progress_every_s)
        # Secrets to scrub from anything we print: the key and every extra header value (e.g. Azure's api-key).
        self._secrets = sorted(
            {s for s in [self._api_key, *map(str, self._extra_headers.values())] if s and len(s) >= 4},
            key=len,
            reverse=True,
        )
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stats: dict[str, float] = dict(
            requests_sent=0, http_attempts=0, retries=0, cache_hits=0, errors=0, budget_refusals=0,
            prompt_tokens=0, completion_tokens=0, cost_usd=0.0,
        )

    # -- presentation (never the key) --------------------------------------------------------------------------

    def __repr__(self) -> str:
        headers = sorted(self._extra_headers)
        return (
            f"OpenAIChatTeacher(base_url={self._redact(self.base_url)!r}, model={self.model!r}, "
            f"api_key={'***' if self._api_key else None}, extra_headers={headers}, temperature={self.temperature}, "
            f"max_tokens={self.max_tokens}, concurrency={self.concurrency}, cache_dir={str(self.cache_dir)!r}, "
            f"budget_usd={self.budget_usd})"
        )

    __str__ = __repr__

    def describe(self) -> dict:
        """Settings for asset metadata (no secrets)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "base_url": self._redact(self.base_url),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "concurrency": self.concurrency,
            "max_retries": self.max_retries,
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
            "budget_usd": self.budget_usd,
            "usd_per_1k_prompt_tokens": self.usd_per_1k_prompt_tokens,
            "usd_per_1k_completion_tokens": self.usd_per_1k_completion_tokens,
        }

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @property
    def stats(self) -> dict:
        """Totals over this instance's life: requests_sent (prompts that went to the network), http_attempts,
        retries, cache_hits, errors, budget_refusals, prompt/completion tokens paid for, cost_usd."""
        with self._lock:
            out = dict(self._stats)
        for name in out:
            if name != "cost_usd":
                out[name] = int(out[name])
        return out

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.usd_per_1k_prompt_tokens + completion_tokens * self.usd_per_1k_completion_tokens
        ) / 1000.0

    def cache_key(self, messages: Sequence[dict]) -> str:
        return cache_key(self.model, messages, self.temperature, self.max_tokens)

    # -- the work -------------------------------------------------------------------------------------------------

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        requests = list(requests)
        tracker = _Progress(progress, f"teacher {self.backend}:{self.model}", len(requests), self.progress_every_s)
        results: list[TeacherResponse | None] = [None] * len(requests)
        pending: list[int] = []
        for i, request in enumerate(requests):  # cached answers first: no thread, no HTTP, no budget
            hit = self._from_cache(request)
            if hit is None:
                pending.append(i)
            else:
                results[i] = hit
                tracker.add(hit)

        def finish(i: int, response: TeacherResponse) -> None:
            results[i] = response
            paid = response.ok and not response.cached
            tracker.add(response, self.cost_of(response.prompt_tokens, response.completion_tokens) if paid else 0.0)

        if self.concurrency == 1 or len(pending) <= 1:
            for i in pending:
                finish(i, self._safe_complete_one(requests[i]))
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="teacher") as pool:
                futures = {pool.submit(self._safe_complete_one, requests[i]): i for i in pending}
                for future in as_completed(futures):
                    finish(futures[future], future.result())
        tracker.emit()
        return [r for r in results if r is not None]

    def _from_cache(self, request: TeacherRequest) -> TeacherResponse | None:
        if self._cache is None:
            return None
        entry = self._cache.get(self.cache_key(request.messages))
        if entry is None:
            return None
        with self._lock:
            self._stats["cache_hits"] += 1
        return TeacherResponse(
            key=request.key,
            text=entry["text"],
            prompt_tokens=int(entry.get("prompt_tokens", 0)),
            completion_tokens=int(entry.get("completion_tokens", 0)),
            cached=True,
        )

    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        headers.update({str(k): str(v) for k, v in self._extra_headers.items()})
        return headers

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to sleep before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * (2 ** (attempt - 1)), self.max_backoff_s)
        with self._lock:
            jitter = self._rng.uniform(0.0, 0.25 * base)
        return min(base + jitter, self.max_backoff_s)

    def _fail(self, request: TeacherRequest, error: str, attempts: int, quiet: bool = False) -> TeacherResponse:
        error = self._redact(error)
        with self._lock:
            self._stats["errors"] += 1
        log.log(logging.DEBUG if quiet else logging.WARNING, "teacher request %s failed: %s", request.key, error)
        return TeacherResponse(request.key, None, 0, 0, cached=False, error=error, attempts=attempts)

    def _safe_complete_one(self, request: TeacherRequest) -> TeacherResponse:
        """`_complete_one`, but a surprise (say, messages that are not JSON-serialisable) fails only this request."""
        try:
            return self._complete_one(request)
        except Exception as exc:  # noqa: BLE001
            log.debug("teacher request %s raised", request.key, exc_info=True)
            return self._fail(request, f"unexpected error: {type(exc).__name__}: {exc}", 0)

    def _complete_one(self, request: TeacherRequest) -> TeacherResponse:
        import requests

        with self._lock:
            if self.budget_usd is not None and self._stats["cost_usd"] >= self.budget_usd:
                self._stats["budget_refusals"] += 1
                refused, first_refusal = True, self._stats["budget_refusals"] == 1
            else:
                self._stats["requests_sent"] += 1
                refused = False
        if refused:
            if first_refusal:
                log.warning("teacher budget of $%.4f is spent: no more requests are sent", self.budget_usd)
            return self._fail(request, f"budget exhausted (${self.budget_usd:.4f} spent or more)", 0, quiet=True)

        body = {
            "model": self.model,
            "messages": request.messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        total_attempts = self.max_retries + 1
        last_problem, last_snippet = "no attempt", ""
        for attempt in range(1, total_attempts + 1):
            with self._lock:
                self._stats["http_attempts"] += 1
                if attempt > 1:
                    self._stats["retries"] += 1
            retry_after = None
            try:
                reply = self._session().post(self.url, json=body, headers=self._headers(), timeout=self.timeout_s)
            except requests.Timeout:
                last_problem = f"timeout ({self.timeout_s:g}s)"
            except requests.ConnectionError as exc:
                last_problem = f"connection error ({type(exc).__name__})"
            except requests.RequestException as exc:  # invalid URL and the like: retrying will not help
                return self._fail(request, f"request failed: {type(exc).__name__}: {exc}", attempt)
            else:
                status = reply.status_code
                if status == 200:
                    return self._success(request, reply, attempt)
                snippet = " ".join(self._redact(reply.text)[:300].split())  # redact, then cut: no key half
                if status in RETRYABLE_STATUS or status >= 500:
                    last_problem = f"HTTP {status}"
                    last_snippet = snippet
                    retry_after = _parse_retry_after(reply.headers.get("Retry-After"))
                else:
                    return self._fail(request, f"HTTP {status}: {snippet}", attempt)
            if attempt < total_attempts:
                delay = self._backoff(attempt, retry_after)
                log.info(
                    "teacher request %s: %s, retry %d/%d in %.2fs",
                    request.key, last_problem, attempt, self.max_retries, delay,
                )
                time.sleep(delay)
        detail = f": {last_snippet}" if last_problem.startswith("HTTP") and last_snippet else ""
        return self._fail(request, f"{last_problem} after {total_attempts} attempts{detail}", total_attempts)

    def _success(self, request: TeacherRequest, reply, attempts: int) -> TeacherResponse:
        try:
            payload = reply.json()
        except ValueError:
            snippet = " ".join(self._redact(reply.text)[:200].split())
            return self._fail(request, f"malformed response: not JSON: {snippet!r}", attempts)
        try:
            content = payload["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
        except (KeyError, IndexError, TypeError) as exc:
            snippet = " ".join(self._redact(json.dumps(payload))[:200].split()) if isinstance(payload, (dict, list)) else ""
            problem = f"malformed response: no choices[0].message.content ({exc}): {snippet}"
            return self._fail(request, problem, attempts)
        content = self._redact(content)  # a key echoed in the answer is never cached or returned
        usage = payload.get("usage") if isinstance(payload, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        estimated = not ("prompt_tokens" in usage and "completion_tokens" in usage)
        prompt_tokens = int(usage.get("prompt_tokens") or 0) or estimate_tokens(_messages_text(request.messages))
        if "completion_tokens" in usage:
            completion_tokens = int(usage.get("completion_tokens") or 0)
        else:
            completion_tokens = estimate_tokens(content)
        cost = self.cost_of(prompt_tokens, completion_tokens)
        with self._lock:
            self._stats["prompt_tokens"] += prompt_tokens
            self._stats["completion_tokens"] += completion_tokens
            self._stats["cost_usd"] += cost
        if self._cache is not None:
            key = self.cache_key(request.messages)
            try:
                self._cache.put(
                    key,
                    {
                        "version": CACHE_FORMAT_VERSION,
                        "cache_key": key,
                        "request_key": request.key,
                        "model": self.model,
                        "temperature": self.temperature,
                        "max_tokens": self.max_tokens,
                        "messages": request.messages,
                        "text": content,
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "usage_estimated": estimated,
                        "cost_usd": cost,
                        "created_unix": time.time(),
                    },
                )
            except OSError as exc:  # a full disk must not lose an answer already paid for in this run
                log.warning("could not cache teacher answer for %s: %s", request.key, exc)
        return TeacherResponse(request.key, content, prompt_tokens, completion_tokens, cached=False, attempts=attempts)


# --------------------------------------------------------------------------------------------------------------
# Offline keyphrase teacher

STOPWORDS = frozenset(
    """
    a about above across after again against all almost along also although always am among an and another any
    anyone anything are around as at be became because been before being below between both but by can cannot
    could did do does doing done down during each either else enough etc even ever every few for from further
    get gets got had has have having he her here hers herself him himself his how however i if in into is it its
    itself just least less like made make makes many may me might more most much must my myself neither no nor
    not now of off often on once one only or other others our ours ourselves out over own per perhaps please
    quite rather really same several she should since so some something such than that the their theirs them
    themselves then there these they this those though through thus to too under until up upon us use used uses
    using very via was we well were what when where whether which while who whom whose why will with within
    without would yet you your yours yourself yourselves
    """.split()
)

_TOKEN = re.compile(r"[^\W_]+(?:['’\-.&+][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?\n]")
# A connector ("containing", "ease", "built") is a word the corpus always continues within its clause: a phrase
# ending on it is a fragment. Judged only where clauses end often enough to tell (punctuated text).
PLACEHOLDER_MIN_SHARE = 0.5  # a word in over half the documents never belongs in a phrase...
PLACEHOLDER_MIN_DOCUMENTS = 50  # ...of a corpus large enough to tell (in a tiny one, half may share a category)
CONNECTOR_MIN_CONTINUED = 0.95
CONNECTOR_MIN_COUNT = 3
PUNCTUATED_MAX_CONTINUED = 0.9
_LEADING_PREPOSITIONS = frozenset({"against", "for", "with", "from", "in", "by", "without", "near", "about", "on"})


def _norm(token: str) -> str:
    """A crude singular form used only to compare phrases for diversity."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"[\d.,'’\-+&]+", token))


def _title_tokens(title: str) -> set[str]:
    return {t.lower() for t in _TOKEN.findall(title or "") if t.lower() not in STOPWORDS}


@dataclass
class _Candidate:
    phrase: str
    tokens: tuple[str, ...]
    content: frozenset[str]  # normalised non-stopword tokens (diversity)
    count: int = 0
    first: int = 0  # index of the first occurrence (token position)
    score: float = 0.0  # YAKE-style: lower is better


@dataclass
class _Analysis:
    candidates: list[_Candidate] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)  # metadata split into encoder-sized pieces


def _analyse(metadata: str, title: str, ngram_range: tuple[int, int]) -> _Analysis:
    """Tokenise, find candidate n-grams inside punctuation-free segments and score them YAKE-style."""
    matches = list(_TOKEN.finditer(metadata or ""))
    if not matches:
        return _Analysis()
    tokens = [m.group(0) for m in matches]
    lower = [t.lower() for t in tokens]
    segment = [0] * len(tokens)
    sentence = [0] * len(tokens)
    sentence_start = [True] * len(tokens)
    seg = sen = 0
    for i in range(1, len(tokens)):
        gap = metadata[matches[i - 1].end() : matches[i].start()]
        if gap.strip():
            seg += 1
        if _SENTENCE_END.search(gap):
            sen += 1
        else:
            sentence_start[i] = False
        segment[i], sentence[i] = seg, sen
    n_sentences = sen + 1

    # Term statistics (YAKE, Campos et al. 2020): casing, position, frequency, relatedness, spread.
    tf: Counter = Counter()
    upper: Counter = Counter()
    positions: dict[str, list[int]] = defaultdict(list)
    left: dict[str, list[str]] = defaultdict(list)
    right: dict[str, list[str]] = defaultdict(list)
    for i, (token, low) in enumerate(zip(tokens, lower)):
        if low in STOPWORDS or _is_number(low):
            continue
        tf[low] += 1
        if (token[:1].isupper() and not sentence_start[i]) or (len(token) > 1 and token.isupper()):
            upper[low] += 1
        positions[low].append(sentence[i])
        if i > 0 and segment[i - 1] == segment[i]:
            left[low].append(lower[i - 1])
        if i + 1 < len(tokens) and segment[i + 1] == segment[i]:
            right[low].append(lower[i + 1])
    if not tf:
        return _Analysis(chunks=_chunks(tokens, sentence))
    counts = np.array(list(tf.values()), dtype=np.float64)
    mean_tf, std_tf, max_tf = counts.mean(), counts.std(), counts.max()
    term_score: dict[str, float] = {}
    for term, count in tf.items():
        casing = upper[term] / (1.0 + math.log(count))
        position = math.log(math.log(3.0 + float(np.median(positions[term]))))
        frequency = count / (mean_tf + std_tf)
        wl = len(set(left[term])) / len(left[term]) if left[term] else 0.0
        wr = len(set(right[term])) / len(right[term]) if right[term] else 0.0
        related = 1.0 + (wl + wr) * count / max_tf
        spread = len(set(positions[term])) / n_sentences
        term_score[term] = (related * position) / (casing + frequency / related + spread / related)

    # Candidate n-grams: within one segment, no stopword at either end, no numbers, no title token.
    banned = _title_tokens(title)
    lo, hi = ngram_range
    found: dict[tuple[str, ...], _Candidate] = {}
    for start in range(len(tokens)):
        for n in range(lo, hi + 1):
            end = start + n
            if end > len(tokens) or segment[end - 1] != segment[start]:
                break
            gram = tuple(lower[start:end])
            # no stop word at the end; at the start only a preposition that makes a query of a lone fact
            # ("against migraine", "from vellamo labs")
            if gram[-1] in STOPWORDS or (gram[0] in STOPWORDS and (n < 2 or gram[0] not in _LEADING_PREPOSITIONS)):
                continue
            if any(_is_number(t) or t in banned for t in gram):
                continue
            if any(len(t) < 2 for t in gram if t not in STOPWORDS):
                continue
            cand = found.get(gram)
            if cand is None:
                content = frozenset(_norm(t) for t in gram if t not in STOPWORDS)
                cand = found[gram] = _Candidate(" ".join(gram), gram, content, first=start)
            cand.count += 1
    candidates = list(found.values())
    for cand in candidates:
        scores = [term_score[t] for t in cand.tokens if t in term_score]
        product = float(np.prod(scores)) if scores else 1.0
        cand.score = product / (cand.count * (1.0 + sum(scores)))
    candidates.sort(key=lambda c: (c.score, c.first, c.phrase))
    return _Analysis(candidates=candidates, chunks=_chunks(tokens, sentence))


def _chunks(tokens: list[str], sentence: list[int], max_words: int = 24) -> list[str]:
    """Sentences (split further at `max_words`) so a short-context encoder sees the whole document."""
    out: list[str] = []
    current: list[str] = []
    for i, token in enumerate(tokens):
        if current and (sentence[i] != sentence[i - 1] or len(current) >= max_words):
            out.append(" ".join(current))
            current = []
        current.append(token)
    if current:
        out.append(" ".join(current))
    return out


def _mmr(
    candidates: list[_Candidate], relevance: np.ndarray, similarity: np.ndarray, k: int, diversity: float
) -> list[int]:
    """Maximal Marginal Relevance: argmax (1 - d) * rel - d * max sim to selected; candidates with the same
    content tokens as a selected one are skipped (they would be the same query)."""
    selected: list[int] = []
    available = list(range(len(candidates)))
    while available and len(selected) < k:
        if selected:
            penalty = similarity[np.ix_(available, selected)].max(axis=1)
        else:
            penalty = np.zeros(len(available))
        scores = (1.0 - diversity) * relevance[available] - diversity * penalty
        best = available[int(np.argmax(scores))]  # argmax: first of ties, and candidates are in a stable order
        selected.append(best)
        chosen = candidates[best].content
        available = [
            i
            for i in available
            if i != best and candidates[i].content != chosen
        ]
    return selected


def _connectors(corpus: Sequence[str]) -> frozenset[str]:
    """Words that (nearly) always continue within their clause, in a corpus whose clauses end often enough."""
    seen: Counter = Counter()
    continued: Counter = Counter()
    for text in corpus:
        text = text or ""
        matches = list(_TOKEN.finditer(text))
        for i, match in enumerate(matches):
            token = match.group(0).lower()
            seen[token] += 1
            if i + 1 < len(matches) and not text[match.end() : matches[i + 1].start()].strip():
                continued[token] += 1
    total = sum(seen.values())
    if not total or sum(continued.values()) / total > PUNCTUATED_MAX_CONTINUED:
        return frozenset()  # unpunctuated text (e.g. preprocessed corpora): every word continues
    return frozenset(t for t, n in seen.items()
                     if n >= CONNECTOR_MIN_COUNT and continued[t] / n >= CONNECTOR_MIN_CONTINUED and t not in STOPWORDS)


def _encoder_name(encoder: Any) -> str:
    """The encoder's folder name (its parent's too when the folder is just `model`, as in the bundled MiniLM)."""
    path = getattr(encoder, "path", None)
    if not path:
        return type(encoder).__name__
    path = Path(str(path))
    if path.name.lower() in {"model", "models", "snapshot"} and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def format_queries(queries: Sequence[str]) -> str:
    """The teacher output format: the header, then one query per line."""
    return "\n".join([QUERIES_HEADER, *queries])


class KeyphraseTeacher:
    """Offline teacher: up to `max_queries` diverse, query-like phrases from each request's `metadata`.

    Candidates are n-grams of the metadata (`ngram_range` words, no stop word at either end, no number, no title
    token: the student must learn knowledge that the title does not carry). After `adapt_to_dataset`:

    - *boilerplate* is dropped: a candidate whose content words occur together in more than
      `max_document_frequency` of the corpus's documents ("available in three sizes", "key ingredient") says
      nothing about one document;
    - candidates are scored by how close they sit to the dataset's own train queries (`query_affinity` weight),
      as the paper's LLM prompt shows the teacher real queries: the phrases a user of *this* dataset would type
      rank first ("taken for migraine" next to "remedy for migraine"; a study's "basis analysis yielded" last).

    With an `encoder` (an object with `.encode(list[str]) -> unit-norm rows`, e.g. `TextEncoder`), KeyBERT-style:
    the `candidates` best n-grams by YAKE-style statistics are ranked by cosine to the document embedding (mean
    of its sentence embeddings), blended with the train-query affinity, and picked with MMR over their embedding
    similarities. Without an encoder, YAKE-style statistics alone, with MMR over token-overlap (Jaccard)
    similarity. Deterministic either way.
    """

    backend = "keyphrase"

    def __init__(
        self,
        encoder: Any = None,
        max_queries: int = 10,
        ngram_range: tuple[int, int] = (2, 5),
        diversity: float = 0.5,
        candidates: int = 60,
        max_document_frequency: float = 0.1,
        query_affinity: float = 0.5,
        batch_docs: int = 64,
        progress_every_s: float = 5.0,
    ):
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must satisfy 1 <= min <= max, got {ngram_range}")
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {diversity}")
        if not 0.0 <= query_affinity <= 1.0:
            raise ValueError(f"query_affinity must be in [0, 1], got {query_affinity}")
        if not 0.0 < max_document_frequency <= 1.0:
            raise ValueError(f"max_document_frequency must be in (0, 1], got {max_document_frequency}")
        self.encoder = encoder
        self.max_queries = int(max_queries)
        self.ngram_range = (int(lo), int(hi))
        self.diversity = float(diversity)
        self.candidates = int(candidates)
        self.max_document_frequency = float(max_document_frequency)
        self.query_affinity = float(query_affinity)
        self.batch_docs = max(1, int(batch_docs))
        self.progress_every_s = float(progress_every_s)
        self.postings: dict[str, set[int]] = {}
        self.corpus_size = 0
        self.connectors: frozenset[str] = frozenset()
        self.reference_vectors: np.ndarray | None = None
        self.model = "yake-mmr" if encoder is None else f"keybert-mmr:{_encoder_name(encoder)}"

    def __repr__(self) -> str:
        return (
            f"KeyphraseTeacher(model={self.model!r}, max_queries={self.max_queries}, ngram_range={self.ngram_range}, "
            f"diversity={self.diversity}, candidates={self.candidates})"
        )

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "model": self.model,
            "max_queries": self.max_queries,
            "ngram_range": list(self.ngram_range),
            "diversity": self.diversity,
            "candidates": self.candidates,
            "max_document_frequency": self.max_document_frequency,
            "query_affinity": self.query_affinity,
            "corpus_documents": self.corpus_size,
            "connector_words": len(self.connectors),
            "reference_queries": 0 if self.reference_vectors is None else len(self.reference_vectors),
        }

    def adapt_to_dataset(self, corpus: Sequence[str], reference_queries: Sequence[str] = ()) -> None:
        """Index the corpus's words (to tell boilerplate phrases by their document frequency) and, with an
        encoder, embed the dataset's train queries that candidates are scored against."""
        postings: dict[str, set[int]] = defaultdict(set)
        for doc, text in enumerate(corpus):
            for token in {t.lower() for t in _TOKEN.findall(text or "")}:
                if token not in STOPWORDS:
                    postings[token].add(doc)
        self.postings = dict(postings)
        self.corpus_size = len(corpus)
        self.connectors = _connectors(corpus)
        texts = sorted({" ".join(str(q).split()) for q in reference_queries if str(q).strip()})
        if self.encoder is not None and texts:
            self.reference_vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)

    def document_frequency(self, phrase_tokens: Sequence[str]) -> int:
        """Documents of the adapted corpus holding every content word of the phrase (0 before adapting)."""
        content = sorted({t for t in phrase_tokens if t not in STOPWORDS},
                         key=lambda t: len(self.postings.get(t, ())))
        if not content or not self.corpus_size:
            return 0
        docs = set(self.postings.get(content[0], ()))
        for token in content[1:]:
            docs &= self.postings.get(token, set())
            if not docs:
                break
        return len(docs)

    def keyphrases(self, metadata: str, title: str = "") -> list[str]:
        """The phrases for one document (what `complete` formats)."""
        return self._select_batch([(metadata, title)])[0]

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        requests = list(requests)
        tracker = _Progress(progress, f"teacher {self.backend}:{self.model}", len(requests), self.progress_every_s)
        out: list[TeacherResponse] = []
        for start in range(0, len(requests), self.batch_docs):
            batch = requests[start : start + self.batch_docs]
            phrases = self._select_batch([(r.metadata, r.title) for r in batch])
            for request, chosen in zip(batch, phrases):
                text = format_queries(chosen)
                response = TeacherResponse(
                    key=request.key,
                    text=text,
                    prompt_tokens=estimate_tokens(request.metadata),
                    completion_tokens=estimate_tokens(text),
                    cached=False,
                )
                out.append(response)
                tracker.add(response)
        tracker.emit()
        return out

    def _informative(self, candidate: _Candidate) -> bool:
        """Not boilerplate: its content words occur together in at most `max_document_frequency` of the corpus
        (a phrase such as "available in three sizes" or "key ingredient" says nothing about one document), and it
        does not end on a connector ("spray containing" is a fragment, not a query)."""
        if not any(t not in STOPWORDS for t in candidate.tokens):
            return False
        if candidate.tokens[-1] in self.connectors:
            return False
        if self.corpus_size >= PLACEHOLDER_MIN_DOCUMENTS and any(
                len(self.postings.get(t, ())) > PLACEHOLDER_MIN_SHARE * self.corpus_size
                                    for t in candidate.tokens if t not in STOPWORDS):
            return False  # a word in most documents is a placeholder ("num" in preprocessed corpora), not content
        df = self.document_frequency(candidate.tokens)
        return df < 3 or df <= self.max_document_frequency * self.corpus_size

    def _select_batch(self, docs: list[tuple[str, str]]) -> list[list[str]]:
        analyses = [_analyse(metadata, title, self.ngram_range) for metadata, title in docs]
        for analysis in analyses:
            analysis.candidates = [c for c in analysis.candidates if self._informative(c)][: self.candidates]
        if self.encoder is None:
            return [self._select_statistical(a) for a in analyses]
        # One encode call for every distinct text of the batch: candidates and document chunks.
        texts = sorted({t for a in analyses for t in [*(c.phrase for c in a.candidates), *a.chunks]})
        index = {t: i for i, t in enumerate(texts)}
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32) if texts else np.zeros((0, 1), np.float32)
        affinity = None
        if self.reference_vectors is not None and len(texts):
            affinity = np.zeros(len(texts), dtype=np.float64)
            for start in range(0, len(texts), 1024):  # bounded memory for large query sets
                block = vectors[start : start + 1024] @ self.reference_vectors.T
                affinity[start : start + 1024] = block.max(axis=1)
        return [self._select_embedded(a, vectors, index, affinity) for a in analyses]

    def _select_statistical(self, analysis: _Analysis) -> list[str]:
        cands = analysis.candidates
        if not cands:
            return []
        strength = -np.log(np.array([c.score for c in cands], dtype=np.float64) + 1e-12)
        spread = strength.max() - strength.min()
        relevance = (strength - strength.min()) / spread if spread > 0 else np.ones(len(cands))
        sets = [frozenset(c.content) for c in cands]
        similarity = np.array(
            [[len(a & b) / len(a | b) if a | b else 0.0 for b in sets] for a in sets], dtype=np.float64
        )
        return [cands[i].phrase for i in _mmr(cands, relevance, similarity, self.max_queries, self.diversity)]

    def _select_embedded(self, analysis: _Analysis, vectors: np.ndarray, index: dict[str, int],
                         affinity: np.ndarray | None) -> list[str]:
        cands = analysis.candidates
        if not cands or not analysis.chunks:
            return []
        doc = vectors[[index[t] for t in analysis.chunks]].mean(axis=0)
        doc = doc / max(float(np.linalg.norm(doc)), 1e-12)
        rows = [index[c.phrase] for c in cands]
        emb = vectors[rows].astype(np.float64)
        relevance = emb @ doc
        if affinity is not None:
            relevance = (1.0 - self.query_affinity) * relevance + self.query_affinity * affinity[rows]
        similarity = emb @ emb.T
        return [cands[i].phrase for i in _mmr(cands, relevance, similarity, self.max_queries, self.diversity)]


# --------------------------------------------------------------------------------------------------------------
# Local Hugging Face chat model


class LocalHFTeacher:
    """Any local HF causal-LM folder with a chat template, sampled in left-padded batches (seeded)."""

    backend = "hf-local"

    def __init__(
        self,
        model_path: str | Path,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 200,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "auto",
        progress_every_s: float = 5.0,
    ):
        self.model_path = Path(model_path)
        self.model = self.model_path.name
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.device = device
        self.progress_every_s = float(progress_every_s)
        self._tokenizer = None
        self._lm = None

    def __repr__(self) -> str:
        return (
            f"LocalHFTeacher(model_path={str(self.model_path)!r}, max_new_tokens={self.max_new_tokens}, "
            f"temperature={self.temperature}, top_k={self.top_k}, batch_size={self.batch_size}, seed={self.seed})"
        )

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "model": self.model,
            "model_path": str(self.model_path),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not (self.model_path / "config.json").exists():
                raise FileNotFoundError(f"{self.model_path} is not a Hugging Face model folder (no config.json)")
            device = torch.device(
                ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
            )
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"{self.model_path} has no chat template; the teacher needs an instruct model")
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype).to(device)
            lm.eval()
            self._tokenizer, self._lm, self._device = tokenizer, lm, device
        return self._tokenizer, self._lm

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        import torch

        requests = list(requests)
        tracker = _Progress(progress, f"teacher {self.backend}:{self.model}", len(requests), self.progress_every_s)
        results: list[TeacherResponse | None] = [None] * len(requests)
        if requests:
            tokenizer, lm = self._load()
            prompts = [
                tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests
            ]
            lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
            order = sorted(range(len(requests)), key=lambda i: (lengths[i], i))  # similar lengths share a batch
            eos_ids = lm.generation_config.eos_token_id
            eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
            eos_ids.add(tokenizer.eos_token_id)
            with torch.random.fork_rng(devices=[self._device] if self._device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    answers = self._generate(
                        tokenizer, lm, [prompts[i] for i in idx], [requests[i] for i in idx], eos_ids
                    )
                    for i, response in zip(idx, answers):
                        results[i] = response
                        tracker.add(response)
        tracker.emit()
        return [r for r in results if r is not None]

    def _generate(
        self, tokenizer, lm, prompts: list[str], requests: list[TeacherRequest], eos_ids: set
    ) -> list[TeacherResponse]:
        import torch

        try:
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
            sampling = self.temperature > 0
            kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=sampling, pad_token_id=tokenizer.pad_token_id)
            if sampling:
                kwargs.update(temperature=self.temperature, top_k=self.top_k)
            with torch.inference_mode():
                generated = lm.generate(**batch, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not lose the others
            log.exception("local teacher batch failed")
            error = f"generation failed: {type(exc).__name__}: {exc}"
            return [TeacherResponse(r.key, None, 0, 0, cached=False, error=error) for r in requests]
        new = generated[:, batch["input_ids"].shape[1] :].cpu().tolist()
        prompt_tokens = batch["attention_mask"].sum(dim=1).cpu().tolist()
        out = []
        for request, ids, n_prompt in zip(requests, new, prompt_tokens):
            n_new = next((j + 1 for j, t in enumerate(ids) if t in eos_ids), len(ids))
            text = tokenizer.decode(ids[:n_new], skip_special_tokens=True)
            out.append(TeacherResponse(request.key, text, int(n_prompt), int(n_new), cached=False))
        return out


# --------------------------------------------------------------------------------------------------------------
# Factory

TEACHER_KINDS = ("openai", "keyphrase", "hf-local")


def build_teacher(kind: str, **settings) -> Teacher:
    """A teacher by kind: "openai" (OpenAIChatTeacher), "keyphrase" (KeyphraseTeacher) or "hf-local"
    (LocalHFTeacher). For "keyphrase", `encoder` may also be a model path, or "default" for the bundled MiniLM."""
    kind = kind.strip().lower()
    if kind in ("openai", "openai-chat", "azure", "vllm-server"):
        return OpenAIChatTeacher(**settings)
    if kind in ("keyphrase", "keybert", "yake"):
        encoder = settings.pop("encoder", None)
        encoder_path = settings.pop("encoder_path", None)
        if isinstance(encoder, (str, Path)):
            encoder_path, encoder = encoder, None
        if encoder is None and encoder_path:
            from skim_assets.lib.encoders import TextEncoder

            encoder = TextEncoder(None if str(encoder_path) == "default" else encoder_path)
        return KeyphraseTeacher(encoder=encoder, **settings)
    if kind in ("hf-local", "hf", "local"):
        return LocalHFTeacher(**settings)
    raise ValueError(f"unknown teacher kind {kind!r}; expected one of {', '.join(TEACHER_KINDS)}")


def describe_teacher(teacher: Teacher) -> dict:
    """Settings of a teacher for asset metadata (never secrets)."""
    describe = getattr(teacher, "describe", None)
    if callable(describe):
        return describe()
    return {"backend": teacher.backend, "model": teacher.model}
