"""Configuration and the live runtime: which provider, which processors, what to capture.

Zero configuration is the normal case: the first decorated call builds the runtime from the
environment. ``configure()`` builds it explicitly and may be called again (tests do, per test).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from .errors import ConfigurationError
from .redact import Redactor
from .span_values import attribute_blind, quiet_at_start

logger = logging.getLogger("spanflow")

DEFAULT_DB = Path(".spanflow") / "traces.db"
Capture = Literal["all", "inputs", "outputs", "none"]
_CAPTURE_SETS: dict[str, frozenset[str]] = {
    "all": frozenset({"inputs", "outputs"}),
    "inputs": frozenset({"inputs"}),
    "outputs": frozenset({"outputs"}),
    "none": frozenset(),
}
_TRUTHY = {"1", "true", "yes", "on"}
_PROTOCOLS = frozenset({"http/protobuf", "grpc"})
_counters: Counter[str] = Counter()
_counters_lock = threading.Lock()


def count(name: str, n: int = 1) -> None:
    """Count a telemetry problem (or event) readable from ``spanflow.stats()``."""
    with _counters_lock:
        _counters[name] += n


def capture_set(value: str | bool | None, *, where: str) -> frozenset[str]:
    """Turn a ``capture=`` option into the set of captured directions."""
    if value is None or value is True:
        return _CAPTURE_SETS["all"]
    if value is False:
        return _CAPTURE_SETS["none"]
    try:
        return _CAPTURE_SETS[value]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"{where}: capture={value!r} is not one of 'all', 'inputs', 'outputs', 'none'"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Resolved configuration (explicit arguments over environment over defaults)."""

    enabled: bool = True
    db: Path | None = DEFAULT_DB
    capture: frozenset[str] = _CAPTURE_SETS["all"]
    max_value_bytes: int = 4096
    max_state_bytes: int = 262_144
    redactor: Redactor = field(default_factory=Redactor)
    log_level: int | None = logging.WARNING
    otlp_endpoint: str | None = None
    otlp_protocol: str = "http/protobuf"
    otlp_headers: Mapping[str, str] | None = None
    otlp_timeout: float = 3.0
    otlp_explicit: bool = False
    service_name: str | None = None
    worker_otlp: bool = False


class _Fanout(SpanProcessor):
    """The one processor spanflow adds to a provider; it forwards to the current runtime's.

    OpenTelemetry cannot remove a processor from a provider, so re-configuring swaps the list
    behind this object instead of stacking processors.
    """

    #: Its on_start reads no attributes: the store registers a run when its id shows up.
    quiet_at_start: Final = True

    def __init__(self) -> None:
        self.processors: tuple[SpanProcessor, ...] = ()

    def use(self, processors: tuple[SpanProcessor, ...]) -> None:
        """Forward to ``processors`` from now on."""
        self.processors = processors
        # The usual case, the local store alone, is called directly: one Python call fewer on
        # both ends of every span. Its hooks never raise (see SQLiteSpanProcessor).
        direct = len(processors) == 1 and getattr(processors[0], "never_raises", False)
        for hook in ("on_start", "on_end"):
            if direct:
                setattr(self, hook, getattr(processors[0], hook))
            else:
                self.__dict__.pop(hook, None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for p in self.processors:
            try:
                p.on_start(span, parent_context=parent_context)
            except Exception:
                count("processor_errors")
                logger.exception("spanflow: span processor %r failed in on_start", p)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self.processors:
            try:
                p.on_end(span)
            except Exception:
                count("processor_errors")
                logger.exception("spanflow: span processor %r failed in on_end", p)

    def shutdown(self) -> None:
        for p in self.processors:
            _safe_shutdown(p)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return _flush_all(self.processors, timeout_millis)


def _flush_all(processors: tuple[SpanProcessor, ...], timeout_millis: int) -> bool:
    ok = True
    for p in processors:
        try:
            ok = p.force_flush(timeout_millis) and ok
        except Exception:
            logger.exception("spanflow: flushing %r failed", p)
            ok = False
    return ok


def _safe_shutdown(p: SpanProcessor) -> None:
    try:
        p.shutdown()
    except Exception:
        logger.exception("spanflow: shutting down %r failed", p)


_fanouts: weakref.WeakKeyDictionary[TracerProvider, _Fanout] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class Runtime:
    """What a decorated call needs at hand: settings, tracer and the processors it owns."""

    settings: Settings
    tracer: trace.Tracer
    provider: trace.TracerProvider | None
    processors: tuple[SpanProcessor, ...] = ()
    store: Any = None  # SQLiteSpanProcessor when the local store is on
    # Whether the provider's sampler ignores attributes (see span_values).
    sampler_blind: bool = False
    _seen_processors: object = None  # the provider's processor list last looked at
    _start_blind: bool = False

    def attributes_at_start(self) -> bool:
        """Whether attributes known at a span's start must go to ``start_span``: the sampler or
        a span processor's ``on_start`` might read them (see span_values)."""
        active = getattr(self.provider, "_active_span_processor", None)
        processors = getattr(active, "_span_processors", None)
        if processors is not self._seen_processors:
            # A processor added to the provider replaces this tuple: look again.
            self._start_blind = self.sampler_blind and quiet_at_start(processors)
            self._seen_processors = processors
        return not self._start_blind

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def flush(self, timeout_millis: int = 5000) -> bool:
        return _flush_all(self.processors, timeout_millis)

    def shutdown(self) -> None:
        for p in self.processors:
            _safe_shutdown(p)


_lock = threading.RLock()
_runtime: Runtime | None = None
_pending: dict[str, Any] | None = None  # kwargs of the last configure(), applied on first use


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def _default_service_name() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else "")
    stem = Path(path).stem if path else ""
    return stem if stem and stem not in {"-c", "__main__", "pytest"} else "spanflow"


