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

Access is by token, as in Jupyter: the server makes a random token, the URL it prints carries it
(``/?token=...``), and the first visit with it sets an HttpOnly, SameSite=Strict cookie so later
requests need no token in the URL. Anything else on the machine (another user's process, a web
page in the browser) gets 403 for every page, file and API route.

A run's page gets at most :data:`MAX_SPANS` spans at once (the first ones depth-first, plus the
path down to the failed step); ``/api/runs/<id>/spans?offset=`` pages through the rest.

``/api/compare?a=RUN[&b=RUN]`` is ``spanflow diff --json`` for the compare page (``/compare/A/B``):
b defaults to a's latest replay, and at most :data:`MAX_COMPARE_STEPS` steps are listed.
"""

from __future__ import annotations

import hmac
import http.server
import ipaddress
import json
import logging
import math
import re
import secrets
import shlex
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from spanflow import attributes as attr
from spanflow.errors import ConfigurationError, ReplayError, StoreError, UnknownRunError
from spanflow.exporters.records import SpanData, datetime_to_ns
from spanflow.exporters.store import Store
from spanflow.viewer import ai_spans
from spanflow.viewer.span_tree import SpanTree, build_tree

if TYPE_CHECKING:
    from spanflow.exporters.records import RunRecord  # pydantic loads on the first page asked
    from spanflow.replayer.diff import RunDiff

__all__ = [
    "CSP",
    "MAX_COMPARE_STEPS",
    "MAX_SPANS",
    "Viewer",
    "ViewerServer",
    "make_server",
    "serve",
    "start_viewer",
]

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
    "compare.js": _JS,
}
_RUN_PATH: Final = re.compile(r"/runs/([^/]+)/?")
_API_RUN_PATH: Final = re.compile(r"/api/runs/([^/]+)/?")
_API_SPANS_PATH: Final = re.compile(r"/api/runs/([^/]+)/spans/?")
_COMPARE_PATH: Final = re.compile(r"/compare/([^/]+)(?:/([^/]+))?/?")
#: A run id or the unique prefix of one, as ``?a=`` and ``?b=`` of ``/api/compare`` take them.
_RUN_KEY: Final = re.compile(r"[0-9a-fA-F]{4,32}")
#: The most steps ``/api/compare`` lists (differences first); ``truncated`` says when cut.
MAX_COMPARE_STEPS: Final = 2_000
_DEFAULT_LIMIT: Final = 50
_MAX_LIMIT: Final = 500
#: The most spans one response carries; a bigger run is paged (the page shows "show more").
MAX_SPANS: Final = 10_000
#: Larger offsets cannot name anything in a store (and SQLite integers end at 2**63).
_MAX_OFFSET: Final = 10**12
_NUMBER: Final = re.compile(r"[0-9]{1,13}")
#: Seconds a connection may stay silent (a half-sent request) before it is closed.
REQUEST_TIMEOUT: Final = 10.0
_TOKEN_PARAM: Final = "token"
#: Runs with more spans than MAX_SPANS are parsed once and kept (the most recent few).
_CACHED_RUNS: Final = 2
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


@dataclass(frozen=True)
class _RunView:
    """A run's spans placed in a tree, with the times the page measures from."""

    key: tuple[Any, ...]
    tree: SpanTree
    t0: int
    end: int
    #: The run's token counts, each model call counted once (see ``ai_spans.run_tokens``).
    tokens: ai_spans.Tokens


