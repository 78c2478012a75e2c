"""``spanflow serve``: the web viewer plus an OTLP/HTTP trace receiver writing into the store.

Any OpenTelemetry SDK can export to it (``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``):
``POST /v1/traces`` takes protobuf or OTLP/JSON, optionally gzip compressed, and every received
trace becomes a run (see :func:`spanflow.exporters.otlp_receiver.decode_request`).

Answers follow the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse`` (partial
success counts the spans that could not be read), 400 for an undecodable body, 413 over the size
limit, 415 for other content types, 503 with ``Retry-After`` when the writer is behind. Error
bodies are a ``google.rpc.Status`` in the request's encoding.

One writer thread owns the store connection; request threads hand it batches through a bounded
queue and wait for their batch to be committed, so a 200 means the spans are on disk and memory
stays bounded however fast clients send. The receiver listens on 127.0.0.1 only and checks the
``Host`` header, and a web page cannot post protobuf or JSON cross-origin without a CORS
preflight, which it never answers: a browser tab cannot write into the store.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import spanflow.exporters.otlp_receiver as otlp
from spanflow.errors import ConfigurationError, SpanflowError
from spanflow.exporters.records import SpanData
from spanflow.exporters.store import Store
from spanflow.values.redact import Redactor

from . import web

__all__ = ["DEFAULT_OTLP_PORT", "TRACES_PATH", "Receiver", "serve", "start_receiver"]

logger = logging.getLogger("spanflow.viewer.serve")

DEFAULT_OTLP_PORT: Final = 4318
TRACES_PATH: Final = "/v1/traces"
#: Batches waiting for the writer at most; one more is answered 503.
MAX_QUEUED: Final = 64
#: Decompressed bytes waiting for the writer at most (a second bound next to the count).
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
RETRY_AFTER_S: Final = 1
#: How long a request waits for its batch to be written before it is told to retry.
WRITE_WAIT_S: Final = 30.0
REQUEST_TIMEOUT_S: Final = 30.0
# Status codes of google.rpc.Code used in error bodies.
_RPC_INVALID_ARGUMENT: Final = 3
_RPC_RESOURCE_EXHAUSTED: Final = 8
_RPC_UNAVAILABLE: Final = 14


@dataclass
class _Batch:
    spans: list[SpanData]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class _Writer:
    """The one thread that writes received spans into the store."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=MAX_QUEUED)
        self._bytes = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="spanflow-otlp-writer", daemon=True)
        self._thread.start()

    def offer(self, batch: _Batch) -> bool:
        """Queue ``batch``; False when the writer is too far behind (the caller answers 503)."""
        with self._lock:
            if self._bytes + batch.size > MAX_QUEUED_BYTES and self._bytes:
                return False
            try:
                self._queue.put_nowait(batch)
            except queue.Full:
                return False
            self._bytes += batch.size
        return True

    def _run(self) -> None:
        store = Store.open(self._db_path, readonly=False)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batches = [first]
                # Whatever else is waiting goes into the same transaction.
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # stop after this write
                        break
                    batches.append(more)
                self._write(store, batches)
        finally:
            store.close()

    def _write(self, store: Store, batches: list[_Batch]) -> None:
        try:
            # Redacted as they were decoded (otlp_receiver.decode_request).
            store.write_spans([span for batch in batches for span in batch.spans], redacted=True)
        except Exception as exc:  # never let one bad write stop the receiver
            logger.exception("spanflow serve: cannot write received spans")
            for batch in batches:
                batch.error = str(exc) or type(exc).__name__
        with self._lock:
            self._bytes -= sum(batch.size for batch in batches)
        for batch in batches:
            batch.done.set()

    def stop(self) -> None:
        """Write what is queued, then stop the thread and close the store."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _ReceiverServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    writer: _Writer

    def __init__(self, address: tuple[str, int]) -> None:
        # A redactor per connection thread: its caches are not thread-safe, and a lock around
        # decoding would make every client wait for the slowest request.
        self._local = threading.local()
        super().__init__(address, _ReceiverHandler)
        port = int(self.server_address[1])
        self.allowed_hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    def redactor(self) -> Redactor:
        """This thread's redactor."""
        redactor: Redactor | None = getattr(self._local, "redactor", None)
        if redactor is None:
            redactor = self._local.redactor = Redactor()
        return redactor


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: _ReceiverServer
    server_version = "spanflow-otlp"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # The answer leaves in one segment, at once: written unbuffered, the headers and the body
    # went out as two, and the client's delayed ACK held the second for tens of milliseconds
    # on every request.
    wbufsize = -1
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.request.settimeout(REQUEST_TIMEOUT_S)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._status(405, "use POST to send traces", close=True, allow="POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def do_POST(self) -> None:
        kind = otlp.PROTOBUF
        # An unsupported type is answered below, after the checks that do not need the body.
        with contextlib.suppress(otlp.UnsupportedMediaType):
            kind = otlp.media_type(self.headers.get("Content-Type"))
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.server.allowed_hosts:
            self._status(403, f"Host {host!r} is not this receiver", kind, close=True)
            return
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._status(404, f"traces are received at {TRACES_PATH}", kind, close=True)
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            self._status(411, "a Content-Length header is required", kind, close=True)
            return
        length = int(length_text)
        if length > otlp.MAX_BODY_BYTES:
            self._status(413, f"the body is over {otlp.MAX_BODY_BYTES} bytes", kind, close=True)
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return
        try:
            decoded = otlp.decode_request(
                body,
                self.headers.get("Content-Type"),
                self.headers.get("Content-Encoding"),
                redactor=self.server.redactor(),
            )
        except otlp.UnsupportedMediaType as exc:
            self._status(415, str(exc), kind)
            return
        except otlp.BodyTooLarge as exc:
            self._status(413, str(exc), kind)
            return
        except ValueError as exc:
            self._status(400, str(exc), kind)
            return
        spans = decoded.spans
        if spans:
            batch = _Batch(spans, len(body))
            if not self.server.writer.offer(batch):
                self._status(503, "the store writer is behind; retry later", kind, retry=True)
                return
            if not batch.done.wait(WRITE_WAIT_S) or batch.error is not None:
                reason = batch.error or "the store writer is behind"
                self._status(503, f"cannot store the spans yet: {reason}", kind, retry=True)
                return
        self._send(200, kind, otlp.encode_response(kind, decoded.rejected, decoded.error))

    def _status(
        self,
        code: int,
        message: str,
        kind: str = otlp.PROTOBUF,
        *,
        retry: bool = False,
        close: bool = False,
        allow: str | None = None,
    ) -> None:
        rpc = _RPC_INVALID_ARGUMENT
        if code == 503:
            rpc = _RPC_UNAVAILABLE
        elif code == 413:
            rpc = _RPC_RESOURCE_EXHAUSTED
        # Loaded on the first refusal: a receiver that is never refused starts without them.
        from google.protobuf import json_format
        from google.rpc import status_pb2

        status = status_pb2.Status(code=rpc, message=message)
        body = (
            status.SerializeToString()
            if kind == otlp.PROTOBUF
            else json.dumps(json_format.MessageToDict(status)).encode("utf-8")
        )
        headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else {}
        if allow:
            headers["Allow"] = allow
        if close:
            # The body was not read: the connection cannot carry another request.
            self.close_connection = True
            headers["Connection"] = "close"
        self._send(code, kind, body, headers)

    def _send(
        self, code: int, kind: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class Receiver:
    """The OTLP/HTTP receiver answering in a background thread until :meth:`stop`."""

    def __init__(self, db_path: Path, port: int) -> None:
        """Open (or create) the store at ``db_path`` and listen on 127.0.0.1:``port``.

        Raises:
            StoreError: the path is not a spanflow store (it is left untouched).
            ConfigurationError: the port cannot be bound.
        """
        # The port first: a busy port must not leave a new, empty store behind.
        try:
            self.server = _ReceiverServer(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); choose another "
                "port with --otlp-port"
            ) from exc
        try:
            Store.open(db_path, readonly=False).close()  # a bad path fails here, in the caller
        except BaseException:
            self.server.server_close()
            raise
        # No request is read before serve_forever() starts, below.
        self._writer = self.server.writer = _Writer(db_path)
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="spanflow-otlp-receiver",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self.server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL to give exporters (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop listening, write what is queued and close the store (idempotent)."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join()
            self.server.server_close()
        self._writer.stop()


def start_receiver(db_path: Path, port: int = DEFAULT_OTLP_PORT) -> Receiver:
    """Receive OTLP/HTTP traces into ``db_path`` in the background; ``stop()`` the result."""
    return Receiver(Path(db_path), port)


def serve(
    db_path: Path,
    *,
    port: int = 8765,
    otlp_port: int = DEFAULT_OTLP_PORT,
    open_browser: bool = False,
) -> None:
    """Receive traces into ``db_path`` and serve the viewer for it until interrupted.

    Prints the receiver's endpoint and the viewer's address with its access token.

    Raises:
        ConfigurationError: a port cannot be bound.
        StoreError: the path is not a spanflow store.
    """
    new = _not_there(db_path)
    receiver = start_receiver(db_path, otlp_port)
    try:
        viewer = web.start_viewer(db_path, port=port)
    except (SpanflowError, OSError):
        receiver.stop()
        _remove_new(new)
        raise
    try:
        banner = (
            f"spanflow OTLP/HTTP receiver at {receiver.endpoint}{TRACES_PATH} "
            f"(OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint})"
        )
        web.serve_until_stopped(viewer, [banner], open_browser=open_browser)
    finally:
        viewer.stop()
        receiver.stop()


def _not_there(db_path: Path) -> list[Path]:
    """The store's files and the folders above it that do not exist yet, deepest first."""
    if db_path.exists():
        return []
    new = [Path(f"{db_path}{end}") for end in ("", "-wal", "-shm", "-journal")]
    folder = db_path.parent
    while not folder.exists():
        new.append(folder)
        folder = folder.parent
    return new


def _remove_new(paths: list[Path]) -> None:
    """Remove what :func:`_not_there` listed, now an empty store: a failed start leaves nothing."""
    for path in paths:
        try:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder someone else has put something in since: theirs
