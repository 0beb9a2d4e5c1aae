"""Teachers: the OpenAI-compatible client (the `openai` SDK) against a real local HTTP server (pytest-httpserver),
the offline keyphrase teacher (real MiniLM and the statistical fallback), and the local HF teacher (slow)."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from skim_assets.lib.teachers import (
    STOPWORDS,
    KeyphraseTeacher,
    LocalHFTeacher,
    OpenAIChatTeacher,
    Teacher,
    TeacherRequest,
    TeacherResponse,
    build_teacher,
    cache_key,
)

API_KEY = "sk-test-SECRET-0123456789"
CHAT_PATH = "/v1/chat/completions"


def messages(doc: str) -> list[dict]:
    return [
        {"role": "system", "content": "You write search queries for documents."},
        {"role": "user", "content": f"Document: {doc}\nMetadata: facts about {doc}.\nQueries:"},
    ]


def requests_for(*docs: str) -> list[TeacherRequest]:
    return [TeacherRequest(key=doc, messages=messages(doc), title=doc, metadata=f"facts about {doc}") for doc in docs]


def completion(content, prompt_tokens: int | None = 100, completion_tokens: int | None = 20) -> dict:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if prompt_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return body


def json_response(body: dict) -> Response:
    return Response(json.dumps(body), content_type="application/json")


def doc_of(request: Request) -> str:
    """The doc id a request was about (from the user message)."""
    content = request.get_json()["messages"][-1]["content"]
    return re.search(r"Document: (\S+)", content).group(1)


def fast_teacher(httpserver: HTTPServer, **settings) -> OpenAIChatTeacher:
    defaults = dict(base_url=httpserver.url_for("/v1"), model="gpt-test", timeout_s=5.0, max_retries=3, concurrency=1)
    defaults.update(settings)
    return OpenAIChatTeacher(**defaults)


@pytest.fixture(autouse=True)
def fast_sdk_backoff(monkeypatch):
    """The SDK's exponential backoff (0.5 s doubling to 8 s) cut to 10-50 ms, so retry tests take milliseconds. The
    SDK reads these module constants at each retry; a rename in a new SDK fails here loudly, not slowly."""
    import openai._base_client

    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(openai._base_client, "MAX_RETRY_DELAY", 0.05)


@pytest.fixture(scope="module")
def threaded_server():
    """A threaded server for handlers that sleep (timeouts, concurrency): one slow request blocks no other."""
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def tserver(threaded_server):
    yield threaded_server
    threaded_server.clear()


# --------------------------------------------------------------------------------------------------------------
# OpenAIChatTeacher


def test_success_returns_text_tokens_and_cost(httpserver, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")  # never picked up: no api_key, no header
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(
        completion("Queries:\nbest espresso machine\ncordless coffee maker", 120, 30)
    )
    teacher = fast_teacher(httpserver, usd_per_1k_prompt_tokens=0.01, usd_per_1k_completion_tokens=0.03)
    [response] = teacher.complete(requests_for("doc-1"))

    assert response == TeacherResponse(
        "doc-1", "Queries:\nbest espresso machine\ncordless coffee maker", 120, 30, cached=False, error=None, attempts=1
    )
    assert response.ok
    sent = httpserver.log[0][0].get_json()
    assert sent == {"model": "gpt-test", "messages": messages("doc-1"), "temperature": 0.8, "max_tokens": 200}
    assert "Authorization" not in httpserver.log[0][0].headers  # no key given, no header
    stats = teacher.stats
    assert stats["requests_sent"] == 1 and stats["http_attempts"] == 1 and stats["errors"] == 0
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (120, 30)
    assert stats["cost_usd"] == pytest.approx(120 * 0.01 / 1000 + 30 * 0.03 / 1000)
    assert teacher.backend == "openai" and teacher.model == "gpt-test"
    assert isinstance(teacher, Teacher)


def test_missing_usage_falls_back_to_an_estimate(httpserver):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("Queries:\n" + "x" * 80, None))
    [response] = fast_teacher(httpserver).complete(requests_for("doc-1"))
    assert response.ok
    assert response.completion_tokens == pytest.approx(len("Queries:\n" + "x" * 80) / 4, abs=1)
    assert response.prompt_tokens == pytest.approx(sum(len(m["content"]) for m in messages("doc-1")) / 4, abs=2)


def test_429_is_retried_and_retry_after_is_honoured(httpserver):
    httpserver.expect_oneshot_request(CHAT_PATH).respond_with_data(
        "rate limited", status=429, headers={"Retry-After": "0.3"}
    )
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("Queries:\nq1"))
    teacher = fast_teacher(httpserver)
    started = time.monotonic()
    [response] = teacher.complete(requests_for("doc-1"))
    elapsed = time.monotonic() - started

    assert response.ok and response.text == "Queries:\nq1" and response.attempts == 2
    assert len(httpserver.log) == 2
    assert [req.headers["x-stainless-retry-count"] for req, _ in httpserver.log] == ["0", "1"]
    assert 0.28 <= elapsed < 1.5  # waited the server's Retry-After (0.3 s), not the 10 ms backoff
    assert teacher.stats["retries"] == 1 and teacher.stats["http_attempts"] == 2


def test_a_retry_after_beyond_two_minutes_is_reported_at_once(httpserver):
    httpserver.expect_request(CHAT_PATH).respond_with_data(
        "quota exceeded, come back tomorrow", status=429, headers={"Retry-After": "86400"}
    )
    teacher = fast_teacher(httpserver, max_retries=5)
    started = time.monotonic()
    [response] = teacher.complete(requests_for("doc-1"))
    assert time.monotonic() - started < 2.0  # neither waited a day nor retried
    assert response.error == "HTTP 429 for document 'doc-1': quota exceeded, come back tomorrow"
    assert response.attempts == 1 and len(httpserver.log) == 1


def test_500s_exhaust_retries_and_the_run_continues(httpserver):
    def handler(request: Request) -> Response:
        if doc_of(request) == "doc-bad":
            return Response("upstream exploded", status=500)
        return Response(json.dumps(completion(f"Queries:\nabout {doc_of(request)}")), content_type="application/json")

    httpserver.expect_request(CHAT_PATH).respond_with_handler(handler)
    teacher = fast_teacher(httpserver, max_retries=2)
    responses = teacher.complete(requests_for("doc-a", "doc-bad", "doc-c"))

    assert [r.key for r in responses] == ["doc-a", "doc-bad", "doc-c"]
    good_a, bad, good_c = responses
    assert good_a.text == "Queries:\nabout doc-a" and good_c.text == "Queries:\nabout doc-c"
    assert bad.text is None and not bad.ok
    assert bad.error == "HTTP 500 after 3 attempts for document 'doc-bad': upstream exploded"
    assert bad.attempts == 3
    assert sum(doc_of(req) == "doc-bad" for req, _ in httpserver.log) == 3
    assert teacher.stats["errors"] == 1 and teacher.stats["http_attempts"] == 5


def test_400_is_not_retried(httpserver):
    httpserver.expect_request(CHAT_PATH).respond_with_json({"error": {"message": "context too long"}}, status=400)
    [response] = fast_teacher(httpserver, max_retries=5).complete(requests_for("doc-1"))
    assert response.text is None
    assert response.error.startswith("HTTP 400 for document 'doc-1': ") and "context too long" in response.error
    assert response.attempts == 1 and len(httpserver.log) == 1


def test_timeouts_are_retried_then_reported(tserver):
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response(json.dumps(completion("late")), content_type="application/json")

    tserver.expect_request(CHAT_PATH).respond_with_handler(slow)
    teacher = fast_teacher(tserver, timeout_s=0.2, max_retries=1)
    started = time.monotonic()
    [response] = teacher.complete(requests_for("doc-1"))
    assert time.monotonic() - started < 0.95  # did not wait for the slow server
    assert response.text is None and response.error == "timeout (0.2s) after 2 attempts for document 'doc-1'"
    assert response.attempts == 2


def test_a_timeout_then_success(tserver):
    def slow(request: Request) -> Response:
        time.sleep(0.6)
        return Response(json.dumps(completion("late")), content_type="application/json")

    tserver.expect_oneshot_request(CHAT_PATH).respond_with_handler(slow)
    tserver.expect_request(CHAT_PATH).respond_with_json(completion("Queries:\non time"))
    [response] = fast_teacher(tserver, timeout_s=0.2, max_retries=2).complete(requests_for("doc-1"))
    assert response.ok and response.text == "Queries:\non time" and response.attempts == 2


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    teacher = OpenAIChatTeacher(
        f"http://127.0.0.1:{port}/v1", "gpt-test", api_key=API_KEY, max_retries=2, timeout_s=1.0
    )
    [response] = teacher.complete(requests_for("doc-1"))
    assert response.text is None and response.attempts == 3
    assert response.error.startswith("connection error (")
    assert response.error.endswith("after 3 attempts for document 'doc-1'")
    assert API_KEY not in response.error


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("this is not json {", "application/json"),
        (json.dumps({"id": "x", "choices": []}), "application/json"),
        (json.dumps({"choices": [{"message": {"role": "assistant"}}]}), "application/json"),
        (json.dumps({"choices": [{"message": {"role": "assistant", "content": None}}]}), "application/json"),
        (json.dumps(completion("  \n")), "application/json"),
        ("<html>502 from a proxy, but with status 200</html>", "text/html"),
    ],
    ids=["not-json", "no-choices", "no-content", "null-content", "empty-content", "html"],
)
def test_malformed_responses_are_errors_without_retry(httpserver, body, content_type):
    httpserver.expect_request(CHAT_PATH).respond_with_data(body, content_type=content_type)
    teacher = fast_teacher(httpserver, max_retries=4)
    [response] = teacher.complete(requests_for("doc-1"))
    assert response.text is None and response.error.startswith("malformed response for document 'doc-1': ")
    assert len(httpserver.log) == 1
    assert teacher.stats["errors"] == 1


def test_an_unsendable_request_fails_alone(httpserver, tmp_path):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("Queries:\nq"))
    broken = TeacherRequest("doc-broken", [{"role": "user", "content": {1, 2}}])  # a set is not JSON
    teacher = fast_teacher(httpserver, concurrency=2, cache_dir=tmp_path / "cache")
    responses = teacher.complete([broken, *requests_for("doc-1")])
    assert responses[0].error.startswith("invalid request for document 'doc-broken': messages are not JSON")
    assert responses[0].attempts == 0 and responses[1].ok
    assert len(httpserver.log) == 1  # the broken one was never sent (the SDK would have sent the set as a list)


def test_content_that_parses_to_nothing_is_returned_as_is(httpserver):
    refusal = "I'm sorry, but I can't help with that."
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion(refusal))
    [response] = fast_teacher(httpserver).complete(requests_for("doc-1"))
    assert response.ok and response.text == refusal  # judging the text is the parser's job


def test_cache_second_run_sends_nothing(httpserver, tmp_path):
    def handler(request: Request) -> Response:
        return json_response(completion(f"Queries:\nabout {doc_of(request)}", 50, 10))

    httpserver.expect_request(CHAT_PATH).respond_with_handler(handler)
    cache_dir = tmp_path / "teacher-cache"
    docs = requests_for("doc-1", "doc-2", "doc-3")
    first = fast_teacher(httpserver, cache_dir=cache_dir, usd_per_1k_prompt_tokens=1.0).complete(docs)
    assert len(httpserver.log) == 3 and not any(r.cached for r in first)

    files = sorted(cache_dir.rglob("*"))
    entries = [p for p in files if p.is_file()]
    assert len(entries) == 3 and all(p.suffix == ".json" for p in entries)  # no temp files left behind
    key = cache_key("gpt-test", messages("doc-2"), 0.8, 200)
    entry = json.loads((cache_dir / key[:2] / f"{key}.json").read_text())
    assert entry["text"] == "Queries:\nabout doc-2" and entry["request_key"] == "doc-2"

    rerun = fast_teacher(httpserver, cache_dir=cache_dir, usd_per_1k_prompt_tokens=1.0)  # a fresh process, say
    second = rerun.complete(docs)
    assert len(httpserver.log) == 3  # zero new HTTP requests
    assert all(r.cached and r.attempts == 0 for r in second)
    assert [(r.key, r.text, r.prompt_tokens, r.completion_tokens) for r in second] == [
        (r.key, r.text, r.prompt_tokens, r.completion_tokens) for r in first
    ]
    assert rerun.stats["cache_hits"] == 3 and rerun.stats["requests_sent"] == 0 and rerun.stats["cost_usd"] == 0

    # A different sampling setting is a different prompt: it is sent.
    fast_teacher(httpserver, cache_dir=cache_dir, temperature=0.2).complete(docs[:1])
    assert len(httpserver.log) == 4


def test_errors_are_not_cached(httpserver, tmp_path):
    httpserver.expect_oneshot_request(CHAT_PATH).respond_with_data("bad request", status=400)
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("Queries:\nq"))
    teacher = fast_teacher(httpserver, cache_dir=tmp_path / "cache")
    [failed] = teacher.complete(requests_for("doc-1"))
    assert failed.error is not None and not list((tmp_path / "cache").rglob("*.json"))
    [retried] = teacher.complete(requests_for("doc-1"))
    assert retried.ok and not retried.cached and len(httpserver.log) == 2


def test_budget_exhausted_stops_sending_but_serves_the_cache(httpserver, tmp_path):
    def handler(request: Request) -> Response:
        return json_response(completion(f"Queries:\n{doc_of(request)}", 1000, 0))

    httpserver.expect_request(CHAT_PATH).respond_with_handler(handler)
    teacher = fast_teacher(httpserver, cache_dir=tmp_path / "cache", budget_usd=1.5, usd_per_1k_prompt_tokens=1.0)
    responses = teacher.complete(requests_for("doc-1", "doc-2", "doc-3", "doc-4"))
    # $1 per request: the first two are sent ($0, then $1 < $1.5), then the budget is spent.
    assert [r.ok for r in responses] == [True, True, False, False]
    assert all(r.error.startswith("budget exhausted") for r in responses[2:])
    assert all(r.attempts == 0 for r in responses[2:])
    assert len(httpserver.log) == 2
    assert teacher.stats["cost_usd"] == pytest.approx(2.0) and teacher.stats["budget_refusals"] == 2

    broke = fast_teacher(httpserver, cache_dir=tmp_path / "cache", budget_usd=0.0, usd_per_1k_prompt_tokens=1.0)
    again = broke.complete(requests_for("doc-1", "doc-3"))
    assert again[0].cached and again[0].text == "Queries:\ndoc-1"
    assert again[1].error.startswith("budget exhausted")
    assert len(httpserver.log) == 2


def test_api_key_never_leaks(httpserver, tmp_path, caplog):
    def handler(request: Request) -> Response:
        if doc_of(request) == "doc-rejected":  # a server that echoes the key it refuses
            return Response(f"Incorrect API key provided: {API_KEY}", status=401)
        if doc_of(request) == "doc-flaky":
            return Response(f"overloaded, key={API_KEY}", status=503)
        return Response(json.dumps(completion("Queries:\nq")), content_type="application/json")

    httpserver.expect_request(CHAT_PATH).respond_with_handler(handler)
    progress: list[str] = []
    teacher = fast_teacher(httpserver, api_key=API_KEY, cache_dir=tmp_path / "cache", max_retries=1, progress_every_s=0)
    with caplog.at_level(logging.DEBUG):
        responses = teacher.complete(requests_for("doc-ok", "doc-rejected", "doc-flaky"), progress=progress.append)

    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {API_KEY}"  # it was sent...
    assert responses[0].ok
    assert responses[1].error.startswith("HTTP 401") and "***" in responses[1].error
    assert responses[2].error.startswith("HTTP 503 after 2 attempts")
    visible = [repr(teacher), str(teacher), json.dumps(teacher.describe())]
    visible += [r.error or "" for r in responses] + [repr(r) for r in responses] + progress + [caplog.text]
    visible += [p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(visible) > 10 and list((tmp_path / "cache").rglob("*.json"))
    for text in visible:  # ...and nowhere else
        assert API_KEY not in text


def test_azure_deployment_url_and_api_key_header(httpserver):
    azure_key, gateway_token = "azure-SECRET-key-42", "gw-SECRET-token-7"
    httpserver.expect_request(
        "/openai/deployments/gpt4o/chat/completions", query_string="api-version=2024-06-01", method="POST",
        headers={"api-key": azure_key, "x-gateway-token": gateway_token},
    ).respond_with_json(completion("Queries:\nq"))
    base_url = httpserver.url_for("/openai/deployments/gpt4o") + "?api-version=2024-06-01"
    teacher = OpenAIChatTeacher(
        base_url, "gpt-4o", api_key=azure_key, extra_headers={"x-gateway-token": gateway_token}, max_retries=0
    )
    [response] = teacher.complete(requests_for("doc-1"))
    assert response.ok and response.text == "Queries:\nq"
    assert "Authorization" not in httpserver.log[0][0].headers  # Azure takes the key as api-key only
    assert teacher.describe()["client"] == "AzureOpenAI" and teacher.api_version == "2024-06-01"
    for secret in (azure_key, gateway_token):
        assert secret not in repr(teacher) and secret not in json.dumps(teacher.describe())


def test_azure_resource_endpoint_routes_the_model_to_its_deployment(httpserver):
    httpserver.expect_request(
        "/openai/deployments/gpt4o-mini/chat/completions", query_string="api-version=2024-10-21", method="POST",
        headers={"api-key": "azure-key-1234"},
    ).respond_with_json(completion("Queries:\nq"))
    teacher = OpenAIChatTeacher(
        httpserver.url_for("/"), "gpt4o-mini", api_key="azure-key-1234", api_version="2024-10-21", max_retries=0
    )
    [response] = teacher.complete(requests_for("doc-1"))
    assert response.ok and response.text == "Queries:\nq"


def test_azure_hosts_need_an_api_version_and_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    with pytest.raises(ValueError, match="needs api_version"):
        OpenAIChatTeacher("https://res.openai.azure.com", "gpt-4o", api_key="azure-key-1234")
    with pytest.raises(ValueError, match="needs api_key"):
        OpenAIChatTeacher("https://res.openai.azure.com", "gpt-4o", api_version="2024-10-21")
    azure = OpenAIChatTeacher("https://res.openai.azure.com/", "gpt-4o", api_key="k-1234", api_version="2024-10-21")
    assert azure.describe()["client"] == "AzureOpenAI"
    # Azure's version-less v1 API is an ordinary OpenAI endpoint
    v1 = OpenAIChatTeacher("https://res.openai.azure.com/openai/v1", "gpt-4o", api_key="azure-key-1234")
    assert v1.describe()["client"] == "OpenAI" and v1.api_version is None


def test_concurrency_keeps_request_order(tserver):
    lock = threading.Lock()
    in_flight = [0, 0]  # now, max

    def handler(request: Request) -> Response:
        doc = doc_of(request)
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.05 * (8 - int(doc.split("-")[1])))  # early documents answer last
        with lock:
            in_flight[0] -= 1
        return Response(json.dumps(completion(f"Queries:\nabout {doc}")), content_type="application/json")

    tserver.expect_request(CHAT_PATH).respond_with_handler(handler)
    progress: list[str] = []
    docs = [f"doc-{i}" for i in range(8)]
    teacher = fast_teacher(tserver, concurrency=4)
    responses = teacher.complete(requests_for(*docs), progress=progress.append)
    assert [r.key for r in responses] == docs
    assert [r.text for r in responses] == [f"Queries:\nabout {d}" for d in docs]
    assert in_flight[1] > 1  # requests really overlapped
    assert progress and "8/8 done" in progress[-1] and "0 errors" in progress[-1]


def test_progress_is_throttled_and_final(httpserver):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("Queries:\nq", 10, 5))
    progress: list[str] = []
    fast_teacher(httpserver, progress_every_s=3600).complete(requests_for("a-1", "a-2", "a-3"), progress.append)
    assert progress == ["teacher openai:gpt-test: 3/3 done, 0 cached, 0 errors, 30+15 tokens, $0.0000"]


def test_cache_key_is_canonical():
    a = [{"role": "user", "content": "hi"}]
    b = [{"content": "hi", "role": "user"}]
    assert cache_key("m", a, 0.8, 200) == cache_key("m", b, 0.8, 200)
    assert cache_key("m", a, 0.8, 200) != cache_key("m", a, 0.8, 201)
    assert cache_key("m", a, 0.8, 200) != cache_key("other", a, 0.8, 200)
    assert re.fullmatch(r"[0-9a-f]{64}", cache_key("m", a, 0.8, 200))


# --------------------------------------------------------------------------------------------------------------
# KeyphraseTeacher

TITLE = "Zorbex X-200"
PRODUCT = (
    "The Zorbex X-200 is a cordless espresso machine made in Lyon, France. It brews barista-quality espresso in "
    "30 seconds using recyclable aluminium capsules. The built-in milk frother makes lattes and cappuccinos. "
    "Powered by a rechargeable lithium battery, the Zorbex is ideal for camping trips and small office kitchens. "
    "Dishwasher-safe drip tray. Two-year warranty."
)
OTHER = (
    "Velora 7 is a fragrance-free night cream for sensitive skin. It contains ceramides and hyaluronic acid, "
    "is dermatologist tested, and comes in a 50 ml glass jar made in Korea."
)


@pytest.fixture(scope="module")
def encoder():
    from skim_assets.lib.encoders import TextEncoder

    return TextEncoder()


def phrases_of(response: TeacherResponse) -> list[str]:
    header, *lines = response.text.split("\n")
    assert header == "Queries:"
    return lines


def assert_good_keyphrases(phrases: list[str], metadata: str, title: str, max_queries: int) -> None:
    assert 3 <= len(phrases) <= max_queries
    flat = " ".join(metadata.lower().split())
    title_tokens = {t.lower() for t in title.split()}
    for phrase in phrases:
        tokens = phrase.split()
        assert phrase == phrase.lower() and phrase in flat  # a contiguous piece of the metadata
        assert not title_tokens & set(tokens)
        # no stop word at the end; at the start only a preposition in front of a fact ("against migraine")
        assert tokens[-1] not in STOPWORDS
        assert tokens[0] not in STOPWORDS or tokens[0] in {"against", "for", "with", "from", "in", "by", "without",
                                                           "near", "about", "on"}
        assert not any(t.isdigit() for t in tokens)
        assert 2 <= len(tokens) <= 5  # no one-word fragments
    contents = [frozenset(t for t in p.split() if t not in STOPWORDS) for p in phrases]
    assert len(set(contents)) == len(contents)  # never the same content words twice


def test_keyphrase_teacher_with_minilm(encoder):
    teacher = KeyphraseTeacher(encoder, max_queries=8)
    assert teacher.backend == "keyphrase" and teacher.model.startswith("keybert-mmr:")
    assert "minilm" in teacher.model.lower()
    assert isinstance(teacher, Teacher)
    request = TeacherRequest("p1", messages=[], title=TITLE, metadata=PRODUCT)
    [response] = teacher.complete([request])
    assert response.ok and not response.cached and response.completion_tokens > 0
    phrases = phrases_of(response)
    assert_good_keyphrases(phrases, PRODUCT, TITLE, 8)
    assert any("espresso" in p for p in phrases)  # the document is about espresso
    assert teacher.keyphrases(PRODUCT, TITLE) == phrases

    # Deterministic, also across instances and when batched with other documents.
    again = KeyphraseTeacher(encoder, max_queries=8).complete(
        [TeacherRequest("p2", [], title="Velora 7", metadata=OTHER), request]
    )
    assert again[1].text == response.text
    assert_good_keyphrases(phrases_of(again[0]), OTHER, "Velora 7", 8)


def test_keyphrase_teacher_diversity_changes_the_selection(encoder):
    relevant = KeyphraseTeacher(encoder, diversity=0.0, max_queries=6).keyphrases(PRODUCT, TITLE)
    diverse = KeyphraseTeacher(encoder, diversity=0.9, max_queries=6).keyphrases(PRODUCT, TITLE)
    assert relevant != diverse
    assert relevant[0] == diverse[0]  # MMR starts with the most relevant phrase either way


def test_keyphrase_fallback_without_encoder():
    teacher = KeyphraseTeacher(max_queries=10)
    assert teacher.model == "yake-mmr"
    progress: list[str] = []
    responses = teacher.complete(
        [TeacherRequest("p1", [], title=TITLE, metadata=PRODUCT), TeacherRequest("p2", [], "Velora 7", metadata=OTHER)],
        progress=progress.append,
    )
    assert [r.key for r in responses] == ["p1", "p2"]
    assert_good_keyphrases(phrases_of(responses[0]), PRODUCT, TITLE, 10)
    assert_good_keyphrases(phrases_of(responses[1]), OTHER, "Velora 7", 10)
    assert [r.text for r in KeyphraseTeacher(max_queries=10).complete([TeacherRequest("p1", [], TITLE, PRODUCT)])] == [
        responses[0].text
    ]
    assert progress[-1].startswith("teacher keyphrase:yake-mmr: 2/2 done")


def test_keyphrase_teacher_with_nothing_to_say():
    teacher = KeyphraseTeacher()
    empty, only_title, stopwords = teacher.complete(
        [
            TeacherRequest("e", [], title="X", metadata=""),
            TeacherRequest("t", [], title="Zorbex X-200", metadata="Zorbex X-200. 2024!"),
            TeacherRequest("s", [], title="", metadata="it is what it is, and so on"),
        ]
    )
    for response in (empty, only_title, stopwords):
        assert response.ok and response.text == "Queries:"


@pytest.mark.slow
def test_keyphrase_teacher_drops_boilerplate_and_follows_the_datasets_queries(encoder):
    from skim_assets.lib.demo import FILLER, generate_demo_world

    world = generate_demo_world()
    corpus = [d["text"] for d in world["documents"]]
    train_queries = [q["text"] for q in world["queries"] if q["split"] == "train"]
    plain = KeyphraseTeacher(encoder, max_queries=10)
    adapted = KeyphraseTeacher(encoder, max_queries=10)
    adapted.adapt_to_dataset(corpus, train_queries)
    assert adapted.describe()["corpus_documents"] == len(corpus)
    assert adapted.describe()["reference_queries"] == len(set(train_queries))
    # boilerplate: a phrase wholly inside a filler sentence that many products share, or the template's wording
    fillers = [" ".join(f.lower().replace(",", " ").rstrip(".").split()) for f in FILLER]

    def is_boilerplate(phrase: str) -> bool:
        return any(phrase in f for f in fillers) or phrase in {"key ingredient", "people use", "formula is built"}

    facts_found, boilerplate_before, boilerplate_after = 0, 0, 0
    for doc in world["documents"][:40]:
        before = plain.keyphrases(doc["text"], doc["title"])
        after = adapted.keyphrases(doc["text"], doc["title"])
        boilerplate_before += sum(map(is_boilerplate, before))
        boilerplate_after += sum(map(is_boilerplate, after))
        text = doc["text"].lower()
        facts_found += sum(word in " ".join(after) for word in ("migraine", "lavender", "lyon") if word in text)
    assert boilerplate_before > 10 and boilerplate_after == 0
    assert facts_found > 0
    with pytest.raises(ValueError):
        KeyphraseTeacher(max_document_frequency=0.0)


def test_keyphrase_ngram_range_is_respected():
    phrases = KeyphraseTeacher(ngram_range=(2, 2), max_queries=5).keyphrases(PRODUCT, TITLE)
    assert phrases and all(len(p.split()) == 2 for p in phrases)
    with pytest.raises(ValueError):
        KeyphraseTeacher(ngram_range=(2, 1))


# --------------------------------------------------------------------------------------------------------------
# Factory and the local HF teacher


def test_build_teacher_kinds(tmp_path):
    openai = build_teacher("openai", base_url="http://127.0.0.1:9/v1", model="gpt-x", api_key=API_KEY)
    assert isinstance(openai, OpenAIChatTeacher) and openai.backend == "openai" and API_KEY not in repr(openai)
    keyphrase = build_teacher("keyphrase", max_queries=4)
    assert isinstance(keyphrase, KeyphraseTeacher) and keyphrase.model == "yake-mmr"
    local = build_teacher("hf-local", model_path=tmp_path / "my-smol-model", max_new_tokens=8)
    assert isinstance(local, LocalHFTeacher) and local.backend == "hf-local" and local.model == "my-smol-model"
    assert local.describe()["max_new_tokens"] == 8
    for teacher in (openai, keyphrase, local):
        assert isinstance(teacher, Teacher)
    with pytest.raises(ValueError, match="unknown teacher kind"):
        build_teacher("gpt5-magic")


def test_the_teacher_registry_is_the_one_list_of_kinds_and_an_unknown_kind_is_refused():
    """TEACHER_KINDS, build_teacher and the `teacher` resource (its kinds, the settings it gives each) all read
    TEACHERS; an unknown kind is refused by the factory, the resource's config and its environment variable."""
    from skim_assets.lib.teachers import TEACHER_KINDS, TEACHERS, UnknownTeacherKind, teacher_kind
    from skim_assets.resources import TeacherResource
    from skim_assets.resources.teacher import SETTINGS_OF_KIND

    assert TEACHER_KINDS == tuple(TEACHERS) == ("openai", "keyphrase", "hf-local")
    assert tuple(SETTINGS_OF_KIND) == TEACHER_KINDS  # every kind can be chosen from the resource
    assert all(f"'{kind}'" in TeacherResource.model_fields["kind"].description for kind in TEACHER_KINDS)
    assert all(TEACHERS[k].name == k and TEACHERS[k].description for k in TEACHER_KINDS)
    assert teacher_kind(" KeyPhrase ") is TEACHERS["keyphrase"]
    known = re.escape("; expected one of openai, keyphrase, hf-local")
    with pytest.raises(UnknownTeacherKind, match=rf"unknown teacher kind 'gpt5-magic'{known}"):
        build_teacher("gpt5-magic")
    with pytest.raises(ValueError, match=rf"unknown teacher kind 'gpt5-magic'{known}"):
        TeacherResource(kind="gpt5-magic")  # the resource's config, refused when it is given


