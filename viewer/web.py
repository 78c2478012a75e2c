"""The local web viewer behind ``spanflow ui``: a run list and one page per run.

The server is the standard library's ``http.server.ThreadingHTTPServer``. The viewer is a
single-user tool on 127.0.0.1 that serves a few static files and two small JSON endpoints, so a
thread per request is plenty, and the stdlib adds no dependency, no event loop to share with the
user's code and nothing to keep patched. It only ever reads: the store is opened read-only (see
:class:`spanflow.exporters.store.Store`), which also means a store that a running pipeline is
writing is seen fresh on every request, so a page polling a running run follows it live.

The page (``static/``) is hand-written JavaScript without a build step. It builds every element
with ``textContent``, never parses captured data as HTML, and loads nothing from outside this
server; the Content-Security-Policy sent with every response enforces both.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import math
import re
import shlex
import socket
import time
import webbrowser
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from spanflow import attributes as attr
from spanflow.errors import ConfigurationError, StoreError, UnknownRunError
from spanflow.exporters.records import RunRecord, SpanRecord, datetime_to_ns
from spanflow.exporters.store import Store

__all__ = ["CSP", "ViewerServer", "make_server", "serve"]

logger = logging.getLogger("spanflow.viewer")

#: Sent with every response: scripts and styles only from this server, no inline code, no
#: external requests, not embeddable in another site's frame.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_JS: Final = "text/javascript; charset=utf-8"
#: The page's files; nothing else is ever read from disk to answer a request.
_STATIC: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": _JS,
    "dom.js": _JS,
    "runs.js": _JS,
    "run.js": _JS,
    "trace.js": _JS,
    "detail.js": _JS,
    "state.js": _JS,
}
_RUN_PATH: Final = re.compile(r"/runs/([^/]+)/?")
_API_RUN_PATH: Final = re.compile(r"/api/runs/([^/]+)/?")
_DEFAULT_LIMIT: Final = 50
_MAX_LIMIT: Final = 500
_RUN_STATUSES: Final = ("running", "ok", "failed", "crashed")

# Attribute names the page reads, sent with each run so the names live only in attributes.py.
_NAMES: Final = {
    "runId": attr.RUN_ID,
    "stepName": attr.STEP_NAME,
    "stepType": attr.STEP_TYPE,
    "typeWorkflow": attr.STEP_TYPE_WORKFLOW,
    "typeAttempt": attr.STEP_TYPE_ATTEMPT,
    "attempts": attr.STEP_ATTEMPTS,
    "attemptNumber": attr.ATTEMPT_NUMBER,
    "attemptWait": attr.ATTEMPT_WAIT,
    "stateDiff": attr.STATE_DIFF,
    "stateInitial": attr.STATE_INITIAL,
    "fallbackUsed": attr.FALLBACK_USED,
    "defaultUsed": attr.DEFAULT_USED,
    "timeout": attr.TIMEOUT_S,
    "replayCached": attr.REPLAY_CACHED,
    "routeBranch": attr.ROUTE_BRANCH,
    "routeReason": attr.ROUTE_REASON,
    "routeName": attr.ROUTE_NAME,
    "cancelled": attr.CANCELLED,
    "lossy": attr.LOSSY,
    "input": attr.INPUT_VALUE,
    "inputMime": attr.INPUT_MIME_TYPE,
    "output": attr.OUTPUT_VALUE,
    "outputMime": attr.OUTPUT_MIME_TYPE,
    "spanKind": attr.SPAN_KIND,
    "errorType": attr.ERROR_TYPE,
    "exceptionEvent": attr.EXCEPTION_EVENT,
    "exceptionType": attr.EXCEPTION_TYPE,
    "exceptionMessage": attr.EXCEPTION_MESSAGE,
    "exceptionStacktrace": attr.EXCEPTION_STACKTRACE,
    "logEvent": attr.LOG_EVENT,
    "logLevel": attr.LOG_LEVEL,
    "logLogger": attr.LOG_LOGGER,
    "logMessage": attr.LOG_MESSAGE,
}


class ViewerServer(http.server.ThreadingHTTPServer):
    """The viewer's HTTP server: one read-only store, the page's files, the allowed hosts."""

    def __init__(self, db_path: Path, store: Store, address: tuple[str, int]) -> None:
        """Bind to ``address`` (a loopback host) and serve ``store``; see :func:`make_server`."""
        self.db_path = db_path
        self.store = store
        self.static = _load_static()
        # The address family must be chosen before the socket is created.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        host, port = address[0], int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        names = {shown.lower(), "localhost"}
        # A browser always sends the port unless it is the scheme's default.
        self.allowed_hosts = frozenset(
            {f"{n}:{port}" for n in names} | (names if port == 80 else set())
        )

    def server_close(self) -> None:
        """Stop listening and close the store."""
        super().server_close()
        self.store.close()


def make_server(db_path: Path, *, host: str = "127.0.0.1", port: int = 0) -> ViewerServer:
    """Open the store at ``db_path`` read-only and bind the viewer to ``host``:``port``.

    Port 0 picks a free port (``server.url`` tells which). Call ``serve_forever()`` on the result,
    and ``server_close()`` when done.

    Raises:
        ConfigurationError: ``host`` is not a loopback address, or the port cannot be bound.
        StoreError: the store is missing, unreadable, or not a spanflow store.
    """
    bind = _loopback(host)
    path = Path(db_path).absolute()
    store = Store.open(path)
    try:
        return ViewerServer(path, store, (bind, port))
    except OSError as exc:
        store.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port "
            "with --port"
        ) from exc
    except BaseException:
        store.close()
        raise


def serve(db_path: Path, *, port: int = 8765, open_browser: bool = False) -> None:
    """Serve the viewer for ``db_path`` on 127.0.0.1 until interrupted (Ctrl-C).

    Raises:
        ConfigurationError: the port cannot be bound.
        StoreError: the store is missing, unreadable, or not a spanflow store.
    """
    server = make_server(db_path, port=port)
    try:
        print(f"spanflow viewer for {server.db_path} at {server.url} (Ctrl-C stops it)", flush=True)
        if open_browser:
            webbrowser.open(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _loopback(host: str) -> str:
    """The address to bind for ``host``; anything that is not loopback is refused."""
    if host.strip().lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        raise ConfigurationError(
            f"the viewer only listens on a loopback address (127.0.0.1, ::1 or localhost), not "
            f"{host!r}: captured inputs and outputs must not be served to the network"
        )
    return str(ip)


def _load_static() -> dict[str, bytes]:
    folder = Path(__file__).parent / "static"
    try:
        return {name: (folder / name).read_bytes() for name in _STATIC}
    except OSError as exc:
        raise ConfigurationError(
            f"the viewer's page files are missing ({exc}); reinstall spanflow"
        ) from exc


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "spanflow-viewer"
    sys_version = ""

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _refuse_method(self) -> None:
        error = {"error": "the viewer is read-only: only GET and HEAD"}
        self._send_json(405, error, head=False, extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _dispatch(self, *, head: bool) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.server.allowed_hosts:
            # DNS rebinding: a foreign site resolving its name to 127.0.0.1 sends its own Host.
            self._send_json(403, {"error": f"unexpected Host header {host!r}"}, head=head)
            return
        url = urlsplit(self.path)
        path = url.path
        try:
            if path in ("/", "/index.html"):
                self._send_static("index.html", head=head)
            elif path.startswith("/static/"):
                name = path.removeprefix("/static/")
                if name in _STATIC and name != "index.html":
                    self._send_static(name, head=head)
                else:
                    self._send_json(404, {"error": f"no file {path}"}, head=head)
            elif path in ("/api/runs", "/api/runs/"):
                self._send_json(200, self._runs(parse_qs(url.query)), head=head)
            elif m := _API_RUN_PATH.fullmatch(path):
                self._send_json(200, self._run(unquote(m.group(1))), head=head)
            elif m := _RUN_PATH.fullmatch(path):
                # Same page as "/", routed in the browser; an unknown run is a 404 all the same.
                self.server.store.get_run(unquote(m.group(1)))
                self._send_static("index.html", head=head)
            else:
                self._send_json(404, {"error": f"no page {path}"}, head=head)
        except UnknownRunError as exc:
            if path.startswith("/api/"):
                self._send_json(404, {"error": str(exc)}, head=head)
            else:
                self._send_static("index.html", head=head, status=404)
        except _BadRequest as exc:
            self._send_json(400, {"error": str(exc)}, head=head)
        except StoreError as exc:
            logger.warning("spanflow viewer: %s", exc)
            self._send_json(500, {"error": str(exc)}, head=head)
        except Exception as exc:
            logger.exception("spanflow viewer: %s failed", path)
            self._send_json(500, {"error": f"{type(exc).__name__}: {exc}"}, head=head)

    # -- API -----------------------------------------------------------------------------------

    def _runs(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        status = _param(query, "status")
        if status in ("", "all"):
            status = None
        if status is not None and status not in _RUN_STATUSES:
            raise _BadRequest(f"status must be one of {', '.join(_RUN_STATUSES)}")
        workflow = _param(query, "workflow") or None
        limit = min(max(_int_param(query, "limit", _DEFAULT_LIMIT), 1), _MAX_LIMIT)
        offset = max(_int_param(query, "offset", 0), 0)
        store = self.server.store
        runs = store.list_runs(status=status, workflow=workflow, limit=limit, offset=offset)
        total = store.count_runs(status=status, workflow=workflow)
        return {
            "db": str(self.server.db_path),
            "runs": [_run_json(r) for r in runs],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    def _run(self, key: str) -> dict[str, Any]:
        store = self.server.store
        run = store.get_run(key)
        spans = store.spans(run.id)
        replays = store.replays_of(run.id)
        original: dict[str, Any] | None = None
        if run.replay_of:
            try:
                original = _run_json(store.get_run(run.replay_of))
            except UnknownRunError:
                original = {"id": run.replay_of, "missing": True}
        t0 = min([datetime_to_ns(run.started_at), *(s.start_ns for s in spans)])
        end = max([t0, *(s.end_ns for s in spans)])
        if run.ended_at is not None:
            end = max(end, datetime_to_ns(run.ended_at))
        if run.status == "running":
            end = max(end, time.time_ns())
        return {
            "db": str(self.server.db_path),
            "run": _run_json(run),
            "spans": [_span_json(s, t0) for s in spans],
            "span_end": _ms(end - t0),
            "replays": [_run_json(r) for r in replays],
            "replay_of": original,
            "replay_command": f"spanflow replay {run.id} --db {shlex.quote(str(self.server.db_path))}",
            "names": _NAMES,
        }

    # -- responses -----------------------------------------------------------------------------

    def _common_headers(self, content_type: str, length: int, cache: str) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", cache)

    def _send_static(self, name: str, *, head: bool, status: int = 200) -> None:
        body = self.server.static[name]
        self.send_response(status)
        # Pages and scripts change with the installed version: revalidate, never go stale.
        self._common_headers(_STATIC[name], len(body), "no-cache")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(
        self, status: int, payload: Any, *, head: bool, extra: Mapping[str, str] | None = None
    ) -> None:
        body = _dumps(payload).encode("ascii")
        self.send_response(status)
        self._common_headers("application/json", len(body), "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests get the same headers (and a JSON body) as everything else."""
        self.close_connection = True
        self._send_json(code, {"error": message or explain or "bad request"}, head=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("spanflow viewer: " + format, *args)


class _BadRequest(ValueError):
    """A query parameter the API cannot use."""


def _param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1].strip() if values else None


