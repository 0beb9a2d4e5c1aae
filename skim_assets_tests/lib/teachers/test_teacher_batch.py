"""The teacher's OpenAI Batch API mode (`batch: true`) against a real local HTTP server (pytest-httpserver) that
implements the files and batches endpoints (`POST /v1/files` multipart, `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`) and the synchronous `POST /v1/chat/completions`,
both answering every prompt with the same function."""

from __future__ import annotations

import json
import re
import threading
import time

import dagster as dg
import polars as pl
import pytest
from werkzeug import Response

from skim_assets.lib.demonstrations import parse_outputs, teacher_requests
from skim_assets.lib.teachers import (
    BatchFailed,
    BatchPending,
    OpenAIChatTeacher,
    ResponseCache,
    TeacherBatchSettings,
    TeacherRequest,
)
from skim_assets.resources import TeacherResource

API_KEY = "sk-proj-BATCH-abcdefghijklmnopqrstuvwxyz0123456789"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20}

DOCUMENTS = pl.DataFrame({
    "doc_id": ["d-espresso", "d-cream", "d-tent"],
    "title": ["Zorbex X-200", "Velora 7", "Nordhak Trek 2"],
    "metadata": [
        "The Zorbex X-200 is a cordless espresso machine with a milk frother, made in Lyon.",
        "Velora 7 is a fragrance-free night cream for sensitive skin with ceramides.",
        "Nordhak Trek 2 is a two-person ultralight hiking tent with aluminium poles.",
    ],
})
ANSWERS = {
    "Zorbex X-200": "Queries:\n1. cordless espresso machine\n2. espresso maker with milk frother\n"
                    "3. coffee machine made in lyon",
    "Velora 7": "Queries:\n1. fragrance free night cream\n2. cream for sensitive skin with ceramides",
    "Nordhak Trek 2": "Queries:\n1. ultralight two person tent\n2. hiking tent aluminium poles",
}


def chat_answer(body: dict) -> tuple[int, dict]:
    """What the server answers to one chat completion body, synchronously or in a batch: (status, JSON body)."""
    prompt = body["messages"][-1]["content"]
    if "BROKEN" in prompt:  # an LLM answer without choices: malformed
        return 200, {"id": "x", "object": "chat.completion", "usage": USAGE}
    if "OVERLOADED" in prompt:
        return 500, {"error": {"message": "the model is overloaded", "type": "server_error"}}
    title = next((t for t in ANSWERS if t in prompt), None)
    content = ANSWERS[title] if title else "Queries:\n1. generic query"
    return 200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}],
                 "usage": USAGE}


