"""The Lambda Runtime API (`/2018-06-01/runtime/...`) for ONE bootstrap process.

Each process generation gets a server of its own on a fresh 127.0.0.1 port: a request still in
flight from a process that was killed (timeout, crash) can only ever reach its own, closed
server, never take the next invocation. Within a server, a `next` whose client has gone away
is dropped before a job is handed to it.
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger(__name__)

PREFIX = "/2018-06-01/runtime"
_RESPONSE = re.compile(rf"^{PREFIX}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)$")
MAX_BODY = 32 * 1024 * 1024


@dataclass
class Job:
    request_id: str
    payload: bytes
    deadline_ms: int
    invoked_function_arn: str
    trace_id: str
    done: threading.Event = field(default_factory=threading.Event)
    body: bytes = b""
    is_error: bool = False


class RuntimeApi:
    """Serves one process generation; hand jobs over with `submit`, read results from the job."""

    def __init__(self, generation: int, label: str) -> None:
        self.generation = generation
        self.label = label
        self.first_next = threading.Event()
        self.init_error: bytes | None = None
        self._cond = threading.Condition()
        self._pending: Job | None = None
        self._current: Job | None = None
        self._closed = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"runtime-api-{label}-g{generation}",
            daemon=True,
        )
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def submit(self, job: Job) -> None:
        with self._cond:
            self._pending = job
            self._cond.notify_all()

    def withdraw(self, job: Job) -> None:
        """Forgets `job` (timed out or abandoned): a late response for it is refused."""
        with self._cond:
            if self._pending is job:
                self._pending = None
            if self._current is job:
                self._current = None

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- called by the handler threads

    def take(self, conn: socket.socket) -> Job | None:
        self.first_next.set()
        with self._cond:
            while not self._closed:
                if self._pending is not None:
                    if _peer_closed(conn):
                        return None
                    job, self._pending = self._pending, None
                    self._current = job
                    return job
                self._cond.wait(0.2)
                if self._pending is None and _peer_closed(conn):
                    return None
        return None

    def complete(self, request_id: str, body: bytes, is_error: bool) -> bool:
        with self._cond:
            job = self._current
            if job is None or job.request_id != request_id:
                return False
            self._current = None
        job.body, job.is_error = body, is_error
        job.done.set()
        return True

    def report_init_error(self, body: bytes) -> None:
        with self._cond:
            if self.init_error is None:
                self.init_error = body


def _peer_closed(conn: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: RuntimeApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        LOG.debug("runtime api %s: " + format, self.server.api.label, *args)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", (headers or {}).get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(8)
                if len(out) > MAX_BODY:
                    raise ValueError("body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path != f"{PREFIX}/invocation/next":
            self._send(404, b'{"errorMessage":"not found","errorType":"NotFound"}')
            return
        job = self.server.api.take(self.connection)
        if job is None:
            # Environment stopping, or the client went away: no answer, just close.
            self.close_connection = True
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": job.request_id,
            "Lambda-Runtime-Deadline-Ms": str(job.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": job.invoked_function_arn,
            "Lambda-Runtime-Trace-Id": job.trace_id,
        }
        try:
            self._send(200, job.payload, headers)
        except OSError:
            LOG.warning("runtime api %s: could not hand invocation %s to the runtime", self.server.api.label, job.request_id)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        api = self.server.api
        try:
            body = self._body()
        except ValueError:
            self._send(413, b'{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}')
            self.close_connection = True
            return
        if self.path == f"{PREFIX}/init/error":
            api.report_init_error(_error_body(body, self.headers.get("Lambda-Runtime-Function-Error-Type")))
            self._send(202, b'{"status":"OK"}')
            return
        m = _RESPONSE.match(self.path)
        if not m:
            self._send(404, b'{"errorMessage":"not found","errorType":"NotFound"}')
            return
        is_error = m.group("kind") == "error"
        if is_error:
            body = _error_body(body, self.headers.get("Lambda-Runtime-Function-Error-Type"))
        if api.complete(m.group("id"), body, is_error):
            self._send(202, b'{"status":"OK"}')
        else:
            self._send(400, b'{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}')


def _error_body(body: bytes, error_type: str | None) -> bytes:
    """The error document as Lambda returns it: the runtime's JSON, or one built from the header."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        if error_type and "errorType" not in doc:
            doc["errorType"] = error_type
            return json.dumps(doc).encode()
        return body
    return json.dumps(
        {"errorMessage": body.decode("utf-8", "replace"), "errorType": error_type or "Runtime.Unknown"}
    ).encode()
