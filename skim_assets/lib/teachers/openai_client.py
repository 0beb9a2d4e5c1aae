"""`OpenAIChatTeacher`: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, Azure OpenAI, a local
`vllm serve` or `llama_cpp.server`) through the official `openai` SDK, with our response cache, cost accounting,
budget, concurrency and secret redaction around it."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .batch import BatchMode, TeacherBatchSettings
from .cache import CACHE_FORMAT_VERSION, ResponseCache, cache_key
from .protocol import ProgressFn, Teacher, TeacherRequest, TeacherResponse, _messages_text, _Progress, estimate_tokens
from .transport import deadline_http_client

log = logging.getLogger(__name__)

AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
# The SDK refuses an empty key; a keyless server (a local vLLM or llama.cpp) gets this placeholder, and the
# Authorization header is then omitted from every request, so the placeholder is never sent.
_NO_KEY = "no-key"
# A run of this many characters of the key is redacted wherever it appears: a server that echoes part of the key
# (its first 20 characters, say) must not leave that part in the cache, the raw table or the logs. Shorter runs
# are common words and fixed prefixes ("sk-proj") and are left alone.
KEY_PART_CHARS = 8
# The longest answer stored (about 5,000 tokens: 25x the default max_tokens). A longer one means the server
# ignored max_tokens; it is refused rather than cut, so that every cached answer is a whole answer.
MAX_ANSWER_CHARS = 20_000


def _split_base_url(base_url: str) -> tuple[str, dict[str, str]]:
    """The API root without a trailing `/chat/completions` or query string, and the query as a dict (Azure's
    `?api-version=...`, or any other query a gateway wants on every request)."""
    parts = urlsplit(base_url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        path = path[: -len("/chat/completions")]
    root = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return root, dict(parse_qsl(parts.query, keep_blank_values=True))


def _retry_count(request) -> int:
    """Retries the SDK had taken when it built `request` (it sends the count in `x-stainless-retry-count`)."""
    try:
        return max(0, int(request.headers.get("x-stainless-retry-count", 0)))
    except (AttributeError, RuntimeError, TypeError, ValueError):  # no request attached, or an odd header
        return 0


def _plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


class OpenAIChatTeacher(BatchMode, Teacher):
    """A client for an OpenAI-compatible chat endpoint, safe to rerun: answers are cached by prompt hash.

    `base_url` is the API root (`http://127.0.0.1:8000/v1`, `https://api.openai.com/v1`). An Azure OpenAI
    endpoint (host `*.openai.azure.com` and the like, an `api_version`, or `?api-version=` in `base_url`) gets the
    SDK's `AzureOpenAI` client, which sends the key as `api-key`: `https://<res>.openai.azure.com` (the model names
    the deployment) or `https://<res>.openai.azure.com/openai/deployments/<dep>?api-version=...`. Azure's
    version-less `/openai/v1` API is a plain OpenAI endpoint. Without `api_key` no Authorization header is sent,
    and the environment's OPENAI_API_KEY is never used.

    The SDK owns the transport: it retries 408, 409, 429, 5xx, timeouts and connection errors `max_retries`
    times with exponential backoff, and honours the server's `Retry-After` (up to 120 s; a longer one is not
    retried). `timeout_s` bounds each attempt as a whole (`transport`), however slowly the answer trickles in.
    Failed requests come back with `error` set and `text` None (an HTTP error names the status, the document and
    the server's redacted reply); the run goes on and the caller decides what to do with them. Token usage that
    is not a count (negative, not a number) makes an answer malformed; an answer over `max_answer_chars` is an
    error and is not stored, though its cost counts. Costs and the budget are per instance (all `complete`
    calls); requests already in flight when the budget runs out still land. The key and any run of
    `KEY_PART_CHARS` of its characters are redacted from answers, errors and logs.

    With `batch=TeacherBatchSettings(batch=True)` the prompts the cache lacks go out as one OpenAI Batch API job
    per `complete` call instead (`batch`: half the price; state in `batch_dir`, default `<cache_dir>/batches/
    default`, so a killed call's rerun resumes the same batch); their answers pass the same checks into the same
    cache, and cost `batch_price_factor` of the prices, budget included.
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
        concurrency: int = 4,
        cache_dir: str | Path | None = None,
        budget_usd: float | None = None,
        usd_per_1k_prompt_tokens: float = 0.0,
        usd_per_1k_completion_tokens: float = 0.0,
        extra_headers: dict | None = None,
        api_version: str | None = None,
        progress_every_s: float = 5.0,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        batch: TeacherBatchSettings | None = None,
        batch_dir: str | Path | None = None,
    ):
        if not base_url:
            raise ValueError("base_url is required (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ValueError("model is required")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        prices = {"usd_per_1k_prompt_tokens": usd_per_1k_prompt_tokens,
                  "usd_per_1k_completion_tokens": usd_per_1k_completion_tokens}
        for name, price in prices.items():
            if not float(price) >= 0:  # a negative price would lower the spend and unlock the budget (NaN too)
                raise ValueError(f"{name} must be >= 0, got {price}")
        self.base_url = base_url
        self.model = model
        self._api_key = api_key or None
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = ResponseCache(self.cache_dir) if self.cache_dir is not None else None
        self.budget_usd = budget_usd
        self.usd_per_1k_prompt_tokens = float(usd_per_1k_prompt_tokens)
        self.usd_per_1k_completion_tokens = float(usd_per_1k_completion_tokens)
        self._extra_headers = {str(k): str(v) for k, v in (extra_headers or {}).items()}
        self.progress_every_s = float(progress_every_s)
        self.max_answer_chars = int(max_answer_chars)
        # Secrets to scrub from anything we print: the key and every extra header value...
        self._secrets = sorted(
            {s for s in [self._api_key, *self._extra_headers.values()] if s and len(s) >= 4},
            key=len,
            reverse=True,
        )
        # ...and any run of KEY_PART_CHARS characters of the key: each place one of its KEY_PART_CHARS-grams starts
        # (a lookahead, so overlapping ones are all found; their union covers every longer part of the key).
        key = self._api_key or ""
        grams = sorted({key[i : i + KEY_PART_CHARS] for i in range(len(key) - KEY_PART_CHARS + 1)})
        self._key_parts = re.compile(f"(?=(?:{'|'.join(map(re.escape, grams))}))") if grams else None
        self._lock = threading.Lock()
        self._stats: dict[str, float] = dict(
            requests_sent=0, http_attempts=0, retries=0, cache_hits=0, errors=0, budget_refusals=0,
            prompt_tokens=0, completion_tokens=0, cost_usd=0.0,
        )
        self._client, self.api_version = self._make_client(api_version)
        self._init_batch(batch, batch_dir, azure_deployment_url=self._azure_deployment_url)

    def _make_client(self, api_version: str | None):
        """One SDK client for all threads (it is thread-safe), and the Azure API version (None: not Azure)."""
        import openai

        root, query = _split_base_url(self.base_url)
        parts = urlsplit(root)
        path = parts.path.rstrip("/")
        host = (parts.hostname or "").lower()
        api_version = api_version or query.pop("api-version", None)
        azure_host = host.endswith(AZURE_HOST_SUFFIXES) and not path.endswith("/openai/v1")
        common = dict(
            max_retries=self.max_retries,
            timeout=self.timeout_s,
            http_client=deadline_http_client(root, self.timeout_s),
            default_headers=self._extra_headers or None,
            default_query=query or None,
        )
        self._request_headers: dict = {}
        self._azure_deployment_url = False
        if not (api_version or azure_host):
            if not self._api_key and "authorization" not in {k.lower() for k in self._extra_headers}:
                self._request_headers = {"Authorization": openai.Omit()}
            return openai.OpenAI(base_url=root, api_key=self._api_key or _NO_KEY, **common), None

        api_version = api_version or os.environ.get("OPENAI_API_VERSION")
        if not api_version:
            raise ValueError(
                f"the Azure OpenAI endpoint {self._redact(root)} needs api_version (or ?api-version=... in base_url)"
            )
        if not self._api_key:
            raise ValueError(f"the Azure OpenAI endpoint {self._redact(root)} needs api_key")
        if re.search(r"/openai/deployments/[^/]+$", path):
            self._azure_deployment_url = True
            client = openai.AzureOpenAI(base_url=root, api_version=api_version, api_key=self._api_key, **common)
        else:  # the resource endpoint: the SDK puts /openai/deployments/<model> in front of each call
            endpoint = urlunsplit((parts.scheme, parts.netloc, path.removesuffix("/openai"), "", ""))
            client = openai.AzureOpenAI(
                azure_endpoint=endpoint, api_version=api_version, api_key=self._api_key, **common
            )
        return client, api_version

    def close(self) -> None:
        """Closes the SDK client's connection pool (the teacher is not usable afterwards)."""
        self._close_batch()
        self._client.close()

    # -- presentation (never the key) --------------------------------------------------------------------------

    def __repr__(self) -> str:
        headers = sorted(self._extra_headers)
        return (
            f"OpenAIChatTeacher(base_url={self._redact(self.base_url)!r}, model={self.model!r}, "
            f"api_key={'***' if self._api_key else None}, extra_headers={headers}, api_version={self.api_version!r}, "
            f"temperature={self.temperature}, max_tokens={self.max_tokens}, concurrency={self.concurrency}, "
            f"cache_dir={str(self.cache_dir)!r}, budget_usd={self.budget_usd})"
        )

    __str__ = __repr__

    def describe(self) -> dict:
        """Settings for asset metadata (no secrets)."""
        return {
            "backend": self.backend,
            "client": type(self._client).__name__,
            "model": self.model,
            "base_url": self._redact(self.base_url),
            "api_version": self.api_version,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "concurrency": self.concurrency,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
            "budget_usd": self.budget_usd,
            "usd_per_1k_prompt_tokens": self.usd_per_1k_prompt_tokens,
            "usd_per_1k_completion_tokens": self.usd_per_1k_completion_tokens,
            **self.batch_settings.as_dict(),
        }

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if self._key_parts is None:
            return text
        spans: list[list[int]] = []  # the key's parts, overlapping grams merged
        for match in self._key_parts.finditer(text):
            start = match.start()
            if spans and start <= spans[-1][1]:
                spans[-1][1] = start + KEY_PART_CHARS
            else:
                spans.append([start, start + KEY_PART_CHARS])
        if not spans:
            return text
        out, done = [], 0
        for start, end in spans:
            out += [text[done:start], "***"]
            done = end
        return "".join(out) + text[done:]

    def _snippet(self, text: str, limit: int) -> str:
        """A server reply for an error message: redacted first, then cut (so no half key survives the cut). Only
        its head is redacted: a reply can be megabytes, and redaction only shortens text."""
        return " ".join(self._redact((text or "")[: 2 * limit])[:limit].split())

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

        def finish(i: int, response: TeacherResponse, cost: float | None = None) -> None:
            results[i] = response
            if cost is None:
                paid = response.ok and not response.cached
                cost = self.cost_of(response.prompt_tokens, response.completion_tokens) if paid else 0.0
            tracker.add(response, cost)

        if self.batch_settings.batch:
            self._complete_by_batch(requests, pending, results, finish, progress)
        elif self.concurrency == 1 or len(pending) <= 1:
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

    def _count_attempts(self, attempts: int) -> None:
        with self._lock:
            self._stats["http_attempts"] += attempts
            self._stats["retries"] += max(0, attempts - 1)

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
            return self._fail(request, f"unexpected error for document {request.key!r}: {type(exc).__name__}: {exc}", 0)

    def _complete_one(self, request: TeacherRequest) -> TeacherResponse:
        import openai

        where = f"for document {request.key!r}"
        try:  # the SDK would send a set as a list: refuse what the cache could not store, before paying for it
            json.dumps(request.messages)
        except (TypeError, ValueError) as exc:
            return self._fail(request, f"invalid request {where}: messages are not JSON ({exc})", 0)
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

        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=request.messages,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                extra_headers=self._request_headers or None,
            )
        except openai.APIStatusError as exc:  # a 4xx, or a retried status that never got better
            attempts = _retry_count(exc.response.request) + 1
            self._count_attempts(attempts)
            tries = f" after {_plural(attempts)}" if attempts > 1 else ""
            detail = self._snippet(exc.response.text, 300)
            return self._fail(request, f"HTTP {exc.status_code}{tries} {where}: {detail}", attempts)
        except openai.APITimeoutError as exc:
            attempts = _retry_count(exc.request) + 1
            self._count_attempts(attempts)
            return self._fail(request, f"timeout ({self.timeout_s:g}s) after {_plural(attempts)} {where}", attempts)
        except openai.APIConnectionError as exc:
            attempts = _retry_count(exc.request) + 1
            self._count_attempts(attempts)
            cause = type(exc.__cause__ or exc).__name__
            return self._fail(request, f"connection error ({cause}) after {_plural(attempts)} {where}", attempts)
        attempts = raw.retries_taken + 1
        self._count_attempts(attempts)
        return self._success(request, raw, attempts, where)

    def _success(self, request: TeacherRequest, raw, attempts: int, where: str) -> TeacherResponse:
        body = raw.http_response.text
        try:
            completion = raw.parse()
        except ValueError:  # the body is not JSON though the content type says so
            completion = None
        if completion is None or isinstance(completion, str):  # the SDK returns a non-JSON body as text
            return self._fail(request, f"malformed response {where}: not JSON: {self._snippet(body, 200)!r}", attempts)
        return self._accept(request, completion, body, attempts, where)

    def _accept(self, request: TeacherRequest, completion, body: str, attempts: int, where: str,
                price_factor: float = 1.0, key: str | None = None, origin: dict | None = None,
                batch_id: str | None = None) -> TeacherResponse:
        """A parsed chat completion (the SDK's, or a batch line's body) checked, counted at `price_factor` of the
        prices, and cached under `key` (default: the request's cache key) with the model and sampling settings of
        `origin` (default: this teacher's)."""
        choices = getattr(completion, "choices", None)
        if not choices:
            return self._fail(request, f"malformed response {where}: no choices: {self._snippet(body, 200)}", attempts)
        choice = choices[0]
        content = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(content, str):
            problem = f"malformed response {where}: no choices[0].message.content: {self._snippet(body, 200)}"
            return self._fail(request, problem, attempts)
        if not content.strip():
            finish = getattr(choice, "finish_reason", None)
            return self._fail(request, f"malformed response {where}: empty content (finish_reason={finish})", attempts)
        usage = getattr(completion, "usage", None)
        reported = {field: getattr(usage, field, None) for field in ("prompt_tokens", "completion_tokens")}
        for field, value in reported.items():  # a negative count would lower the spend and unlock the budget
            if value is not None and (type(value) is not int or value < 0):
                return self._fail(request, f"malformed response {where}: usage.{field} is {value!r}, not a count of "
                                           "tokens", attempts)
        reported_prompt, reported_completion = reported["prompt_tokens"], reported["completion_tokens"]
        estimated = reported_prompt is None or reported_completion is None
        prompt_tokens = reported_prompt or estimate_tokens(_messages_text(request.messages))
        if reported_completion is not None:
            completion_tokens = reported_completion
        else:
            completion_tokens = estimate_tokens(content)
        cost = self.cost_of(prompt_tokens, completion_tokens) * price_factor
        with self._lock:
            self._stats["prompt_tokens"] += prompt_tokens
            self._stats["completion_tokens"] += completion_tokens
            self._stats["cost_usd"] += cost
        if len(content) > self.max_answer_chars:  # paid for (counted above), but neither stored nor returned
            return self._fail(request, f"answer too long {where}: {len(content)} characters, more than "
                                       f"max_answer_chars={self.max_answer_chars}; not stored", attempts)
        content = self._redact(content)  # a key echoed in the answer is never cached or returned
        if self._cache is not None:
            key = key or self.cache_key(request.messages)
            origin = origin or {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}
            try:
                self._cache.put(
                    key,
                    {
                        "version": CACHE_FORMAT_VERSION,
                        "cache_key": key,
                        "request_key": request.key,
                        **origin,
                        "messages": request.messages,
                        "text": content,
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "usage_estimated": estimated,
                        "cost_usd": cost,
                        "created_unix": time.time(),
                        **({"batch_id": batch_id} if batch_id else {}),
                    },
                )
            except OSError as exc:  # a full disk must not lose an answer already paid for in this run
                log.warning("could not cache teacher answer for %s: %s", request.key, exc)
        return TeacherResponse(request.key, content, prompt_tokens, completion_tokens, cached=False, attempts=attempts)