class BatchServer:
    """The OpenAI files + batches API in memory, on a pytest-httpserver. A batch is `validating` when created,
    then `in_progress` for `in_progress_polls` retrievals, then ends as `outcome` (completed, failed, expired,
    cancelled), its lines answered by `chat_answer` (an expired or cancelled one answers its first half only)."""

    def __init__(self, httpserver, in_progress_polls: int = 1, outcome: str = "completed"):
        self.url = httpserver.url_for("/v1")
        self.in_progress_polls, self.outcome = in_progress_polls, outcome
        self.files: dict[str, tuple[str, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.calls: list[str] = []
        self.uploaded_lines: list[list[dict]] = []
        self.lose_create_answers = 0  # this many creates make the batch, then answer 500 (the answer is lost)
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        httpserver.expect_request("/v1/files", method="POST").respond_with_handler(self.upload)
        httpserver.expect_request(re.compile(r"^/v1/files/[^/]+/content$"), method="GET").respond_with_handler(
            self.content)
        httpserver.expect_request("/v1/batches", method="POST").respond_with_handler(self.create)
        httpserver.expect_request("/v1/batches", method="GET").respond_with_handler(self.list)
        httpserver.expect_request(re.compile(r"^/v1/batches/[^/]+$"), method="GET").respond_with_handler(self.retrieve)
        httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(self.chat)

    # -- endpoints -----------------------------------------------------------------------------------------------

    def _seen(self, request, call: str) -> None:
        with self._lock:
            self.calls.append(call)
            self.authorizations.append(request.headers.get("Authorization"))

    def _new_file(self, purpose: str, data: bytes, filename: str) -> dict:
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = (purpose, data)
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    def upload(self, request):
        self._seen(request, "upload")
        upload = request.files["file"]
        data = upload.read()
        assert request.form["purpose"] == "batch"
        self.uploaded_lines.append([json.loads(line) for line in data.decode().splitlines() if line.strip()])
        return Response(json.dumps(self._new_file("batch", data, upload.filename)), content_type="application/json")

    def content(self, request):
        self._seen(request, "content")
        file_id = request.path.split("/")[-2]
        if file_id not in self.files:
            return Response(json.dumps({"error": {"message": "no such file"}}), status=404,
                            content_type="application/json")
        return Response(self.files[file_id][1], content_type="application/octet-stream")

    def create(self, request):
        self._seen(request, "create")
        body = request.get_json()
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        assert body["input_file_id"] in self.files
        batch_id = f"batch_{len(self.batches) + 1:04d}"
        lines = [json.loads(line) for line in self.files[body["input_file_id"]][1].decode().splitlines()]
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        self.polls[batch_id] = 0
        if self.lose_create_answers:
            self.lose_create_answers -= 1
            return Response("upstream connect error", status=500)
        return Response(json.dumps(self.batches[batch_id]), content_type="application/json")

    def list(self, request):
        self._seen(request, "list")
        data = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        return Response(json.dumps({"object": "list", "data": data, "has_more": False}),
                        content_type="application/json")

    def retrieve(self, request):
        self._seen(request, "retrieve")
        batch_id = request.path.split("/")[-1]
        batch = self.batches.get(batch_id)
        if batch is None:
            return Response(json.dumps({"error": {"message": f"No batch found with id '{batch_id}'."}}), status=404,
                            content_type="application/json")
        self.polls[batch_id] += 1
        if batch["status"] in ("validating", "in_progress"):
            if self.polls[batch_id] <= self.in_progress_polls:
                batch["status"] = "in_progress"
            else:
                self._finish(batch)
        return Response(json.dumps(batch), content_type="application/json")

    def chat(self, request):
        self._seen(request, "chat")
        status, body = chat_answer(request.get_json())
        return Response(json.dumps(body), status=status, content_type="application/json")

    # -- the batch's work ------------------------------------------------------------------------------------------

    def _finish(self, batch: dict) -> None:
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]][1].decode().splitlines()]
        if self.outcome == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_model", "line": 1, "message": "The model 'gpt-test' does not support batches."}]}
            return
        answered = lines if self.outcome == "completed" else lines[: len(lines) // 2]
        output, errors = [], []
        for n, line in enumerate(lines):
            item = {"id": f"batch_req_{n}", "custom_id": line["custom_id"], "response": None, "error": None}
            if line in answered:
                status, body = chat_answer(line["body"])
                item["response"] = {"status_code": status, "request_id": f"req_{n}", "body": body}
                (output if status == 200 else errors).append(item)
            else:
                item["error"] = {"code": f"batch_{self.outcome}", "message": f"This request could not be executed "
                                 f"before the batch was {self.outcome}."}
                errors.append(item)
        if output:
            batch["output_file_id"] = self._new_file("batch_output", _jsonl(output), "output.jsonl")["id"]
        if errors:
            batch["error_file_id"] = self._new_file("batch_output", _jsonl(errors), "errors.jsonl")["id"]
        batch["status"] = self.outcome
        batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}


def _jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def batch_teacher(server: BatchServer, tmp_path, **settings) -> OpenAIChatTeacher:
    batch = TeacherBatchSettings(**{"batch": True, "batch_poll_interval_s": 0.0,
                                    **{k: settings.pop(k) for k in list(settings) if k.startswith("batch_")}})
    defaults = dict(model="gpt-test", max_retries=0, cache_dir=tmp_path / "cache", batch_dir=tmp_path / "state")
    return OpenAIChatTeacher(server.url, batch=batch, **{**defaults, **settings})


def sync_teacher(server: BatchServer, tmp_path, **settings) -> OpenAIChatTeacher:
    defaults = dict(model="gpt-test", max_retries=0, cache_dir=tmp_path / "sync-cache", concurrency=1)
    return OpenAIChatTeacher(server.url, **{**defaults, **settings})


def document_requests() -> list[TeacherRequest]:
    return teacher_requests(DOCUMENTS, {}, "url-queries", TeacherRequest)


def demonstrations_of(responses) -> pl.DataFrame:
    frame, _ = parse_outputs([r.key for r in responses], [r.text for r in responses], DOCUMENTS, {}, "url-queries", 10)
    return frame


def prompt(doc: str, text: str = "") -> TeacherRequest:
    return TeacherRequest(doc, [{"role": "user", "content": f"Document: {doc}\n{text}\nQueries:"}])


# ------------------------------------------------------------------------------------------------------------------