def _resolve(kwargs: Mapping[str, Any]) -> Settings:
    enabled = kwargs.get("enabled")
    if enabled is None:
        enabled = not (_env_flag("SPANFLOW_DISABLED") or _env_flag("OTEL_SDK_DISABLED"))
    db: Path | None
    if "db" in kwargs:
        raw_db = kwargs["db"]
        if raw_db is False or raw_db is None:
            db = None
        elif isinstance(raw_db, (str, os.PathLike)):
            db = Path(raw_db)
        else:
            raise ConfigurationError(
                f"configure(db={raw_db!r}): pass a path, or db=False to turn the local store off"
            )
    else:
        env_db = os.environ.get("SPANFLOW_DB")
        db = Path(env_db) if env_db else DEFAULT_DB
    max_bytes = kwargs.get("max_value_bytes", 4096)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 64:
        raise ConfigurationError(
            f"configure(max_value_bytes={max_bytes!r}): pass an int of at least 64 (bytes per value)"
        )
    protocol = kwargs.get("otlp_protocol")
    if protocol is not None and protocol not in _PROTOCOLS:
        raise ConfigurationError(
            f"otlp_protocol={protocol!r} is not supported: use 'http/protobuf' or 'grpc'"
        )
    if protocol is None:
        env_protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        )
        protocol = env_protocol if env_protocol in _PROTOCOLS else "http/protobuf"
        if env_protocol and env_protocol not in _PROTOCOLS:
            # An environment setting must not stop the application: say so, use the default.
            logger.warning(
                "spanflow: OTLP protocol %r from the environment is not supported; "
                "using http/protobuf (or set 'grpc')",
                env_protocol,
            )
    endpoint = kwargs.get("otlp_endpoint")
    headers = kwargs.get("otlp_headers")
    if headers is not None and not isinstance(headers, Mapping):
        raise ConfigurationError("otlp_headers must be a mapping of header name to value")
    log_level = kwargs.get("log_level", logging.WARNING)
    if isinstance(log_level, str):
        resolved = logging.getLevelName(log_level.upper())
        if not isinstance(resolved, int):
            raise ConfigurationError(f"log_level={log_level!r} is not a logging level name")
        log_level = resolved
    redactor = Redactor(
        keys=_strings(kwargs.get("redact_keys", ()), "redact_keys"),
        patterns=_strings(kwargs.get("redact_patterns", ()), "redact_patterns"),
    )
    return Settings(
        enabled=bool(enabled),
        db=db,
        capture=capture_set(kwargs.get("capture"), where="configure()"),
        max_value_bytes=max_bytes,
        redactor=redactor,
        log_level=log_level,
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        otlp_headers=headers,
        otlp_timeout=float(kwargs.get("otlp_timeout", 3.0)),
        otlp_explicit=endpoint is not None,
        service_name=kwargs.get("service_name"),
        worker_otlp=bool(kwargs.get("worker_otlp")) or _env_flag("SPANFLOW_WORKER_OTLP"),
    )