class ViewerServer(http.server.ThreadingHTTPServer):
    """The viewer's HTTP server: one read-only store, the page's files, the allowed hosts."""

    # Bursts of requests (a page load, several tabs) must not wait for the kernel to retry a
    # full accept queue, which costs about a second each time.
    request_queue_size = 128

    def __init__(
        self,
        db_path: Path,
        store: Store,
        address: tuple[str, int],
        *,
        token: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        """Bind to ``address`` (a loopback host) and serve ``store``; see :func:`make_server`."""
        self.db_path = db_path
        self.store = store
        self.static = _load_static()
        self.token = token or secrets.token_urlsafe(32)
        self.request_timeout = request_timeout
        self._views: OrderedDict[str, _RunView] = OrderedDict()
        self._views_lock = threading.Lock()
        # The last comparison: its step clicks ask for the same two runs again.
        self._last_diff: tuple[tuple[Any, ...], RunDiff] | None = None
        # The address family must be chosen before the socket is created.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        host, port = address[0], int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        #: The address to open: ``url`` with the access token.
        self.login_url = f"{self.url}?{urlencode({_TOKEN_PARAM: self.token})}"
        # Cookies are shared by every port of a host: one name per port keeps two viewers apart.
        self.cookie_name = f"spanflow-viewer-{port}"
        names = {shown.lower(), "localhost"}
        # A browser always sends the port unless it is the scheme's default.
        self.allowed_hosts = frozenset(
            {f"{n}:{port}" for n in names} | (names if port == 80 else set())
        )

    def server_close(self) -> None:
        """Stop listening and close the store."""
        super().server_close()
        self.store.close()

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is this server's token (in constant time)."""
        return hmac.compare_digest(candidate.encode("utf-8"), self.token.encode("utf-8"))

    def run_diff(self, a: RunRecord, b: RunRecord) -> RunDiff:
        """Run ``a`` against run ``b`` (``spanflow diff``); the last one is kept until either
        run changes, so opening its steps one by one does not align the trees again.

        Raises:
            ReplayError: a run without a root step span.
        """
        # Loaded on first use: diff shares replay's matcher, which `spanflow ui` needs only here.
        from spanflow.replayer.diff import diff_spans

        key = tuple((r.id, r.status, r.span_count, r.error_count, r.ended_at) for r in (a, b))
        with self._views_lock:
            last = self._last_diff
        if last is not None and last[0] == key:
            return last[1]
        store = self.store
        result = diff_spans(a.id, store.span_data(a.id), b.id, store.span_data(b.id))
        with self._views_lock:
            self._last_diff = (key, result)
        return result

    def run_view(self, run: RunRecord) -> _RunView:
        """The run's span tree; a big finished one is parsed once and reused for its pages."""
        key = (run.id, run.status, run.span_count, run.error_count, run.ended_at)
        with self._views_lock:
            view = self._views.get(run.id)
            if view is not None and view.key == key:
                self._views.move_to_end(run.id)
                return view
        spans = self.store.span_data(run.id)  # plain records: a 200k-span run reads 3x faster
        t0 = min([datetime_to_ns(run.started_at), *(s.start_ns for s in spans)])
        end = max([t0, *(s.end_ns for s in spans)])
        if run.ended_at is not None:
            end = max(end, datetime_to_ns(run.ended_at))
        tokens = ai_spans.Tokens()
        if any(ai_spans.counts_tokens(s.attributes) for s in spans):
            tokens = ai_spans.run_tokens(
                (s.span_id, s.parent_id, ai_spans.tokens_of(s.attributes)) for s in spans
            )
        view = _RunView(key, build_tree(spans), t0, end, tokens)
        if len(spans) > MAX_SPANS:
            with self._views_lock:
                self._views[run.id] = view
                self._views.move_to_end(run.id)
                while len(self._views) > _CACHED_RUNS:
                    self._views.popitem(last=False)
        return view


def make_server(
    db_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
) -> ViewerServer:
    """Open the store at ``db_path`` read-only and bind the viewer to ``host``:``port``.

    Port 0 picks a free port (``server.url`` tells which). ``token`` is the access token
    (default: a new random one; ``server.login_url`` carries it). Call ``serve_forever()`` on the
    result, and ``server_close()`` when done; :func:`start_viewer` does both in a thread.

    Raises:
        ConfigurationError: ``host`` is not a loopback address, or the port cannot be bound.
        StoreError: the store is missing, unreadable, or not a spanflow store.
    """
    bind = _loopback(host)
    path = Path(db_path).absolute()
    store = Store.open(path)
    try:
        return ViewerServer(path, store, (bind, port), token=token, request_timeout=request_timeout)
    except OSError as exc:
        store.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port "
            "with --port"
        ) from exc
    except BaseException:
        store.close()
        raise