def test_a_batch_writes_the_same_demonstrations_as_the_sync_path_and_a_rerun_sends_nothing(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=2)
    sync = sync_teacher(server, tmp_path).complete(document_requests())
    assert server.calls == ["chat"] * 3

    messages: list[str] = []
    teacher = batch_teacher(server, tmp_path, api_key=API_KEY)
    responses = teacher.complete(document_requests(), progress=messages.append)
    assert server.calls[3:] == ["upload", "create", "retrieve", "retrieve", "retrieve", "content"]
    assert [len(lines) for lines in server.uploaded_lines] == [3]
    line = server.uploaded_lines[0][0]
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"] == {"model": "gpt-test", "messages": document_requests()[0].messages, "temperature": 0.8,
                            "max_tokens": 200}
    assert line["custom_id"] == teacher.cache_key(document_requests()[0].messages)
    assert set(server.authorizations[3:]) == {f"Bearer {API_KEY}"}

    assert [r.key for r in responses] == ["d-espresso", "d-cream", "d-tent"]
    assert [r.text for r in responses] == [r.text for r in sync] == list(ANSWERS.values())
    assert all(r.ok and not r.cached and r.prompt_tokens == 100 and r.completion_tokens == 20 for r in responses)
    batch_rows, sync_rows = demonstrations_of(responses), demonstrations_of(sync)
    assert batch_rows.height == 7 and batch_rows.equals(sync_rows)

    # polled with the progress log; the state is gone once every answer is cached
    assert any(m == "teacher batch batch_0001: in_progress, 0/3 done, 0 failed, waited 0s" for m in messages)
    assert any("batch_0001 completed: 3 answered, 0 failed of 3" in m for m in messages)
    assert not (tmp_path / "state" / "state.json").exists() and not (tmp_path / "state" / "input.jsonl").exists()
    assert API_KEY[:12] not in "\n".join(messages)
    [report] = teacher.batches
    assert report["batch_id"] == "batch_0001" and report["status"] == "completed" and not report["resumed"]
    assert (report["requests"], report["answered"], report["failed"]) == (3, 3, 0)
    entry = ResponseCache(tmp_path / "cache").get(line["custom_id"])
    assert entry["text"] == ANSWERS["Zorbex X-200"] and entry["batch_id"] == "batch_0001"
    assert entry["model"] == "gpt-test" and entry["messages"] == document_requests()[0].messages

    calls = len(server.calls)
    again = batch_teacher(server, tmp_path).complete(document_requests())  # a fresh process, say
    assert len(server.calls) == calls  # no request at all: every answer is in the cache
    assert [r.text for r in again] == [r.text for r in responses] and all(r.cached for r in again)
    assert demonstrations_of(again).equals(batch_rows)


def test_a_killed_step_resumes_its_batch_without_a_second_upload(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=3)

    class Killed(BaseException):
        pass

    def die_while_running(message: str) -> None:
        if "in_progress" in message:
            raise Killed(message)

    with pytest.raises(Killed):
        batch_teacher(server, tmp_path).complete(document_requests(), progress=die_while_running)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["batch_id"] == "batch_0001" and state["input_file_id"] == "file-0001" and state["requests"] == 3
    assert (tmp_path / "state" / "input.jsonl").read_bytes() == server.files["file-0001"][1]
    assert server.calls.count("upload") == 1 and server.calls.count("create") == 1
    assert len(ResponseCache(tmp_path / "cache")) == 0

    messages: list[str] = []
    teacher = batch_teacher(server, tmp_path)
    responses = teacher.complete(document_requests(), progress=messages.append)
    assert server.calls.count("upload") == 1 and server.calls.count("create") == 1  # the same batch, polled again
    assert server.polls["batch_0001"] == 4
    assert messages[0].startswith("teacher batch: resuming batch_0001 (3 requests) from ")
    assert [r.text for r in responses] == list(ANSWERS.values()) and all(r.ok for r in responses)
    [report] = teacher.batches
    assert report["batch_id"] == "batch_0001" and report["resumed"] and report["answered"] == 3
    assert len(ResponseCache(tmp_path / "cache")) == 3 and not (tmp_path / "state" / "state.json").exists()


def test_a_batch_whose_create_answer_was_lost_is_found_not_created_twice(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=0)
    server.lose_create_answers = 1  # the server made batch_0001, but the client saw a 500
    responses = batch_teacher(server, tmp_path, max_retries=1).complete(document_requests())
    assert server.calls == ["upload", "create", "list", "retrieve", "content"]  # looked for before a retry
    assert len(server.batches) == 1 and [r.text for r in responses] == list(ANSWERS.values())


