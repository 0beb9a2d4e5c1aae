"""Issue 27, the teacher: each test reproduces one defect found by a hostile user, against a real local HTTP
server (pytest-httpserver, or a bare http.server where the reply's timing matters)."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from skim_assets.lib.teachers import OpenAIChatTeacher, TeacherRequest
from skim_assets.resources import TeacherResource

API_KEY = "sk-proj-PROBE-abcdefghijklmnopqrstuvwxyz0123456789"
CHAT_PATH = "/v1/chat/completions"


def one_request(doc: str = "doc-1") -> list[TeacherRequest]:
    return [TeacherRequest(doc, [{"role": "user", "content": f"Document: {doc}\nQueries:"}])]


def answer(content: str, usage: dict | None = None) -> dict:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = usage
    return body


def teacher_for(server, **settings) -> OpenAIChatTeacher:
    settings = {"model": "gpt-test", "max_retries": 0, **settings}
    return OpenAIChatTeacher(server.url_for("/v1"), **settings)


# -------------------------------------------------------------------- defect 5: run config drops the environment


def _run_with_teacher(run_config: dict | None, seen: dict, cache_dir) -> None:
    from skim_assets.definitions import build_resources

    @dg.asset
    def probe(teacher: TeacherResource) -> None:
        model = teacher.build(cache_dir)
        seen["settings"] = model.describe()
        seen["responses"] = model.complete(one_request())

    run_config = {"resources": {"teacher": {"config": run_config}}} if run_config is not None else None
    # the code location's own teacher resource, built (as at import) with the environment already set
    result = dg.materialize([probe], resources={"teacher": build_resources()["teacher"]}, run_config=run_config)
    assert result.success


@pytest.mark.parametrize("run_config", [
    None,
    {"budget_usd": 5.0},  # what the README calls resource config: the rest must stay as the environment says
    {"kind": "openai", "model": "gpt-other", "timeout_s": 9.0},
])
def test_run_config_on_the_teacher_keeps_the_environment(httpserver, monkeypatch, tmp_path, run_config):
    httpserver.expect_request(CHAT_PATH).respond_with_json(answer("Queries:\nq1"))
    monkeypatch.setenv("SKIM_TEACHER", "openai")
    monkeypatch.setenv("SKIM_TEACHER_BASE_URL", httpserver.url_for("/v1"))
    monkeypatch.setenv("SKIM_TEACHER_MODEL", "gpt-env")
    monkeypatch.setenv("SKIM_TEACHER_API_KEY", API_KEY)
    seen: dict = {}
    _run_with_teacher(run_config, seen, tmp_path / "cache")

    settings = seen["settings"]
    assert settings["backend"] == "openai"
    assert settings["base_url"] == httpserver.url_for("/v1")
    assert settings["model"] == (run_config or {}).get("model", "gpt-env")
    assert settings["budget_usd"] == (run_config or {}).get("budget_usd")
    assert settings["timeout_s"] == (run_config or {}).get("timeout_s", 60.0)
    assert [r.ok for r in seen["responses"]] == [True]
    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_without_environment_the_teacher_is_the_offline_one(monkeypatch):
    for name in ("SKIM_TEACHER", "SKIM_TEACHER_BASE_URL", "SKIM_TEACHER_MODEL", "SKIM_TEACHER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    teacher = TeacherResource()
    assert (teacher.setting("kind"), teacher.setting("base_url"), teacher.setting("api_key")) == ("keyphrase", "", None)
    monkeypatch.setenv("SKIM_TEACHER", "hf-local")
    assert TeacherResource().setting("kind") == "hf-local"
    assert TeacherResource(kind="keyphrase").setting("kind") == "keyphrase"  # what is set wins over the environment


# ------------------------------------------------------------------------ defect 6: timeout_s bounds one request


class _Trickler(BaseHTTPRequestHandler):
    """Answers a chat completion one byte every `server.interval` seconds: from the status line on when
    `server.trickle_headers`, else from the body on. After `server.trickled` bytes it sends the rest at once, so
    a client that waits for it all finishes (in a few seconds) instead of hanging the test."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(answer("Queries:\nslow answer", {"prompt_tokens": 10, "completion_tokens": 3})).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        server = self.server
        slow = head + body if server.trickle_headers else body
        try:
            if not server.trickle_headers:
                self.wfile.write(head)
                self.wfile.flush()
            for i in range(server.trickled):
                self.wfile.write(slow[i:i + 1])
                self.wfile.flush()
                time.sleep(server.interval)
            self.wfile.write(slow[server.trickled:])
            self.wfile.flush()
        except OSError:  # the client gave up: what the test wants
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def trickling_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickler)
    server.daemon_threads = True
    server.interval, server.trickled, server.trickle_headers = 0.25, 24, False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("trickle_headers", [False, True])
def test_timeout_bounds_a_whole_request_to_a_trickling_server(trickling_server, trickle_headers):
    trickling_server.trickle_headers = trickle_headers
    base_url = f"http://127.0.0.1:{trickling_server.server_address[1]}/v1"
    teacher = OpenAIChatTeacher(base_url, "gpt-test", timeout_s=1.0, max_retries=0)
    started = time.monotonic()
    [response] = teacher.complete(one_request())
    seconds = time.monotonic() - started
    # each byte comes well within 1 s, so only a bound on the whole request stops it (it would take ~6 s)
    assert response.error == "timeout (1s) after 1 attempt for document 'doc-1'"
    assert seconds < 1.0 + 0.8