def _int_param(query: Mapping[str, list[str]], name: str, default: int) -> int:
    raw = _param(query, name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, got {raw!r}") from None


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        # Epoch milliseconds fit a JavaScript number exactly; nanoseconds would not.
        "started_ms": datetime_to_ns(run.started_at) // 1_000_000,
        "duration_ms": run.duration_ms,
        "error": run.error,
        "replay_of": run.replay_of,
        "entrypoint": run.entrypoint,
        "service": run.service,
        "host": run.host,
        "span_count": run.span_count,
        "error_count": run.error_count,
    }


def _span_json(span: SpanRecord, t0: int) -> dict[str, Any]:
    # Times are milliseconds from the run's start, exact as JavaScript numbers.
    return {
        "id": span.span_id,
        "parent": span.parent_id,
        "name": span.name,
        "status": span.status,
        "message": span.status_message,
        "start": _ms(span.start_ns - t0),
        "end": _ms(span.end_ns - t0),
        "attrs": span.attributes,
        "events": [
            {"name": e.name, "t": _ms(e.time_ns - t0), "attrs": e.attributes} for e in span.events
        ],
        "links": [
            {"trace": ln.trace_id, "span": ln.span_id, "attrs": ln.attributes} for ln in span.links
        ],
    }


def _dumps(payload: Any) -> str:
    # ASCII-only JSON survives lone surrogates in captured text; NaN is not JSON at all.
    options: dict[str, Any] = {
        "ensure_ascii": True,
        "allow_nan": False,
        "default": str,
        "separators": (",", ":"),
    }
    try:
        return json.dumps(payload, **options)
    except ValueError:
        return json.dumps(_finite(payload), **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
