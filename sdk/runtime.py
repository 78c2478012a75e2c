"""The live runtime: the provider, the tracer and the processors a decorated call records with.

Zero configuration is the normal case: the first decorated call builds the runtime from the
environment (``config``). ``configure()`` builds it explicitly and may be called again (tests do,
per test). The only SDK module that reaches the exporters (lazily, when a store or an OTLP
endpoint is asked for); it also owns the process hooks (flush at exit and on SIGTERM).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from . import _stats
from ._stats import count
from .config import Capture, Settings, otlp_from_env, resolve, resource_for
from .errors import ConfigurationError
from .recording.logs import install_log_capture
from .recording.scrub import scrub_span
from .recording.span_values import attribute_blind, quiet_at_start
from .values.redact import Redactor

if TYPE_CHECKING:
    from spanflow.exporters.sqlite_store import SQLiteSpanProcessor

__all__ = [
    "Forwarder",
    "Runtime",
    "configure",
    "flush",
    "forwarder_of",
    "get_runtime",
    "install",
    "reset_for_tests",
    "stats",
    "store_path",
    "use_store",
]

logger = logging.getLogger("spanflow")


class Forwarder(SpanProcessor):
    """The one processor spanflow adds to a provider; it forwards to the current runtime's.

    OpenTelemetry cannot remove a processor from a provider, so re-configuring swaps the list
    behind this object instead of stacking processors.
    """

    #: Its on_start reads no attributes: the store registers a run when its id shows up.
    quiet_at_start: Final = True

    def __init__(self) -> None:
        self.processors: tuple[SpanProcessor, ...] = ()
        self.redactor = Redactor()
        self._direct_end: Callable[[ReadableSpan], None] | None = None

    def use(self, processors: tuple[SpanProcessor, ...], redactor: Redactor) -> None:
        """Forward to ``processors`` from now on, every span scrubbed of secrets by ``redactor``."""
        self.processors = processors
        self.redactor = redactor
        # The usual case, the local store alone, is called directly: one Python call fewer on
        # both ends of every span. Its hooks never raise (see SQLiteSpanProcessor).
        direct = len(processors) == 1 and getattr(processors[0], "never_raises", False)
        self._direct_end = processors[0].on_end if direct else None
        if direct:
            self.on_start = processors[0].on_start  # type: ignore[method-assign]
        else:
            self.__dict__.pop("on_start", None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for p in self.processors:
            try:
                p.on_start(span, parent_context=parent_context)
            except Exception:
                count("processor_errors")
                logger.exception("spanflow: span processor %r failed in on_start", p)

    def on_end(self, span: ReadableSpan) -> None:
        if not self.processors:
            return
        try:
            span = scrub_span(span, self.redactor)
        except Exception:
            count("redaction_errors")
            logger.exception("spanflow: redacting span %r failed; it is not stored", span.name)
            return
        direct = self._direct_end
        if direct is not None:
            direct(span)
            return
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


_forwarders: weakref.WeakKeyDictionary[TracerProvider, Forwarder] = weakref.WeakKeyDictionary()


def forwarder_of(provider: TracerProvider) -> Forwarder | None:
    """The processor spanflow added to ``provider``, if it added one."""
    return _forwarders.get(provider)


def forget_forwarder(provider: TracerProvider) -> None:
    """Stop treating ``provider``'s forwarder as spanflow's (a worker replaced its processors)."""
    _forwarders.pop(provider, None)


@dataclass(eq=False)
class Runtime:
    """What a decorated call needs at hand: settings, tracer and the processors it owns."""

    settings: Settings
    tracer: trace.Tracer
    provider: trace.TracerProvider | None
    processors: tuple[SpanProcessor, ...] = ()
    store: SQLiteSpanProcessor | None = None  # when the local store is on
    otlp: SpanProcessor | None = None  # spanflow's own OTLP exporter, when exporting
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
        provider = TracerProvider(resource=resource_for(settings))
        trace.set_tracer_provider(provider)
        installed = True
    processors: list[SpanProcessor] = []
    store = None
    if settings.db is not None:
        from spanflow.exporters.sqlite_store import SQLiteSpanProcessor

        service = provider.resource.attributes.get("service.name")
        store = SQLiteSpanProcessor(settings.db, service_name=str(service) if service else None)
        processors.append(store)
    otlp: SpanProcessor | None = None
    if not settings.otlp_off and (settings.otlp_explicit or (installed and otlp_from_env())):
        otlp = otlp_exporter(
            endpoint=settings.otlp_endpoint,
            protocol=settings.otlp_protocol,
            headers=settings.otlp_headers,
            timeout=settings.otlp_timeout,
        )
        if otlp is not None:
            processors.append(otlp)
    forwarder = _forwarders.get(provider)
    if forwarder is None:
        forwarder = _forwarders[provider] = Forwarder()
        provider.add_span_processor(forwarder)
    forwarder.use(tuple(processors), settings.redactor)
    from . import __version__

    tracer = provider.get_tracer("spanflow", __version__)
    return Runtime(
        settings=settings,
        tracer=tracer,
        provider=provider,
        processors=tuple(processors),
        store=store,
        otlp=otlp,
        sampler_blind=attribute_blind(provider.sampler),
    )


def otlp_exporter(
    *,
    endpoint: str | None,
    protocol: str,
    headers: Mapping[str, str] | None,
    timeout: float,
) -> SpanProcessor | None:
    """spanflow's OTLP span processor (None when no endpoint is known)."""
    from spanflow.exporters.otlp import otlp_processor

    return otlp_processor(endpoint=endpoint, protocol=protocol, headers=headers, timeout=timeout)


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
        otlp_endpoint: OTLP base URL (``http://localhost:4318``) to export to, besides the store;
            ``""`` turns OTLP export off even when ``OTEL_EXPORTER_OTLP_*`` is set.
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
    settings = resolve(kwargs)  # validate before touching the current runtime
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
                install(_build(resolve({}), None))
            except Exception:
                # Zero-config start-up never raises into the application (an environment
                # mistake included): log it, count it, and run the calls unrecorded.
                logger.exception("spanflow: could not start recording; running without it")
                count("startup_errors")
                install(
                    Runtime(
                        settings=Settings(enabled=False), tracer=trace.NoOpTracer(), provider=None
                    )
                )
        assert _runtime is not None
        return _runtime


def install(rt: Runtime) -> None:
    """Make ``rt`` the live runtime (the previous one is not shut down: a worker process replaces
    the runtime it inherited, whose processors belong to its caller)."""
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
    out = _stats.snapshot()
    rt = _runtime
    if rt is not None:
        for prefix, processor in (("store", rt.store), ("otlp", rt.otlp)):
            counters = getattr(processor, "stats", None)
            if counters is None:
                continue
            try:
                for key, value in counters().items():
                    out[f"{prefix}.{key}"] = value
            except Exception:
                logger.exception("spanflow: reading %s stats failed", prefix)
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
    install_log_capture(_log_settings)
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


def _log_settings() -> Settings | None:
    rt = _runtime
    return rt.settings if rt is not None and rt.enabled else None


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
        _stats.reset()
    if old is not None:
        old.shutdown()