# ------------------------------------------------------------------------------------ rough edges of the teacher


def test_pieces_of_the_key_echoed_by_the_server_are_redacted_everywhere(httpserver, tmp_path, caplog):
    prefix, middle = API_KEY[:20], API_KEY[13:22]  # 20 and 9 characters of the key
    short = API_KEY[:7]  # 7 characters: too short to count as the key (an OpenAI key's "sk-proj" prefix)

    def handler(request):
        from werkzeug import Response

        doc = request.get_json()["messages"][0]["content"].split()[1]
        if doc == "doc-echo":
            return Response(json.dumps(answer(f"Queries:\nkey {prefix}\nmid {middle}\n{short} q")),
                            content_type="application/json")
        if doc == "doc-401":
            return Response(f"Incorrect API key provided: {prefix}*****", status=401)
        return Response(f"<html>bad gateway for {middle}", status=200)  # not JSON: the "malformed" snippet

    httpserver.expect_request(CHAT_PATH).respond_with_handler(handler)
    teacher = teacher_for(httpserver, api_key=API_KEY, cache_dir=tmp_path / "cache")
    requests = [*one_request("doc-echo"), *one_request("doc-401"), *one_request("doc-html")]
    with caplog.at_level(logging.DEBUG):
        echo, rejected, html = teacher.complete(requests)

    assert echo.ok and "key ***" in echo.text and "mid ***" in echo.text and f"{short} q" in echo.text
    assert rejected.error.startswith("HTTP 401") and "Incorrect API key provided: ***" in rejected.error
    assert html.error.startswith("malformed response") and "bad gateway for ***" in html.error
    stored = [p.read_text() for p in (tmp_path / "cache").rglob("*.json")]
    assert stored
    for text in [echo.text, rejected.error, html.error, caplog.text, *stored]:
        assert prefix[:8] not in text and middle not in text


@pytest.mark.parametrize("field, value", [("completion_tokens", -5000), ("prompt_tokens", "many")])
def test_invalid_token_usage_is_a_malformed_answer_and_costs_never_go_down(httpserver, tmp_path, field, value):
    usage = {"prompt_tokens": 100, "completion_tokens": 20, field: value}
    httpserver.expect_request(CHAT_PATH).respond_with_json(answer("Queries:\nq1", usage))
    teacher = teacher_for(httpserver, cache_dir=tmp_path / "cache", budget_usd=0.01,
                          usd_per_1k_prompt_tokens=0.01, usd_per_1k_completion_tokens=0.03)
    [response] = teacher.complete(one_request())
    assert response.error == (f"malformed response for document 'doc-1': usage.{field} is {value!r}, "
                              "not a count of tokens")
    assert teacher.stats["cost_usd"] == 0.0 and not list((tmp_path / "cache").rglob("*.json"))


def test_a_negative_price_is_refused():
    with pytest.raises(ValueError, match="usd_per_1k_completion_tokens must be >= 0"):
        OpenAIChatTeacher("http://127.0.0.1:9/v1", "gpt-test", usd_per_1k_completion_tokens=-1.0)


def test_a_huge_answer_is_refused_not_stored_but_paid_for(httpserver, tmp_path):
    huge = "Queries:\n" + "buy cheap widgets now\n" * 500_000  # 10.5 MB though max_tokens is 200
    usage = {"prompt_tokens": 100, "completion_tokens": 2_500_000}
    httpserver.expect_request(CHAT_PATH).respond_with_json(answer(huge, usage))
    teacher = teacher_for(httpserver, api_key=API_KEY, cache_dir=tmp_path / "cache", usd_per_1k_completion_tokens=0.001)
    [response] = teacher.complete(one_request())
    assert response.text is None
    assert response.error == (f"answer too long for document 'doc-1': {len(huge)} characters, more than "
                              "max_answer_chars=20000; not stored")
    assert not list((tmp_path / "cache").rglob("*.json"))
    assert teacher.stats["cost_usd"] == pytest.approx(2.5)  # the server billed it: the budget must see it


def test_an_unknown_teacher_kind_from_the_environment_or_run_config_is_refused(monkeypatch, tmp_path):
    from skim_assets.lib.teachers import UnknownTeacherKind

    monkeypatch.setenv("SKIM_TEACHER", "gpt5-magic")
    with pytest.raises(UnknownTeacherKind, match=r"unknown teacher kind 'gpt5-magic' \(from \$SKIM_TEACHER\); "
                                                 "expected one of openai, keyphrase, hf-local"):
        TeacherResource().build(tmp_path)

    @dg.asset
    def probe(teacher: TeacherResource) -> None:
        raise AssertionError("the step must not start with an unknown teacher kind")

    result = dg.materialize([probe], resources={"teacher": TeacherResource()}, raise_on_error=False,
                            run_config={"resources": {"teacher": {"config": {"kind": "hf-locale"}}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_failure)
    assert "unknown teacher kind 'hf-locale'" in str(failure.event_specific_data.error.to_string())
