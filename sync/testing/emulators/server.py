"""Provider-neutral machinery for local API emulators: HTTP server, fault injection, quotas, request log.

An emulator subclasses :class:`EmulatorServer` and implements :meth:`EmulatorServer.route`
(and, to shape error bodies like its provider, :meth:`EmulatorServer.error_response`).
The base class owns everything that is the same for Google and Microsoft Graph:

- a real ``ThreadingHTTPServer`` on 127.0.0.1 in a background thread, HTTP/1.1 keep-alive
  (httplib2 and requests reuse connections), port 0 = a free port; optionally TLS
  (``ssl_context=``; the handshake runs in the connection's thread, see :mod:`.tls`);
- fault injection that a test queues and the next matching requests consume:
  ``fail_next`` (answer an error without touching state), ``lose_next_response`` (apply
  the request, then drop the connection unanswered), ``timeout_next`` (answer late);
- ``latency`` added to every request, a ``clock`` hook for time-based state;
- a sliding-window rate counter (:class:`SlidingWindow`) for quota emulation;
- a request log with counters.

State changes happen under one lock (``self.lock``); sleeps happen outside it.
"""

from __future__ import annotations

import json
import math
import socket
import ssl
import struct
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "EmulatorServer",
    "format_retry_after",
    "FakeClock",
    "Fault",
    "LoggedRequest",
    "Request",
    "Response",
    "SlidingWindow",
]


