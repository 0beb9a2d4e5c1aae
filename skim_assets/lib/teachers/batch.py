"""The OpenAI Batch API mode of `OpenAIChatTeacher` (`batch: true`): the prompts of one `complete` call that the
cache lacks go out as one JSONL batch (`POST /files`, `POST /batches`), which is polled (`GET /batches/{id}`)
until it ends; its answers (`GET /files/{id}/content`) go through the same checks and into the same cache as the
synchronous path's, and cost `price_factor` (0.5 at OpenAI) of the per-1K-token prices.

A batch takes minutes to hours, so the step that waits for it may be killed. Its state is a folder the caller gives
(one per step, e.g. `<teacher_cache>/batches/<dataset>`): `input.jsonl` (the file uploaded, written before the
upload) and `state.json` (the input file id, then the batch id, each written atomically as soon as it is known).
A run that finds `state.json` polls that batch instead of submitting another; a batch whose create call failed
after the server made it is found again by its input file (`GET /batches`), never created twice. When a batch
ends, every answer it holds is cached (those of prompts the current run no longer asks for too: they are paid
for), then the state is removed, so the next run submits only what is still missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from pydantic import Field

from ..settings import Settings
from .protocol import ProgressFn, TeacherRequest, TeacherResponse, _messages_text, estimate_tokens

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
INPUT_FILE = "input.jsonl"
STATE_VERSION = 1
TERMINAL = ("completed", "failed", "expired", "cancelled")
# a batch's answers could not be had in full: its answers are cached, then the run fails, naming the batch
FAILED = ("failed", "expired", "cancelled")
SHOWN_ERRORS = 3  # errors of a failed batch named in its message
QUIET_POLL_LOG_S = 300.0  # a poll that changes nothing is logged at most this often


class TeacherBatchSettings(Settings):
    """The OpenAI Batch API mode of the `openai` teacher (fields of the `teacher` resource too)."""

    batch: bool = Field(default=False, description="Send the prompts the cache lacks as one OpenAI Batch API job "
                        "per asset run (half the price at OpenAI; answers within the completion window, often "
                        "minutes) instead of one request each. The step polls the batch, and a rerun of a killed "
                        "step resumes it (state under the teacher cache's batches/ folder).")
    batch_poll_interval_s: float = Field(default=30.0, description="Seconds between two polls of a running batch.")
    batch_completion_window: str = Field(default="24h", description="The batch's completion window ('24h', the "
                                         "one OpenAI accepts).")
    batch_price_factor: float = Field(default=0.5, description="Share of the per-1K-token prices a batch answer "
                                      "costs (OpenAI: 0.5): the cost reported and counted against budget_usd.")
    batch_max_wait_s: float | None = Field(default=None, description="Stop waiting for a batch after this long "
                                           "and fail the step (the batch runs on; the next run resumes it). "
                                           "Unset: wait until it ends.")
    batch_transfer_timeout_s: float = Field(default=600.0, description="Bound on one upload of the input file or "
                                            "download of a result file (timeout_s bounds each other call).")


class BatchFailed(RuntimeError):
    """A batch ended failed, expired or cancelled, or its state cannot be used."""


class BatchPending(RuntimeError):
    """The wait for a batch ran past `batch_max_wait_s`; the batch runs on and the next run resumes it."""


# -- the step's state: a folder of two files ------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BatchState:
    """`state.json` and `input.jsonl` in `folder`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.state_path = self.folder / STATE_FILE
        self.input_path = self.folder / INPUT_FILE

    def load(self) -> dict | None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BatchFailed(f"the teacher's batch state {self.state_path} is unreadable ({exc}); it may name a "
                              "batch still running (see the provider's batch list): delete it to start over") from exc
        if not isinstance(state, dict) or not state.get("input_file_id") or not self.input_path.exists():
            raise BatchFailed(f"the teacher's batch state {self.state_path} is incomplete (no input file id, or no "
                              f"{INPUT_FILE} beside it): delete the folder to start over")
        return state

    def save(self, state: dict) -> None:
        _write_atomic(self.state_path, json.dumps(state, ensure_ascii=False, indent=1).encode("utf-8"))

    def write_input(self, data: bytes) -> None:
        _write_atomic(self.input_path, data)

    def input_lines(self) -> dict[str, dict]:
        """The uploaded lines by custom_id."""
        lines = {}
        with self.input_path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    item = json.loads(line)
                    lines[item["custom_id"]] = item
        return lines

    def clear(self) -> None:
        self.state_path.unlink(missing_ok=True)  # first: without it, a leftover input file is ignored
        self.input_path.unlink(missing_ok=True)