def test_a_batch_whose_create_answer_was_lost_is_found_by_the_next_run(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=0)
    server.lose_create_answers = 1
    with pytest.raises(Exception, match="500"):
        batch_teacher(server, tmp_path).complete(document_requests())
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["input_file_id"] == "file-0001" and state["batch_id"] is None

    responses = batch_teacher(server, tmp_path).complete(document_requests())
    assert server.calls == ["upload", "create", "list", "retrieve", "content"]  # found by its input file
    assert len(server.batches) == 1
    assert [r.text for r in responses] == list(ANSWERS.values())


def test_a_failed_batch_is_a_clear_error_and_the_next_run_submits_again(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=0, outcome="failed")
    with pytest.raises(BatchFailed) as failure:
        batch_teacher(server, tmp_path).complete(document_requests())
    assert str(failure.value) == (
        "teacher batch batch_0001 failed (0 completed, 0 failed of 3; 0 answers cached, the next run submits the "
        "rest): invalid_model (line 1): The model 'gpt-test' does not support batches.")
    assert not (tmp_path / "state" / "state.json").exists()  # not resumed forever: the next run submits anew

    server.outcome = "completed"
    responses = batch_teacher(server, tmp_path).complete(document_requests())
    assert server.calls.count("upload") == 2 and [r.text for r in responses] == list(ANSWERS.values())


def test_an_expired_batch_keeps_its_answers_and_names_what_it_missed(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=0, outcome="expired")
    requests = [prompt(f"doc-{n}") for n in range(4)]
    with pytest.raises(BatchFailed) as failure:
        batch_teacher(server, tmp_path).complete(requests)
    message = str(failure.value)
    assert message.startswith("teacher batch batch_0001 expired (2 completed, 2 failed of 4; 2 answers cached, the "
                              "next run submits the rest): batch error batch_expired for document 'doc-2' in batch "
                              "batch_0001: This request could not be executed before the batch was expired.")
    assert len(ResponseCache(tmp_path / "cache")) == 2  # the answers paid for are kept

    server.outcome = "completed"
    responses = batch_teacher(server, tmp_path).complete(requests)
    assert [[line["custom_id"] for line in lines] for lines in server.uploaded_lines][1] == [
        batch_teacher(server, tmp_path).cache_key(r.messages) for r in requests[2:]]
    assert [r.cached for r in responses] == [True, True, False, False] and all(r.ok for r in responses)


def test_failed_requests_in_a_batch_are_reported_like_the_sync_path_and_not_cached(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=0)
    requests = [prompt("doc-ok"), prompt("doc-broken", "BROKEN"), prompt("doc-500", "OVERLOADED")]
    ok, broken, overloaded = batch_teacher(server, tmp_path).complete(requests)
    assert ok.ok and ok.text == "Queries:\n1. generic query"
    assert broken.error == ("malformed response for document 'doc-broken' in batch batch_0001: no choices: "
                            '{"id": "x", "object": "chat.completion", "usage": {"prompt_tokens": 100, '
                            '"completion_tokens": 20}}')
    assert overloaded.error == ('HTTP 500 for document \'doc-500\' in batch batch_0001: {"error": {"message": "the '
                                'model is overloaded", "type": "server_error"}}')
    assert broken.text is None and overloaded.text is None
    sync_broken = sync_teacher(server, tmp_path).complete([requests[1]])[0]
    assert sync_broken.error.startswith("malformed response for document 'doc-broken': no choices: ")
    assert len(ResponseCache(tmp_path / "cache")) == 1  # only the good answer

    batch_teacher(server, tmp_path).complete(requests)  # the failures go out again, in a batch of their own
    assert [len(lines) for lines in server.uploaded_lines] == [3, 2]


def test_the_budget_is_counted_at_the_batch_price(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=0)
    prices = dict(usd_per_1k_prompt_tokens=1.0, usd_per_1k_completion_tokens=2.0)
    sync = sync_teacher(server, tmp_path, **prices)
    sync.complete(document_requests())
    assert sync.stats["cost_usd"] == pytest.approx(3 * (0.100 * 1.0 + 0.020 * 2.0))  # $0.42

    teacher = batch_teacher(server, tmp_path, **prices)
    responses = teacher.complete(document_requests())
    assert all(r.ok for r in responses)
    assert teacher.stats["cost_usd"] == pytest.approx(0.21)  # half of the sync path's
    assert teacher.batches[0]["cost_usd"] == pytest.approx(0.21) and teacher.batches[0]["price_factor"] == 0.5
    assert teacher.batches[0]["cost_basis"] == "batch price: 0.5 x the per-1K-token prices"
    entry = ResponseCache(tmp_path / "cache").get(teacher.cache_key(document_requests()[0].messages))
    assert entry["cost_usd"] == pytest.approx(0.07)
    assert teacher.describe()["batch"] is True and teacher.describe()["batch_price_factor"] == 0.5

    # the budget must cover the batch's worst case at the batch price: each 400-character prompt is ~100 tokens,
    # each answer at most max_tokens=200, so 0.5 * (100 * $1 + 200 * $2) / 1K = $0.25 a prompt; $0.60 buys two
    requests = [prompt(f"doc-{n}", "x" * (400 - len(f"Document: doc-{n}\n\nQueries:"))) for n in range(3)]
    assert all(len(r.messages[0]["content"]) == 400 for r in requests)
    capped = batch_teacher(server, tmp_path, budget_usd=0.6, cache_dir=tmp_path / "capped", **prices)
    first, second, refused = capped.complete(requests)
    assert first.ok and second.ok
    assert refused.error == ("budget exhausted: not sent, the batch's worst case at the batch price would pass "
                             "$0.6000")
    assert len(server.uploaded_lines[-1]) == 2 and capped.stats["budget_refusals"] == 1
    assert capped.stats["cost_usd"] == pytest.approx(2 * 0.07)