class FakeClock:
    """A monotonic clock a test moves by hand: ``emu.clock = clock = FakeClock(); clock.advance(61)``."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class Request:
    method: str
    path: str  # percent-decoded path, without query
    raw_path: str  # as sent, with the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    account: str | None = None  # who the request acts for, set by the emulator
    kind: str = "other"  # "api", "token", ... set by the emulator
    info: dict[str, Any] = field(default_factory=dict)  # provider facts copied into the log

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def params(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def segments(self) -> list[str]:
        """Path segments, each percent-decoded on its own (so an encoded '/' stays inside one)."""
        raw = urlsplit(self.raw_path).path
        return [unquote(s) for s in raw.split("/") if s]

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True) if self.body else {}
        return {k: v[-1] for k, v in parsed.items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        h = {"Content-Type": "application/json; charset=UTF-8"}
        h.update(headers or {})
        return cls(status, json.dumps(payload).encode("utf-8"), h)

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/html; charset=UTF-8") -> Response:
        return cls(status, text.encode("utf-8"), {"Content-Type": content_type})

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        return cls(status)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Response:
        return cls(status, b"", {"Location": location})


@dataclass
class Fault:
    """One queued fault. ``kind`` is "fail", "lose" or "timeout"."""

    kind: str
    status: int = 500
    reason: str | None = None
    message: str | None = None
    retry_after: float | str | None = None
    body: Any = None  # dict -> JSON; str/bytes -> sent raw (e.g. an HTML proxy page)
    content_type: str | None = None
    path_contains: str | None = None
    method: str | None = None
    seconds: float = 0.0
    applied: bool = True  # timeout: is the request applied before the late answer?
    reset: bool = True  # lose: RST (client sees ECONNRESET) vs FIN (client sees a closed connection)

    def matches(self, req: Request, in_default_scope: bool) -> bool:
        if self.method and self.method.upper() != req.method:
            return False
        if self.path_contains is not None:
            return self.path_contains in req.raw_path
        return in_default_scope


@dataclass
class LoggedRequest:
    time: float
    method: str
    path: str
    query: dict[str, list[str]]
    status: int | None
    account: str | None
    kind: str
    fault: str | None  # None, "fail", "lose", "timeout"
    info: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # Provider-specific facts (send_updates, has_attendees, ...) read like attributes.
        info = self.__dict__.get("info", {})
        if name in info:
            return info[name]
        raise AttributeError(name)

    def get(self, name: str, default: Any = None) -> Any:
        if name in self.__dataclass_fields__:
            return getattr(self, name)
        return self.info.get(name, default)


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds of ``clock``."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._hits.setdefault(key, deque())
        edge = now - self.window
        while q and q[0] <= edge:
            q.popleft()
        return q

    def used(self, key: str, now: float) -> int:
        return len(self._trim(key, now))

    def would_exceed(self, key: str, limit: int | None, now: float) -> bool:
        return limit is not None and self.used(key, now) >= limit

    def add(self, key: str, now: float) -> None:
        self._trim(key, now).append(now)

    def seconds_until_free(self, key: str, now: float) -> int:
        q = self._trim(key, now)
        if not q:
            return 0
        return max(1, math.ceil(q[0] + self.window - now))

    def keys(self) -> list[str]:
        return list(self._hits)

    def clear(self) -> None:
        self._hits.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        ctx = self.emulator.ssl_context
        if ctx is not None:
            # Handshake later, in the connection's own thread (_Handler.setup): a client that
            # connects and stalls must not block the accept loop.
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "calsync-emulator/1"
    server: _Server

    _tls_failed = False

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.settimeout(10)
                self.request.do_handshake()
                self.request.settimeout(None)
            except (ssl.SSLError, OSError):  # e.g. a client that does not trust the test CA
                self._tls_failed = True
        super().setup()
        with self.server.conn_lock:
            self.server.open_connections.add(self.connection)

    def handle(self) -> None:
        if not self._tls_failed:
            super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=unquote(split.path),
            raw_path=self.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        emu = self.server.emulator
        resp, fault = emu._process(req)
        if fault is not None and fault.kind == "lose":
            self._drop(reset=fault.reset)
            return
        if fault is not None and fault.kind == "timeout":
            emu._sleep(fault.seconds)
            if not fault.applied:
                self._drop(reset=False)
                return
            self.close_connection = True  # never let a late answer meet the client's next request
        assert resp is not None
        self._write(resp)

    def _write(self, resp: Response) -> None:
        try:
            self.send_response(resp.status)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            if resp.status not in (204, 304):
                self.send_header("Content-Length", str(len(resp.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if resp.body and self.command != "HEAD" and resp.status not in (204, 304):
                self.wfile.write(resp.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        try:
            if reset:
                # SO_LINGER 0: close() sends RST, the client's read fails with ECONNRESET.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class EmulatorServer:
    """Base class: HTTP server lifecycle, faults, latency, request log. Subclasses implement ``route``."""

    #: kinds of request that faults without ``path_contains`` apply to (token endpoints excluded,
    #: so a queued 500 hits the API call and not the refresh that precedes it).
    default_fault_kinds: frozenset[str] = frozenset({"api"})

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, start: bool = True,
                 clock: Callable[[], float] | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self._port = port
        self.ssl_context = ssl_context  # set: serve https (fixed for the server's lifetime)
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = clock or time.monotonic
        self.latency: float = 0.0
        self.internal_errors: list[str] = []  # tracebacks of emulator bugs (answered as 500)
        self._faults: list[Fault] = []
        self._log: list[LoggedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        if start:
            self.start()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self._port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes injected sleeps
        server.shutdown()
        with server.conn_lock:
            conns = list(server.open_connections)
        for conn in conns:  # idle keep-alive connections would otherwise keep handler threads alive
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """Root URL with a trailing slash, e.g. ``http://127.0.0.1:PORT/`` (``https`` with TLS)."""
        return f"{self.scheme}://{self.host}:{self._port}/"

    # ---- fault injection -------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, reason: str | None = None, *,
                  retry_after: float | str | None = None, body: Any = None, message: str | None = None,
                  content_type: str | None = None, path_contains: str | None = None,
                  method: str | None = None) -> None:
        """Answer the next ``n`` matching requests with ``status`` without applying them.

        Matching: ``path_contains`` (substring of the raw path and query; may target any endpoint,
        e.g. "/token") and ``method``; without ``path_contains`` only API requests match.
        ``body``: dict → JSON as given; str/bytes → sent raw (``content_type`` default text/html);
        None → the provider's error shape with ``reason``. ``Retry-After`` only when given.
        """
        self._queue(n, Fault("fail", status=status, reason=reason, message=message, retry_after=retry_after,
                             body=body, content_type=content_type, path_contains=path_contains, method=method))

    def lose_next_response(self, n: int = 1, *, reset: bool = True, path_contains: str | None = None,
                           method: str | None = None) -> None:
        """Apply the next ``n`` matching requests, then drop the connection without answering.

        ``reset=True`` closes with RST: the client's read fails with ``ConnectionResetError``.
        ``reset=False`` closes cleanly (FIN): httplib2 treats that as a stale keep-alive connection
        and silently re-sends the request once (even a POST), so one lost response surfaces to
        the caller as the answer to a duplicate request (e.g. 409 for an insert).
        """
        self._queue(n, Fault("lose", reset=reset, path_contains=path_contains, method=method))

    def timeout_next(self, n: int = 1, seconds: float = 30.0, *, applied: bool = True,
                     path_contains: str | None = None, method: str | None = None) -> None:
        """Answer the next ``n`` matching requests ``seconds`` late (connection closed afterwards).

        ``applied=True``: the request takes effect at once, only the answer is late (a client
        timing out does not know its write landed). ``applied=False``: nothing is applied and the
        connection is closed after the delay.
        """
        self._queue(n, Fault("timeout", seconds=seconds, applied=applied, path_contains=path_contains,
                             method=method))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self.lock:
            return len(self._faults)

    def _queue(self, n: int, fault: Fault) -> None:
        with self.lock:
            for _ in range(n):
                self._faults.append(Fault(**fault.__dict__))

    def _take_fault(self, req: Request) -> Fault | None:
        in_scope = req.kind in self.default_fault_kinds
        with self.lock:
            for i, fault in enumerate(self._faults):
                if fault.matches(req, in_scope):
                    return self._faults.pop(i)
        return None

    # ---- request log -----------------------------------------------------------------------

    @property
    def request_log(self) -> list[LoggedRequest]:
        with self.lock:
            return list(self._log)

    def requests(self, *, path_contains: str | None = None, **filters: Any) -> list[LoggedRequest]:
        """Logged requests whose fields (or provider ``info`` keys) equal every filter."""
        out = []
        for entry in self.request_log:
            if path_contains is not None and path_contains not in entry.path:
                continue
            if all(entry.get(k) == v for k, v in filters.items()):
                out.append(entry)
        return out

    def count(self, *, path_contains: str | None = None, **filters: Any) -> int:
        """E.g. ``count(status=429)``, ``count(kind="api", method="POST")``, ``count(has_attendees=True)``."""
        return len(self.requests(path_contains=path_contains, **filters))

    def clear_log(self) -> None:
        with self.lock:
            self._log.clear()

    # ---- subclass hooks --------------------------------------------------------------------

    def classify(self, req: Request) -> None:
        """Set ``req.kind`` (and ``req.account`` if it can be read cheaply) before faults are matched."""

    def route(self, req: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_response(self, req: Request, status: int, reason: str | None, message: str | None,
                       retry_after: float | str | None = None) -> Response:
        """The provider's error shape. Subclasses override; this one is a neutral JSON body."""
        headers = {"Retry-After": format_retry_after(retry_after)} if retry_after is not None else {}
        return Response.json(status, {"error": {"code": status, "reason": reason, "message": message}}, headers)

    # ---- processing ------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _process(self, req: Request) -> tuple[Response | None, Fault | None]:
        if self.latency:
            self._sleep(self.latency)
        try:
            self.classify(req)
        except Exception:  # noqa: BLE001 - an emulator bug must be visible, not a silent 500
            self.internal_errors.append(traceback.format_exc())
        fault = self._take_fault(req)
        resp: Response | None
        if fault is not None and fault.kind == "fail":
            resp = self._fault_response(req, fault)
        elif fault is not None and fault.kind == "timeout" and not fault.applied:
            resp = None
        else:
            resp = self._route_safely(req)
        self._record(req, resp, fault)
        return resp, fault

    def _record(self, req: Request, resp: Response | None, fault: Fault | None) -> None:
        """Append one request to the log (subclasses that answer outside ``_process`` use it too)."""
        with self.lock:
            self._log.append(LoggedRequest(
                time=self.clock(), method=req.method, path=req.path, query=req.query,
                status=resp.status if resp is not None else None, account=req.account, kind=req.kind,
                fault=fault.kind if fault is not None else None, info=dict(req.info),
            ))

    def _route_safely(self, req: Request) -> Response:
        try:
            return self.route(req)
        except Exception:  # noqa: BLE001 - recorded in internal_errors, answered as 500
            tb = traceback.format_exc()
            with self.lock:
                self.internal_errors.append(tb)
            return self.error_response(req, 500, "backendError", "Emulator internal error (see internal_errors).")

    def _fault_response(self, req: Request, fault: Fault) -> Response:
        if fault.body is None:
            return self.error_response(req, fault.status, fault.reason, fault.message, fault.retry_after)
        headers = {"Retry-After": format_retry_after(fault.retry_after)} if fault.retry_after is not None else {}
        if isinstance(fault.body, (dict, list)):
            resp = Response.json(fault.status, fault.body, headers)
        else:
            raw = fault.body.encode("utf-8") if isinstance(fault.body, str) else bytes(fault.body)
            headers["Content-Type"] = fault.content_type or "text/html; charset=UTF-8"
            resp = Response(fault.status, raw, headers)
        return resp


def format_retry_after(value: float | str) -> str:
    """A ``Retry-After`` header value: a string as given (an HTTP date), seconds rounded up."""
    if isinstance(value, str):
        return value
    return str(max(0, math.ceil(value)))