# -- the mode ---------------------------------------------------------------------------------------------------------


class BatchMode:
    """The Batch API half of `OpenAIChatTeacher` (a mixin: it uses the teacher's client, cache, checks, stats and
    redaction). Set up by `_init_batch`."""

    def _init_batch(self, settings: TeacherBatchSettings | None, batch_dir: str | Path | None,
                    azure_deployment_url: bool):
        self.batch_settings = settings or TeacherBatchSettings()
        self.batches: list[dict] = []  # what each batch of this instance did (asset metadata)
        self._transfer = None
        folder = batch_dir if batch_dir is not None else (
            self.cache_dir / "batches" / "default" if self.cache_dir is not None else None)
        self.batch_dir = Path(folder) if folder is not None else None
        if not self.batch_settings.batch:
            return
        s = self.batch_settings
        if self.batch_dir is None:
            raise ValueError("batch mode keeps its state in a folder: give cache_dir or batch_dir")
        if self._cache is None:
            raise ValueError("batch mode stores its answers in the response cache: give cache_dir")
        if not float(s.batch_price_factor) >= 0:
            raise ValueError(f"batch_price_factor must be >= 0, got {s.batch_price_factor}")
        if not s.batch_poll_interval_s >= 0:
            raise ValueError(f"batch_poll_interval_s must be >= 0, got {s.batch_poll_interval_s}")
        if azure_deployment_url:
            raise ValueError("batch mode on Azure needs the resource endpoint (https://<res>.openai.azure.com), not "
                             "a deployment URL: files and batches are not under a deployment")

    @property
    def _batch_endpoint(self) -> str:
        return "/chat/completions" if self.api_version else "/v1/chat/completions"  # Azure's, OpenAI's

    def _transfer_client(self):
        """The SDK client with `batch_transfer_timeout_s` as its bound on one call (file uploads and downloads)."""
        from .openai_client import _split_base_url
        from .transport import deadline_http_client

        if self._transfer is None:
            seconds = float(self.batch_settings.batch_transfer_timeout_s)
            root, _ = _split_base_url(self.base_url)
            self._transfer = self._client.with_options(http_client=deadline_http_client(root, seconds), timeout=seconds)
        return self._transfer

    def _close_batch(self) -> None:
        if self._transfer is not None:
            self._transfer.close()

    def _batch_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.cost_of(prompt_tokens, completion_tokens) * float(self.batch_settings.batch_price_factor)

    # -- the run ----------------------------------------------------------------------------------------------------

    def _complete_by_batch(self, requests: list[TeacherRequest], pending: list[int],
                           results: list[TeacherResponse | None], finish, progress: ProgressFn | None) -> None:
        """Answers `requests[i]` for each i in `pending` (calling `finish(i, response, cost)`): first from a batch
        an earlier run left (state in `batch_dir`), then from one new batch of what is still missing. With nothing
        pending nothing is sent, and a batch an earlier run left waits for the next run that needs the teacher."""
        if not pending:
            return
        state_store = BatchState(self.batch_dir)
        say = progress or log.info
        state = state_store.load()
        if state is not None:
            which = state.get("batch_id") or f"the batch of input file {state['input_file_id']}"
            say(f"teacher batch: resuming {which} ({state.get('requests', '?')} requests) from "
                f"{state_store.state_path}")
            answers = self._run_batch(state_store, state, say, resumed=True)
            self._hand_out(requests, pending, results, answers, finish)
            pending = [i for i in pending if results[i] is None]
            if pending:
                say(f"teacher batch: {len(pending)} prompts were not in the resumed batch; submitting them")
        if not pending:
            return
        by_key: dict[str, list[int]] = {}
        for i in pending:  # identical prompts (same cache key) go out once
            by_key.setdefault(self.cache_key(requests[i].messages), []).append(i)
        lines, keys = [], {}
        spent = self.stats["cost_usd"]
        planned = 0.0
        for key, indices in by_key.items():
            request = requests[indices[0]]
            try:
                body = {"model": self.model, "messages": request.messages, "temperature": self.temperature,
                        "max_tokens": self.max_tokens}
                line = json.dumps({"custom_id": key, "method": "POST", "url": self._batch_endpoint, "body": body},
                                  ensure_ascii=False)
            except (TypeError, ValueError) as exc:  # as the sync path: never pay for what the cache cannot store
                for i in indices:
                    finish(i, self._fail(requests[i], f"invalid request for document {requests[i].key!r}: messages "
                                                      f"are not JSON ({exc})", 0), 0.0)
                continue
            # the budget, at the batch price, must cover the batch's worst case (every answer max_tokens long)
            worst = self._batch_cost(estimate_tokens(_messages_text(request.messages)), self.max_tokens)
            if self.budget_usd is not None and spent + planned + worst > self.budget_usd:
                with self._lock:
                    self._stats["budget_refusals"] += len(indices)
                for i in indices:
                    finish(i, self._fail(requests[i], f"budget exhausted: not sent, the batch's worst case at the "
                                                      f"batch price would pass ${self.budget_usd:.4f}", 0, quiet=True),
                           0.0)
                continue
            planned += worst
            lines.append(line)
            keys[key] = request.key
        if not lines:
            if len(keys) < len(by_key) and self.budget_usd is not None:
                log.warning("teacher budget of $%.4f leaves no room for a batch: nothing is sent", self.budget_usd)
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        state_store.write_input(data)  # before the upload: a resumed run reads the prompts from it
        upload = self._transfer_client().files.create(
            file=(INPUT_FILE, data, "application/jsonl"), purpose="batch",
            extra_headers=self._request_headers or None)
        state = {
            "version": STATE_VERSION, "base_url": self._redact(self.base_url), "model": self.model,
            "input_file_id": upload.id, "input_sha256": hashlib.sha256(data).hexdigest(), "batch_id": None,
            "requests": len(lines), "keys": keys, "submitted_unix": time.time(),
        }
        state_store.save(state)
        with self._lock:
            self._stats["requests_sent"] += len(lines)
        say(f"teacher batch: uploaded {len(lines)} prompts as {upload.id} ({len(data)} bytes)")
        answers = self._run_batch(state_store, state, say, resumed=False)
        self._hand_out(requests, pending, results, answers, finish)

    def _hand_out(self, requests, pending, results, answers: dict[str, TeacherResponse], finish) -> None:
        """Each pending request its batch answer (by cache key); a second request of the same prompt gets it as a
        cached answer (paid once)."""
        served: set[str] = set()
        for i in pending:
            key = self.cache_key(requests[i].messages)
            answer = answers.get(key)
            if answer is None:
                continue
            request = requests[i]
            if answer.ok and key in served:
                finish(i, TeacherResponse(request.key, answer.text, answer.prompt_tokens, answer.completion_tokens,
                                          cached=True), 0.0)
                continue
            served.add(key)
            response = TeacherResponse(request.key, answer.text, answer.prompt_tokens, answer.completion_tokens,
                                       cached=False, error=answer.error, attempts=answer.attempts)
            if answer.error and answer.key != request.key:  # the message names the document the batch was sent for
                response.error = answer.error.replace(repr(answer.key), repr(request.key))
            paid = response.ok
            finish(i, response, self._batch_cost(response.prompt_tokens, response.completion_tokens) if paid else 0.0)

    def _run_batch(self, store: BatchState, state: dict, say: ProgressFn, resumed: bool) -> dict[str, TeacherResponse]:
        """Creates the batch (unless the state names it), waits for its end, caches its answers and clears the
        state. Answers by custom_id (the cache key); raises `BatchFailed` when it failed, expired or was cancelled
        (after caching what it answered)."""
        if not state.get("batch_id"):
            batch = self._find_or_create_batch(state["input_file_id"], look_first=resumed)
            state = {**state, "batch_id": batch.id}
            store.save(state)
            say(f"teacher batch: {batch.id} created ({state['requests']} requests, completion window "
                f"{self.batch_settings.batch_completion_window}, {self.batch_settings.batch_price_factor:g}x the "
                "per-token prices)")
        batch = self._await_batch(state, store, say)
        lines = store.input_lines()
        answers, first_errors = self._collect(batch, lines, state.get("keys", {}))
        report = {
            "batch_id": batch.id, "input_file_id": state["input_file_id"], "status": batch.status,
            "requests": len(lines), "resumed": resumed,
            "answered": sum(a.ok for a in answers.values()),
            "failed": sum(not a.ok for a in answers.values()),
            "price_factor": float(self.batch_settings.batch_price_factor),
            "cost_usd": round(sum(self._batch_cost(a.prompt_tokens, a.completion_tokens)
                                  for a in answers.values() if a.ok), 6),
            "cost_basis": f"batch price: {self.batch_settings.batch_price_factor:g} x the per-1K-token prices",
        }
        with self._lock:
            self.batches.append(report)
        store.clear()  # every answer is cached: a rerun submits only what is missing
        say(f"teacher batch: {batch.id} {batch.status}: {report['answered']} answered, {report['failed']} failed of "
            f"{len(lines)}, ${report['cost_usd']:.4f} at the batch price")
        if batch.status in FAILED:
            counts = batch.request_counts
            done = f"{counts.completed} completed, {counts.failed} failed of {counts.total}; " if counts else ""
            shown = "; ".join(first_errors[:SHOWN_ERRORS]) or "no error given"
            raise BatchFailed(self._redact(
                f"teacher batch {batch.id} {batch.status} ({done}{report['answered']} answers cached, the next run "
                f"submits the rest): {shown}"))
        return answers

    def _find_or_create_batch(self, input_file_id: str, look_first: bool):
        """The batch of `input_file_id`: one the server already has (a create whose answer was lost: looked for
        before each retry, and first when `look_first`), else a new one. The create is never retried blindly (a
        retry after a lost answer would make a second batch)."""
        import openai

        quick = self._client.with_options(max_retries=0)
        for attempt in range(self.max_retries + 1):
            found = self._find_batch(input_file_id) if attempt or look_first else None
            if found is not None:
                return found
            try:
                return quick.batches.create(
                    input_file_id=input_file_id, endpoint=self._batch_endpoint,
                    completion_window=self.batch_settings.batch_completion_window,
                    metadata={"source": "skim_assets teacher"}, extra_headers=self._request_headers or None)
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                if attempt == self.max_retries:
                    raise
                log.warning("creating the teacher batch failed (%s); retrying", type(exc).__name__)
                time.sleep(min(2.0 ** attempt, 30.0))
        raise AssertionError("unreachable")

    def _find_batch(self, input_file_id: str):
        """A batch of `input_file_id` among the server's 100 latest (None if none, or the server lists none)."""
        import openai

        try:
            page = self._client.batches.list(limit=100, extra_headers=self._request_headers or None)
        except openai.APIError as exc:
            log.debug("listing batches failed: %s", exc)
            return None
        return next((b for b in page.data if b.input_file_id == input_file_id), None)

    def _await_batch(self, state: dict, store: BatchState, say: ProgressFn):
        import openai

        batch_id = state["batch_id"]
        started = time.monotonic()
        max_wait = self.batch_settings.batch_max_wait_s
        last_seen, last_said = None, 0.0
        while True:
            try:
                batch = self._client.batches.retrieve(batch_id, extra_headers=self._request_headers or None)
            except openai.NotFoundError as exc:
                raise BatchFailed(self._redact(
                    f"teacher batch {batch_id} (state {store.state_path}) is unknown to {self.base_url}: "
                    f"{self._snippet(exc.response.text, 200)}; delete the state folder to submit anew")) from exc
            counts = batch.request_counts
            seen = (batch.status, counts.completed if counts else None, counts.failed if counts else None)
            now = time.monotonic()
            if seen != last_seen or now - last_said >= QUIET_POLL_LOG_S or batch.status in TERMINAL:
                done = (f"{counts.completed}/{counts.total} done, {counts.failed} failed" if counts
                        else f"{state.get('requests', '?')} requests")
                say(f"teacher batch {batch_id}: {batch.status}, {done}, waited {now - started:.0f}s")
                last_seen, last_said = seen, now
            if batch.status in TERMINAL:
                return batch
            if max_wait is not None and now - started >= max_wait:
                raise BatchPending(f"teacher batch {batch_id} is still {batch.status} after {max_wait:g}s; it runs "
                                   f"on, and the next run resumes it (state {store.state_path})")
            time.sleep(float(self.batch_settings.batch_poll_interval_s))

    # -- the answers --------------------------------------------------------------------------------------------------

    def _file_lines(self, file_id: str | None) -> list:
        if not file_id:
            return []
        content = self._transfer_client().files.content(file_id, extra_headers=self._request_headers or None)
        out = []
        for number, raw in enumerate(content.content.decode("utf-8", errors="replace").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"_unparsable": f"line {number} of {file_id} is not JSON: {self._snippet(raw, 120)!r}"})
        return out

    def _collect(self, batch, lines: dict[str, dict],
                 keys: dict[str, str]) -> tuple[dict[str, TeacherResponse], list[str]]:
        """Every answer of the batch (output and error files) by custom_id, checked and cached like a synchronous
        answer; an input line with no answer gets an error. Also the batch's first errors, for a failed one."""
        first_errors = [self._batch_error_text(e) for e in ((batch.errors.data or []) if batch.errors else [])]
        answers: dict[str, TeacherResponse] = {}
        for item in self._file_lines(batch.output_file_id) + self._file_lines(batch.error_file_id):
            if not isinstance(item, dict) or "_unparsable" in item:
                problem = item.get("_unparsable") if isinstance(item, dict) else f"a line is {type(item).__name__}"
                first_errors.append(problem)
                continue
            custom_id = item.get("custom_id")
            line = lines.get(custom_id) if isinstance(custom_id, str) else None
            if line is None:
                first_errors.append(f"an answer for unknown custom_id {self._snippet(str(custom_id), 80)!r}")
                continue
            answer = self._answer_of(batch.id, custom_id, line, item, keys.get(custom_id, custom_id[:12]))
            if custom_id not in answers or answer.ok:
                answers[custom_id] = answer
            if not answer.ok:
                first_errors.append(answer.error)
        for custom_id, line in lines.items():
            if custom_id not in answers:
                key = keys.get(custom_id, custom_id[:12])
                request = TeacherRequest(key, line["body"]["messages"])
                answers[custom_id] = self._fail(request, f"no answer in teacher batch {batch.id} ({batch.status}) "
                                                         f"for document {key!r}", 0, quiet=True)
        return answers, first_errors

    @staticmethod
    def _batch_error_text(error) -> str:
        where = f" (line {error.line})" if getattr(error, "line", None) is not None else ""
        return f"{getattr(error, 'code', None) or 'error'}{where}: {getattr(error, 'message', None) or ''}".strip()

    def _answer_of(self, batch_id: str, custom_id: str, line: dict, item: dict, doc: str) -> TeacherResponse:
        """One output line: checked like a synchronous answer, cached under its custom_id (the cache key of the
        line's model, messages and sampling settings)."""
        from openai.types.chat import ChatCompletion

        body_sent = line["body"]
        request = TeacherRequest(doc, body_sent["messages"])
        where = f"for document {doc!r} in batch {batch_id}"
        response, error = item.get("response"), item.get("error")
        if isinstance(error, dict) and error:
            return self._fail(request, f"batch error {error.get('code') or ''} {where}: "
                                       f"{self._snippet(str(error.get('message') or ''), 300)}", 1)
        if not isinstance(response, dict):
            problem = f"malformed batch line {where}: no response: {self._snippet(json.dumps(item), 200)}"
            return self._fail(request, problem, 1)
        body = response.get("body")
        status = response.get("status_code")
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        if status != 200:
            return self._fail(request, f"HTTP {status} {where}: {self._snippet(text, 300)}", 1)
        if not isinstance(body, dict):
            problem = f"malformed response {where}: not a JSON object: {self._snippet(text, 200)!r}"
            return self._fail(request, problem, 1)
        completion = ChatCompletion.construct(**body)  # as the SDK reads a synchronous answer: unvalidated
        origin = {"model": body_sent.get("model", self.model),
                  "temperature": body_sent.get("temperature", self.temperature),
                  "max_tokens": body_sent.get("max_tokens", self.max_tokens)}
        return self._accept(request, completion, text, 1, where,
                            price_factor=float(self.batch_settings.batch_price_factor), key=custom_id, origin=origin,
                            batch_id=batch_id)