def test_every_teacher_offers_the_protocol_hooks_with_defaults(tmp_path):
    """adapt_to_dataset, stats and batches are part of the protocol: callers use them without probing; a teacher
    with nothing to adapt or count inherits the defaults."""
    openai = build_teacher("openai", base_url="http://127.0.0.1:9/v1", model="gpt-x", api_key=API_KEY)
    keyphrase = build_teacher("keyphrase")
    local = build_teacher("hf-local", model_path=tmp_path / "absent-model")
    for teacher in (openai, keyphrase, local):
        assert isinstance(teacher, Teacher)
        assert teacher.adapt_to_dataset(["some metadata text"], ["a query"]) is None
        assert isinstance(teacher.stats, dict) and not teacher.batches
    assert keyphrase.stats == {} == local.stats and keyphrase.corpus_size == 1  # keyphrase adapts; stats: default
    assert openai.stats["requests_sent"] == 0 and openai.batches == []  # its own counters and batch list
    assert local.describe()["model_path"].endswith("absent-model")  # the default adapt loaded nothing


def test_build_keyphrase_teacher_from_encoder_path():
    from skim_assets.lib.encoders import default_encoder_path

    teacher = build_teacher("keyphrase", encoder=default_encoder_path())
    assert teacher.model.startswith("keybert-mmr:") and teacher.keyphrases(OTHER, "Velora 7")