def test_max_wait_stops_the_step_and_the_next_run_resumes(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=5)
    with pytest.raises(BatchPending, match=r"teacher batch batch_0001 is still in_progress after 0s; it runs on"):
        batch_teacher(server, tmp_path, batch_max_wait_s=0.0).complete(document_requests())
    responses = batch_teacher(server, tmp_path).complete(document_requests())
    assert server.calls.count("upload") == 1 and all(r.ok for r in responses)


def test_batch_mode_is_resource_config_and_needs_the_openai_kind(httpserver, tmp_path, monkeypatch):
    server = BatchServer(httpserver, in_progress_polls=0)
    monkeypatch.setenv("SKIM_TEACHER", "openai")  # as the README has it: the environment names the endpoint...
    monkeypatch.setenv("SKIM_TEACHER_BASE_URL", server.url)
    monkeypatch.setenv("SKIM_TEACHER_MODEL", "gpt-test")
    monkeypatch.setenv("SKIM_TEACHER_API_KEY", API_KEY)
    seen = {}

    @dg.asset
    def probe(teacher: TeacherResource) -> None:
        model = teacher.build(tmp_path / "cache", batch_dir=tmp_path / "state")
        seen["settings"] = model.describe()
        seen["responses"] = model.complete(document_requests())

    # ...and run config of the teacher resource switches batch mode on
    config = {"resources": {"teacher": {"config": {"batch": True, "batch_poll_interval_s": 0.0,
                                                   "batch_price_factor": 0.25}}}}
    assert dg.materialize([probe], resources={"teacher": TeacherResource()}, run_config=config).success
    assert seen["settings"]["batch"] is True and seen["settings"]["batch_price_factor"] == 0.25
    assert seen["settings"]["batch_completion_window"] == "24h"
    assert server.calls.count("upload") == 1 and [r.ok for r in seen["responses"]] == [True] * 3
    assert set(server.authorizations) == {f"Bearer {API_KEY}"}
    assert API_KEY[:12] not in json.dumps(seen["settings"])

    with pytest.raises(ValueError, match="batch: true is the OpenAI Batch API: it needs teacher kind 'openai'"):
        TeacherResource(kind="keyphrase", batch=True).build(tmp_path / "cache")


def test_a_resumed_batch_of_other_prompts_is_kept_and_the_rest_goes_out_anew(httpserver, tmp_path):
    server = BatchServer(httpserver, in_progress_polls=2)
    old = [prompt(f"doc-{n}") for n in range(3)]

    class Killed(BaseException):
        pass

    def die(message: str) -> None:
        if "in_progress" in message:
            raise Killed

    with pytest.raises(Killed):
        batch_teacher(server, tmp_path).complete(old, progress=die)
    # a run that finds everything it needs in the cache leaves the pending batch alone (no request)
    calls = len(server.calls)
    assert batch_teacher(server, tmp_path).complete([]) == []
    assert len(server.calls) == calls and (tmp_path / "state" / "state.json").exists()

    new = [old[0], prompt("doc-new")]  # the config changed: one prompt of the old batch, one it never had
    messages: list[str] = []
    teacher = batch_teacher(server, tmp_path)
    first, fresh = teacher.complete(new, progress=messages.append)
    assert first.ok and fresh.ok and not first.cached and not fresh.cached
    assert "teacher batch: 1 prompts were not in the resumed batch; submitting them" in messages
    assert [len(lines) for lines in server.uploaded_lines] == [3, 1]
    assert [b["batch_id"] for b in teacher.batches] == ["batch_0001", "batch_0002"]
    assert len(ResponseCache(tmp_path / "cache")) == 4  # the old batch's other answers are kept: paid for
