"""Settings: what to record and where, resolved from explicit arguments, the environment and
defaults. Pure data and validation; building the live runtime from it is ``runtime``'s job."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry.sdk.resources import Resource

from .errors import ConfigurationError
from .values.redact import Redactor

__all__ = [
    "DEFAULT_DB",
    "Capture",
    "Settings",
    "capture_set",
    "db_from_env",
    "otlp_from_env",
    "resolve",
    "resource_for",
]

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
    otlp_off: bool = False  # configure(otlp_endpoint=""): no OTLP, whatever the environment says
    service_name: str | None = None
    worker_otlp: bool = False


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def db_from_env() -> Path:
    """The store path when nothing was configured: ``$SPANFLOW_DB`` or the default."""
    env_db = os.environ.get("SPANFLOW_DB")
    return Path(env_db) if env_db else DEFAULT_DB


def otlp_from_env() -> bool:
    """Whether the standard OTLP variables ask for an exporter."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def resolve(kwargs: Mapping[str, Any]) -> Settings:
    """Settings from ``configure()``'s arguments (absent ones from the environment)."""
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
        db = db_from_env()
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
    otlp_off = endpoint == ""
    if otlp_off:
        endpoint = None
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
        otlp_off=otlp_off,
        service_name=kwargs.get("service_name"),
        worker_otlp=bool(kwargs.get("worker_otlp")) or _env_flag("SPANFLOW_WORKER_OTLP"),
    )


def _strings(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list of strings")
    return tuple(value)


def _default_service_name() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else "")
    stem = Path(path).stem if path else ""
    return stem if stem and stem not in {"-c", "__main__", "pytest"} else "spanflow"


def resource_for(settings: Settings) -> Resource:
    """The OTel resource of a provider spanflow installs itself."""
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