def test_prompts_and_parsing_round_trip_through_a_teacher(httpserver):
    """Integration with the prompt builder and the parser when both modules exist."""
    prompts = pytest.importorskip("skim_assets.lib.prompts")
    parsing = pytest.importorskip("skim_assets.lib.parsing")
    msgs = prompts.teacher_messages(TITLE, PRODUCT, ["zorbex x200"], "url-queries")
    assert isinstance(msgs, list) and all({"role", "content"} <= set(m) for m in msgs)
    answer = f"{prompts.QUERIES_HEADER}\ncordless espresso machine\nespresso maker for camping\nmilk frother for lattes"
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion(answer))
    [response] = fast_teacher(httpserver).complete([TeacherRequest("p1", msgs, TITLE, PRODUCT)])
    parsed = parsing.parse_generated_queries(
        response.text, title=TITLE, known_queries=["zorbex x200"], max_queries=10, style="url-queries"
    )
    assert "cordless espresso machine" in [q.lower() for q in parsed.queries]
    # The keyphrase teacher speaks the same output format.
    offline = KeyphraseTeacher().complete([TeacherRequest("p1", msgs, TITLE, PRODUCT)])[0]
    parsed = parsing.parse_generated_queries(
        offline.text, title=TITLE, known_queries=[], max_queries=10, style="url-queries"
    )
    assert len(parsed.queries) >= 3


