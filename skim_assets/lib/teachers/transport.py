"""The teacher's HTTP client: the `openai` SDK's own, except that `timeout_s` bounds each attempt as a whole.

httpx's timeouts bound one socket operation each (connect, one read, one write), never their sum: a server that
sends its answer a byte every half second never trips a 3 s read timeout, and one request took 42 s. Here every
socket operation of an attempt waits at most until `total_s` after the attempt began, then fails as httpx's own
timeout would (so the SDK retries it, and reports `APITimeoutError`)."""

from __future__ import annotations

import threading
import time
import urllib.request
from urllib.parse import urlsplit

import httpcore2
import httpx2

# `.deadline`: the time.monotonic() by which this thread's current attempt must be done. Per thread, because a
# sync attempt (headers, then the body, read after `handle_request` returns) runs on one thread from start to end.
_attempt = threading.local()


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` cut to what is left of the current attempt; `error` once nothing is left."""
    deadline = getattr(_attempt, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request ran past its timeout")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore2.NetworkStream:
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, backend: httpcore2.NetworkBackend):
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx2.HTTPTransport):
    """httpx's transport, each attempt (`handle_request` and the reading of its body) over `total_s` after it
    began."""

    def __init__(self, total_s: float, **kwargs):
        super().__init__(**kwargs)
        self.total_s = float(total_s)
        # httpx's transport takes no network backend, its connection pool does: wrapped in place (a pool makes its
        # connections when first needed). A change of these internals fails the trickling-server tests.
        self._pool._network_backend = _DeadlineBackend(self._pool._network_backend)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        _attempt.deadline = time.monotonic() + self.total_s  # each retry of the SDK comes through here afresh
        return super().handle_request(request)


def deadline_http_client(url: str, total_s: float):
    """The SDK's default client on a `DeadlineTransport`, with the proxy the environment names for `url`
    (HTTPS_PROXY, NO_PROXY...): httpx reads those only when it picks the transport itself."""
    import openai

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = None
    if not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy = proxies.get(parts.scheme) or proxies.get("all")
    return openai.DefaultHttpxClient(transport=DeadlineTransport(total_s, proxy=proxy))
