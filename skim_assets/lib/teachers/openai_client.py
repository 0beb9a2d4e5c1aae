"""`OpenAIChatTeacher`: a client for any OpenAI-compatible `/chat/completions` endpoint (OpenAI, Azure, a local
`vllm serve`), with retries, the response cache, cost accounting and a budget."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .cache import CACHE_FORMAT_VERSION, ResponseCache, cache_key
from .protocol import ProgressFn, TeacherRequest, TeacherResponse, _messages_text, _Progress, estimate_tokens

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx


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
        self._cache = ResponseCache(self.cache_dir) if self.cache_dir is not None else None
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