@pytest.fixture(scope="module")
def smol_folder(tmp_path_factory) -> Path:
    from skim_assets.lib.slm import export_gguf_as_hf

    folder = tmp_path_factory.mktemp("teacher-lm") / "SmolLM2-135M-Instruct"
    try:
        export_gguf_as_hf(folder)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return folder


@pytest.fixture
def one_torch_thread():
    """On a shared, oversubscribed 2-core machine OpenMP's spinning threads make small matmuls ~100x slower;
    one thread keeps this test at seconds either way (correctness, not speed, is under test)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_local_hf_teacher_generates_with_a_chat_model(smol_folder, one_torch_thread):
    teacher = LocalHFTeacher(smol_folder, max_new_tokens=16, batch_size=2, seed=3, device="cpu")
    assert teacher.model == "SmolLM2-135M-Instruct" and teacher.backend == "hf-local"
    requests = [
        TeacherRequest("d1", [{"role": "user", "content": "Write one search query about espresso machines."}]),
        TeacherRequest("d2", [{"role": "user", "content": "List two words about the sea."}]),
    ]
    progress: list[str] = []
    responses = teacher.complete(requests, progress=progress.append)
    assert [r.key for r in responses] == ["d1", "d2"]
    for response in responses:
        assert response.ok and isinstance(response.text, str) and response.text.strip()
        assert "<|im_start|>" not in response.text  # only the new tokens, decoded without specials
        assert 1 <= response.completion_tokens <= 16 and response.prompt_tokens > 10
    assert teacher.complete(requests)[0].text == responses[0].text  # seeded sampling
    assert progress[-1].startswith("teacher hf-local:SmolLM2-135M-Instruct: 2/2 done")


def test_keyphrase_teacher_never_uses_a_placeholder_word():
    # preprocessed corpora (NFCorpus) write every number as "num": a word in most documents is no content
    corpus = [f"zinc{i} intake{i} num serum{i} levels{i} num deficiency{i} risk{i}" for i in range(60)]
    teacher = KeyphraseTeacher(max_queries=10)
    teacher.adapt_to_dataset(corpus, [])
    phrases = teacher.keyphrases(corpus[0], "")
    assert phrases and not any("num" in p.split() for p in phrases)
    assert any("zinc0" in p for p in phrases)
