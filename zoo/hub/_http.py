"""One HTTP request at a time, bounded in time, with no redirect followed behind zoo's back.

Downloads from a Hub that zoo does not control need three things an ordinary client does not
give: every socket operation within ``timeout`` *and* the whole exchange before a wall-clock
``deadline`` (a server that drips one byte a second never trips a per-read timeout, not even in
the headers), and redirects handed back to the caller, who decides host by host where to go
and whether the token goes along.

Built on the standard library (``urllib`` for proxies from the environment, ``http.client``
underneath), so it does not change with the HTTP library a given ``huggingface_hub`` uses.
"""

from __future__ import annotations

import functools
import http.client
import io
import os
import socket
import ssl
import time
import urllib.error
import urllib.request

CHUNK = 1 << 20


class DeadlineExceeded(TimeoutError):
    """The exchange ran past its wall-clock deadline."""


class _DeadlineSocket:
    """A connected socket whose every receive and send waits at most ``min(timeout, time left)``.

    ``http.client`` reads the status line, the headers and the body through ``makefile``; the
    file made here reads through this object, so all of them are bounded. ``close`` keeps the
    socket open while a file made from it is (as ``socket.socket`` does), since urllib closes
    the connection before the caller reads the body.
    """

    def __init__(self, sock: socket.socket, timeout: float, deadline: float):
        self._sock, self._timeout, self._deadline = sock, timeout, deadline
        self._files = 0
        self._closed = False

    def _bounded(self, operation, *args):
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the server took too long to answer")
        self._sock.settimeout(min(self._timeout, left))
        try:
            return operation(*args)
        except TimeoutError:
            if left < self._timeout:  # it was the deadline, not the per-operation timeout, that ran out
                raise DeadlineExceeded("the server took too long to answer") from None
            raise

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        return self._bounded(self._sock.recv_into, buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._bounded(self._sock.recv, bufsize, flags)

    def sendall(self, data, flags: int = 0) -> None:
        self._bounded(self._sock.sendall, data, flags)

    def makefile(self, mode: str = "rb", buffering: int | None = None, **_ignored) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"zoo's bounded socket reads only, not {mode!r}")
        self._files += 1
        return io.BufferedReader(socket.SocketIO(self, "rb"), buffering or io.DEFAULT_BUFFER_SIZE)

    def _decref_socketios(self) -> None:  # called by socket.SocketIO.close
        self._files -= 1
        if self._closed and self._files <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._files <= 0:
            self._sock.close()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _Bounded:
    """Mixed into http.client's connections: connect within the limits, then bound the socket."""

    def __init__(self, *args, limits: tuple[float, float], **kwargs):
        timeout, deadline = limits
        kwargs["timeout"] = max(0.001, min(timeout, deadline - time.monotonic()))
        super().__init__(*args, **kwargs)
        self._limits = limits

    def connect(self) -> None:
        if time.monotonic() >= self._limits[1]:
            raise DeadlineExceeded("the server took too long to answer")
        super().connect()
        self.sock = _DeadlineSocket(self.sock, *self._limits)


class _HTTPConnection(_Bounded, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Bounded, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, limits: tuple[float, float]):
        super().__init__()
        self._limits = limits

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, limits=self._limits), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, limits: tuple[float, float]):
        super().__init__(context=_ssl_context())
        self._limits = limits

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPSConnection, limits=self._limits), req, context=self._context)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx comes back as an answer: the caller decides where to go next


@functools.lru_cache(maxsize=4)
def _ssl_context_for(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def _ssl_context() -> ssl.SSLContext:
    """Certificates as requests/httpx find them: REQUESTS_CA_BUNDLE, SSL_CERT_FILE, certifi, the system."""
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return _ssl_context_for(cafile)


def request(method: str, url: str, *, headers: dict[str, str], timeout: float, deadline: float):
    """Send one request; the answer (2xx, 3xx, 4xx or 5xx alike) has ``status``, ``headers``,
    ``read1`` and ``close``. Raises OSError (``TimeoutError``, ``DeadlineExceeded``, ``URLError``)
    or ``http.client.HTTPException`` when no answer comes within the limits."""
    limits = (timeout, deadline)
    opener = urllib.request.build_opener(_NoRedirect, _HTTPHandler(limits), _HTTPSHandler(limits))
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        return opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as answer:
        return answer


NETWORK_ERRORS = (OSError, http.client.HTTPException)