class Viewer:
    """A viewer answering requests in a background thread until :meth:`stop`."""

    def __init__(self, server: ViewerServer) -> None:
        """Start serving ``server`` (from :func:`make_server`) in a daemon thread."""
        self.server = server
        self._stopped = False
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"spanflow-viewer-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The address to open, with the access token: ``http://127.0.0.1:PORT/?token=...``."""
        return self.server.login_url

    @property
    def base_url(self) -> str:
        """The address without the token (``http://127.0.0.1:PORT/``)."""
        return self.server.url

    @property
    def token(self) -> str:
        """The access token."""
        return self.server.token

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self.server.server_address[1])

    def wait(self) -> None:
        """Block until the viewer stops (Ctrl-C in the main thread interrupts the wait)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        """Stop answering, close the listening socket and the store (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_viewer(
    db_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
) -> Viewer:
    """Serve the viewer for ``db_path`` in the background; ``stop()`` the result when done.

    Raises:
        ConfigurationError: ``host`` is not loopback, or the port cannot be bound.
        StoreError: the store is missing, unreadable, or not a spanflow store.
    """
    server = make_server(
        db_path, host=host, port=port, token=token, request_timeout=request_timeout
    )
    return Viewer(server)


def serve(db_path: Path, *, port: int = 8765, open_browser: bool = False) -> None:
    """Serve the viewer for ``db_path`` on 127.0.0.1 until interrupted (Ctrl-C or SIGTERM).

    Prints the address with its access token on stdout (and opens it if ``open_browser``).

    Raises:
        ConfigurationError: the port cannot be bound.
        StoreError: the store is missing, unreadable, or not a spanflow store.
    """
    viewer = start_viewer(db_path, port=port)
    try:
        serve_until_stopped(viewer, [], open_browser=open_browser)
    finally:
        viewer.stop()


def _stop_on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_until_stopped(viewer: Viewer, before: list[str], *, open_browser: bool) -> None:
    """Print ``before`` and the viewer's address, open it if asked, and wait for Ctrl-C or
    SIGTERM (either ends the wait quietly). Stopping the servers is the caller's."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        lines = [
            *before,
            f"spanflow viewer for {viewer.server.db_path} at {viewer.url} (Ctrl-C stops it)",
        ]
        print("\n".join(lines), flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(viewer.url)
        viewer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    _set_cookie = False

    def setup(self) -> None:
        # A socket timeout: a client that sends half a request and goes quiet loses its
        # connection (and frees its thread) instead of holding it forever.
        self.request.settimeout(self.server.request_timeout)
        super().setup()

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _refuse_method(self) -> None:
        if not self._admitted(head=False):
            return
        error = {"error": "the viewer is read-only: only GET and HEAD"}
        self._send_json(405, error, head=False, extra={"Allow": "GET, HEAD"})

    def _admitted(self, *, head: bool) -> bool:
        """Check the Host header and the access token; answer 403 (and say False) if wrong."""
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.server.allowed_hosts:
            # DNS rebinding: a foreign site resolving its name to 127.0.0.1 sends its own Host.
            self._send_json(403, {"error": f"unexpected Host header {host!r}"}, head=head)
            return False
        if self._token_from_query() is not None:
            self._set_cookie = True
            return True
        if self._token_from_cookie():
            return True
        body = (
            "403 Forbidden: this spanflow viewer needs its access token. Open the address that "
            "`spanflow ui` printed (it ends in ?token=...).\n"
        ).encode("ascii")
        self.send_response(403)
        self._common_headers("text/plain; charset=utf-8", len(body), "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return False

    def _token_from_query(self) -> str | None:
        """The query's token if it is the right one, else None."""
        for value in parse_qs(urlsplit(self.path).query).get(_TOKEN_PARAM, []):
            if self.server.token_matches(value):
                return value
        return None

    def _token_from_cookie(self) -> bool:
        name = self.server.cookie_name
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                key, sep, value = part.strip().partition("=")
                if sep and key == name and self.server.token_matches(value.strip('"')):
                    return True
        return False

    def _cookie_header(self) -> str:
        return f"{self.server.cookie_name}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _dispatch(self, *, head: bool) -> None:
        if not self._admitted(head=head):
            return
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
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
                self._send_json(200, self._runs(query), head=head)
            elif m := _API_SPANS_PATH.fullmatch(path):
                self._send_json(200, self._span_page(unquote(m.group(1)), query), head=head)
            elif m := _API_RUN_PATH.fullmatch(path):
                self._send_json(200, self._run(unquote(m.group(1))), head=head)
            elif path in ("/api/compare", "/api/compare/"):
                self._send_json(200, self._compare(query), head=head)
            elif m := _RUN_PATH.fullmatch(path):
                # Same page as "/", routed in the browser; an unknown run is a 404 all the same.
                self.server.store.get_run(unquote(m.group(1)))
                self._send_static("index.html", head=head)
            elif m := _COMPARE_PATH.fullmatch(path):
                for key in m.groups():
                    if key is not None:
                        self.server.store.get_run(unquote(key))
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
        except _Unprocessable as exc:
            self._send_json(422, {"error": str(exc)}, head=head)
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
        limit = _int_param(query, "limit", _DEFAULT_LIMIT, low=1, high=_MAX_LIMIT)
        offset = _int_param(query, "offset", 0, low=0, high=_MAX_OFFSET)
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
        view = self.server.run_view(run)
        tree = view.tree
        replays = store.replays_of(run.id)
        latest = store.latest_replay(run.id) if replays else None  # what compare defaults to
        original: dict[str, Any] | None = None
        if run.replay_of:
            try:
                original = _run_json(store.get_run(run.replay_of))
            except UnknownRunError:
                original = {"id": run.replay_of, "missing": True}
        end = view.end
        if run.status == "running":
            end = max(end, time.time_ns())
        # The first MAX_SPANS depth first (a prefix holds every ancestor of what it holds),
        # and the failed step with its ancestors and attempts wherever they are.
        sent = list(range(min(len(tree.order), MAX_SPANS)))
        if tree.failed is not None:
            half = MAX_SPANS // 2
            wanted = [*tree.path_to(tree.failed)[-half:], *tree.kids[tree.failed][:half]]
            sent += sorted({tree.position[i] for i in wanted if tree.position[i] >= MAX_SPANS})
        # Only a workflow run can be replayed: replay needs the entrypoint it recorded.
        command = None
        if run.entrypoint:
            command = f"spanflow replay {run.id} --db {shlex.quote(str(self.server.db_path))}"
        return {
            "db": str(self.server.db_path),
            "run": _run_json(run),
            "spans": [_span_json(tree, tree.order[n], n, view.t0) for n in sent],
            "span_total": len(tree.order),
            "span_first": min(len(tree.order), MAX_SPANS),
            "span_end": _ms(end - view.t0),
            "tokens": None if view.tokens.empty else view.tokens.to_json(),
            "replays": [_run_json(r) for r in replays],
            "latest_replay": None if latest is None else latest.id,
            "replay_of": original,
            "replay_command": command,
            "names": _NAMES,
        }

    def _span_page(self, key: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        run = self.server.store.get_run(key)
        offset = _int_param(query, "offset", 0, low=0, high=_MAX_OFFSET)
        limit = _int_param(query, "limit", MAX_SPANS, low=1, high=MAX_SPANS)
        view = self.server.run_view(run)
        tree = view.tree
        chosen = range(min(offset, len(tree.order)), min(offset + limit, len(tree.order)))
        return {
            "run": run.id,
            "spans": [_span_json(tree, tree.order[n], n, view.t0) for n in chosen],
            "offset": offset,
            "limit": limit,
            "span_total": len(tree.order),
        }

    def _compare(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """Run ``a`` against run ``b`` (default: a's latest replay), as ``spanflow diff --json``
        says it; with ``step=<path>`` one step of it, with both sides' inputs and outputs."""
        store = self.server.store
        a_key, b_key = _run_key(query, "a"), _run_key(query, "b")
        if a_key is None:
            raise _BadRequest("a= must name a run (its id, or at least its first 4 hex)")
        a = store.get_run(a_key)
        if b_key is not None:
            b = store.get_run(b_key)
        else:
            latest = store.latest_replay(a.id)  # as `spanflow diff` takes it: not a check
            if latest is None:
                raise UnknownRunError(
                    f"run {a.id} has no replay to compare with; name the other run (b=), or "
                    f"replay it first: spanflow replay {a.id} "
                    f"--db {shlex.quote(str(self.server.db_path))}"
                )
            b = latest
        try:
            result = self.server.run_diff(a, b)
        except ReplayError as exc:
            raise _Unprocessable(str(exc)) from exc
        runs = {"a": _run_json(a), "b": _run_json(b)}
        wanted = _param(query, "step")
        if wanted is None:
            return {
                "db": str(self.server.db_path),
                "runs": runs,
                **result.to_json(max_steps=MAX_COMPARE_STEPS),
            }
        # An added step is named by its path in B, which may equal a path in A.
        added = _param(query, "change") == "added"
        for step in result.steps:
            if step.path == wanted and (step.change == "added") == added:
                detail = step.to_json()
                detail["values"] = {
                    side: None
                    if data is None
                    else {"input": data.input_json, "output": data.output_json}
                    for side, data in (("a", step.a), ("b", step.b))
                }
                return {"db": str(self.server.db_path), "runs": runs, "step": detail}
        raise UnknownRunError(f"no step {wanted!r} in the comparison of {a.id} with {b.id}")

    # -- responses -----------------------------------------------------------------------------

    def _common_headers(self, content_type: str, length: int, cache: str) -> None:
        if self._set_cookie:
            # The first visit: later requests (the page's files, its API calls, links) carry
            # the token in this cookie, and the page takes it out of the address bar.
            self.send_header("Set-Cookie", self._cookie_header())
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


class _Unprocessable(ValueError):
    """The request is well formed but the store's data cannot answer it (a run without a root)."""


def _run_key(query: Mapping[str, list[str]], name: str) -> str | None:
    raw = _param(query, name)
    if not raw:
        return None
    if not _RUN_KEY.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise _BadRequest(f"{name} must be a run id (4 to 32 hex characters), got {shown!r}")
    return raw


def _param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1].strip() if values else None


def _int_param(
    query: Mapping[str, list[str]], name: str, default: int, *, low: int, high: int
) -> int:
    raw = _param(query, name)
    if not raw:
        return default
    # Plain digits only: int() would also take "1_000", "+5" and other scripts' digits.
    value = int(raw) if _NUMBER.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise _BadRequest(f"{name} must be a whole number from {low} to {high}, got {shown!r}")
    return value


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
        "incomplete": run.incomplete,
    }


def _span_json(tree: SpanTree, index: int, seq: int, t0: int) -> dict[str, Any]:
    # Times are milliseconds from the run's start, exact as JavaScript numbers. "parent" is the
    # span this one is drawn under; "seq" its place depth first, which orders merged pages.
    span: SpanData = tree.spans[index]
    p = tree.parent[index]
    parent = tree.ids[p] if p >= 0 else None
    out: dict[str, Any] = {
        "id": tree.ids[index],
        "seq": seq,
        "parent": parent,
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
    # What the span says as a model call, tool, chain...: OpenInference, GenAI or spanflow's own.
    ai = ai_spans.interpret(span.attributes, ((e.name, e.attributes) for e in span.events))
    if not ai.empty:
        out["ai"] = ai.to_json()
    if span.parent_id != parent and span.parent_id is not None:
        # Damaged links (a cycle, its own id, a duplicate id) are shown, not followed.
        out["recorded_parent"] = span.parent_id
    if tree.ids[index] != span.span_id:
        out["recorded_id"] = span.span_id
    return out


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