def _strings(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list of strings")
    return tuple(value)


def _resource(settings: Settings) -> Resource:
    env_attrs = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    extra: dict[str, str] = {}
    if settings.service_name:
        extra["service.name"] = settings.service_name
    elif not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in env_attrs:
        extra["service.name"] = _default_service_name()
    resource = Resource.create(extra)
    if "openinference.project.name" not in resource.attributes:
        # Phoenix files spans by project; default it to the service so runs are easy to find.
        project = str(resource.attributes.get("service.name", "spanflow"))
        resource = resource.merge(Resource({"openinference.project.name": project}))
    return resource


def _build(settings: Settings, tracer_provider: trace.TracerProvider | None) -> Runtime:
    if not settings.enabled:
        return Runtime(settings=settings, tracer=trace.NoOpTracer(), provider=None)
    installed = False
    provider = tracer_provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        if tracer_provider is not None:
            raise ConfigurationError(
                "configure(tracer_provider=...) needs an opentelemetry.sdk.trace.TracerProvider "
                "so spanflow can add its processors to it"
            )
        provider = TracerProvider(resource=_resource(settings))
        trace.set_tracer_provider(provider)
        installed = True
    processors: list[SpanProcessor] = []
    store = None
    if settings.db is not None:
        from spanflow.exporters.sqlite_store import SQLiteSpanProcessor

        service = provider.resource.attributes.get("service.name")
        store = SQLiteSpanProcessor(settings.db, service_name=str(service) if service else None)
        processors.append(store)
    if settings.otlp_explicit or (installed and _otlp_from_env()):
        from spanflow.exporters.otlp import otlp_processor

        otlp = otlp_processor(
            endpoint=settings.otlp_endpoint,
            protocol=settings.otlp_protocol,
            headers=settings.otlp_headers,
            timeout=settings.otlp_timeout,
        )
        if otlp is not None:
            processors.append(otlp)
    fanout = _fanouts.get(provider)
    if fanout is None:
        fanout = _fanouts[provider] = _Fanout()
        provider.add_span_processor(fanout)
    fanout.use(tuple(processors))
    from . import __version__

    tracer = provider.get_tracer("spanflow", __version__)
    return Runtime(
        settings=settings,
        tracer=tracer,
        provider=provider,
        processors=tuple(processors),
        store=store,
        sampler_blind=attribute_blind(provider.sampler),
    )


def _otlp_from_env() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(
    *,
    db: str | os.PathLike[str] | bool | None = None,
    enabled: bool | None = None,
    capture: Capture | bool | None = None,
    max_value_bytes: int | None = None,
    redact_keys: Iterable[str] = (),
    redact_patterns: Iterable[str] = (),
    log_level: int | str | None = logging.WARNING,
    otlp_endpoint: str | None = None,
    otlp_protocol: Literal["http/protobuf", "grpc"] | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_timeout: float = 3.0,
    service_name: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    worker_otlp: bool | None = None,
) -> None:
    """Configure spanflow explicitly (optional: the first run configures itself).

    Args:
        db: SQLite store path (default ``$SPANFLOW_DB`` or ``./.spanflow/traces.db``); ``False``
            turns the local store off.
        enabled: ``False`` makes decorated calls plain calls (default: on unless
            ``SPANFLOW_DISABLED=1`` or ``OTEL_SDK_DISABLED=true``).
        capture: what to record of every step: ``"all"``, ``"inputs"``, ``"outputs"``, ``"none"``.
        max_value_bytes: size limit of one recorded value; longer values are cut, marked.
        redact_keys: extra key names (substrings) whose values are never recorded.
        redact_patterns: extra regular expressions for secret-shaped text.
        log_level: ``logging`` records at or above it, emitted during a step, become span events;
            ``None`` turns log capture off.
        otlp_endpoint: OTLP base URL (``http://localhost:4318``) to export to, besides the store.
        otlp_protocol: ``"http/protobuf"`` (default) or ``"grpc"``.
        otlp_headers: extra headers for the OTLP exporter (e.g. an API key).
        otlp_timeout: seconds one export may take; bounds what a dead endpoint costs at exit.
        service_name: ``service.name`` when spanflow installs the provider (default: the script).
        tracer_provider: an SDK provider to add spanflow's processors to, instead of the global.
        worker_otlp: steps sent to executors also export their spans over OTLP from the worker
            (with these OTLP settings), so a worker that dies mid-task still leaves the spans
            that had ended (default: ``$SPANFLOW_WORKER_OTLP``).

    Raises:
        ConfigurationError: an option is invalid; the message says how to fix it.
    """
    kwargs: dict[str, Any] = {
        "redact_keys": redact_keys,
        "redact_patterns": redact_patterns,
        "log_level": log_level,
        "otlp_timeout": otlp_timeout,
    }
    for key, value in {
        "db": db,
        "enabled": enabled,
        "capture": capture,
        "max_value_bytes": max_value_bytes,
        "otlp_endpoint": otlp_endpoint,
        "otlp_protocol": otlp_protocol,
        "otlp_headers": otlp_headers,
        "service_name": service_name,
        "worker_otlp": worker_otlp,
    }.items():
        if value is not None:
            kwargs[key] = value
    settings = _resolve(kwargs)  # validate before touching the current runtime
    global _runtime
    with _lock:
        old = _runtime
        _runtime = _build(settings, tracer_provider)
        _install_hooks(_runtime)
    if old is not None:
        old.shutdown()


def get_runtime() -> Runtime:
    """The live runtime, built from the environment on first use."""
    rt = _runtime
    if rt is not None:
        return rt
    with _lock:
        if _runtime is None:
            try:
                _set(_build(_resolve({}), None))
            except Exception:
                # Zero-config start-up never raises into the application (an environment
                # mistake included): log it, count it, and run the calls unrecorded.
                logger.exception("spanflow: could not start recording; running without it")
                count("startup_errors")
                _set(
                    Runtime(
                        settings=Settings(enabled=False), tracer=trace.NoOpTracer(), provider=None
                    )
                )
        assert _runtime is not None
        return _runtime


def _set(rt: Runtime) -> None:
    global _runtime
    _runtime = rt
    _install_hooks(rt)


def use_store(db: Path) -> None:
    """Make sure spans are recorded into ``db`` (replay records the new run next to the old)."""
    global _runtime
    rt = get_runtime()
    current = rt.settings.db
    if current is not None and _same_file(current, db):
        return
    with _lock:
        settings = replace(rt.settings, db=db, enabled=True)
        provider = rt.provider if isinstance(rt.provider, TracerProvider) else None
        _runtime = _build(settings, provider)
        _install_hooks(_runtime)
    rt.shutdown()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def stats() -> dict[str, int]:
    """Counters of telemetry problems and work done: dropped spans, write and export errors.

    Telemetry never raises into the application; this is where its troubles show up.
    """
    with _counters_lock:
        out = dict(_counters)
    rt = _runtime
    if rt is not None and rt.store is not None:
        try:
            for key, value in rt.store.stats().items():
                out[f"store.{key}"] = value
        except Exception:
            logger.exception("spanflow: reading store stats failed")
    return out


def flush(timeout: float = 5.0) -> bool:
    """Write out every finished span now (store and exporters); True when all finished in time."""
    rt = _runtime
    return True if rt is None else rt.flush(int(timeout * 1000))


def store_path() -> Path | None:
    """The local store this process writes to, or None when the store is off."""
    rt = _runtime
    return rt.settings.db if rt is not None else None


_hooks_installed = False
_SIGTERM_FLUSH_S = 3.0


def _install_hooks(rt: Runtime) -> None:
    """Flush at exit and on SIGTERM; capture log records. Done once per process."""
    global _hooks_installed
    from .logs import install_log_capture

    install_log_capture()
    if _hooks_installed or not rt.enabled:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # pragma: no cover - embedded interpreters
            pass


def _at_exit() -> None:
    rt = _runtime
    if rt is not None:
        rt.shutdown()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Write what has finished, then die the way SIGTERM would have killed us. The flush runs in
    # a thread with a bounded wait: the signal may have interrupted this thread while it held a
    # lock the flush needs, and a handler that blocks on it would hang the process for good.
    flusher = threading.Thread(target=_at_exit, name="spanflow-sigterm-flush", daemon=True)
    flusher.start()
    flusher.join(_SIGTERM_FLUSH_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def reset_for_tests() -> None:
    """Forget the current runtime (shutting its processors down) so the next call rebuilds it."""
    global _runtime
    with _lock:
        old, _runtime = _runtime, None
        with _counters_lock:
            _counters.clear()
    if old is not None:
        old.shutdown()
