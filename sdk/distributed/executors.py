"""Where remote steps run: any ``concurrent.futures.Executor``, and Ray through :class:`RayExecutor`.

spanflow needs one thing from an engine: ``submit(fn, task)`` returning a future. Standard
executors (``ProcessPoolExecutor``, Dask's ``client.get_executor()``) provide it as they are;
:class:`RayExecutor` adds Ray's resources (GPUs, fractional CPUs, custom resources), scheduling
strategies and code shipping. Step ``resources=`` hints reach Ray and are ignored elsewhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from typing import Any

from ..errors import ConfigurationError

#: Ray ``.options()`` keywords; any other key of ``resources=`` is a custom Ray resource.
RAY_TASK_OPTIONS = frozenset(
    {
        "accelerator_type",
        "concurrency_groups",
        "enable_task_events",
        "fallback_strategy",
        "label_selector",
        "max_calls",
        "max_retries",
        "memory",
        "name",
        "num_cpus",
        "num_gpus",
        "object_store_memory",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "resources",
        "retry_exceptions",
        "runtime_env",
        "scheduling_strategy",
    }
)


def submit(
    executor: Any, fn: Callable[[Any], Any], task: Any, resources: Mapping[str, Any] | None
) -> tuple[Future[Any], Callable[[], None]]:
    """Submit ``fn(task)``; returns its future and a function that cancels it (best effort)."""
    if isinstance(executor, RayExecutor):
        return executor.submit_with(resources or {}, fn, task)
    future: Future[Any] = executor.submit(fn, task)

    def cancel() -> None:
        future.cancel()  # only a task that has not started can be called off

    return future, cancel


def ray_options(resources: Mapping[str, Any]) -> dict[str, Any]:
    """Ray task options for ``resources=`` hints: options as they are, other keys as resources."""
    options: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in resources.items():
        if key in RAY_TASK_OPTIONS:
            options[key] = value
        else:
            custom[key] = value
    if custom:
        options["resources"] = {**options.get("resources", {}), **custom}
    return options


class RayExecutor(Executor):
    """Run steps as Ray tasks, on a private local cluster or on a cluster you started.

    ``RayExecutor()`` starts a private local Ray instance (``address="local"``), bound to
    127.0.0.1, the first time a task is submitted; it never attaches to a cluster it happens to
    find (``RAY_ADDRESS`` or ``/tmp/ray``). ``RayExecutor("auto")`` or
    ``RayExecutor("10.0.0.5:6379")`` connects to a running cluster. In a process that is already
    connected (a Ray worker, or after your own ``ray.init``) the existing connection is used.

    Needs Ray: ``pip install 'spanflow[ray]'``.

    Args:
        address: ``None`` for a private local cluster, else what ``ray.init(address=...)`` takes.
        **ray_init_kwargs: passed to ``ray.init`` (``num_cpus``, ``runtime_env``, ...).
    """

    def __init__(self, address: str | None = None, **ray_init_kwargs: Any) -> None:
        self._cluster = _Cluster(address, ray_init_kwargs)
        self._options: dict[str, Any] = {}

    def options(self, **task_options: Any) -> RayExecutor:
        """The same cluster with default Ray task options (``scheduling_strategy=``, ...)."""
        derived = object.__new__(RayExecutor)
        derived._cluster = self._cluster
        derived._options = {**self._options, **task_options}
        return derived

    @property
    def started(self) -> bool:
        """Whether this executor started (and so owns) a local Ray instance."""
        return self._cluster.owned

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a Ray task; returns a ``concurrent.futures.Future``."""
        future, _ = self.submit_with({}, _call, fn, args, kwargs)
        return future

    def submit_with(
        self, resources: Mapping[str, Any], fn: Callable[..., Any], *args: Any
    ) -> tuple[Future[Any], Callable[[], None]]:
        """Run ``fn(*args)`` with extra task options; returns the future and a cancel function."""
        ray = self._cluster.connect()
        options = {**self._options, **ray_options(resources)} if resources else self._options
        remote = self._cluster.remote(fn)
        ref = (remote.options(**options) if options else remote).remote(*args)

        def cancel() -> None:
            with contextlib.suppress(Exception):
                ray.cancel(ref)

        return ref.future(), cancel

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the local Ray instance if this executor started it (else nothing)."""
        self._cluster.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to a worker inside a step's options: it reconnects there (to that worker's cluster).
        return (_rebuild, (self._cluster.address, self._cluster.init_kwargs, self._options))

    def __repr__(self) -> str:
        where = self._cluster.address or "local"
        return f"RayExecutor({where!r})"


def _rebuild(
    address: str | None, init_kwargs: dict[str, Any], options: dict[str, Any]
) -> RayExecutor:
    return RayExecutor(address, **init_kwargs).options(**options)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class _Cluster:
    """One connection to Ray, shared by an executor and the executors derived from it.

    ``ray.init`` runs on the main thread or on a thread of its own that lives until
    :meth:`close`: Ray ties the processes it starts to the thread that started them, and a
    short-lived worker thread (say, the anyio thread a sync step runs in) would leave them behind.
    """

    def __init__(self, address: str | None, init_kwargs: dict[str, Any]) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs)
        self.owned = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._remotes: dict[Any, Any] = {}

    def connect(self) -> Any:
        """The ``ray`` module, connected (starting the local instance on first use)."""
        try:
            import ray
        except ImportError as exc:
            raise ConfigurationError(
                "spanflow.RayExecutor needs Ray: pip install 'spanflow[ray]'"
            ) from exc
        if ray.is_initialized():
            return ray
        with self._lock:
            if ray.is_initialized():
                return ray
            if self._thread is None and threading.current_thread() is threading.main_thread():
                self._start(ray)  # the main thread lives as long as the process
                self._ready.set()
            elif self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, args=(ray,), name="spanflow-ray", daemon=True
                )
                self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return ray

    def remote(self, fn: Callable[..., Any]) -> Any:
        """``ray.remote(fn)``, made once per function."""
        found = self._remotes.get(fn)
        if found is None:
            import ray

            found = self._remotes[fn] = ray.remote(fn)
        return found

    def _start(self, ray: Any) -> None:
        private = self.address in (None, "local")
        try:
            if private:
                kwargs = {"include_dashboard": False, **self.init_kwargs}
                with _loopback_only(kwargs):
                    ray.init(address="local", **kwargs)
            else:
                ray.init(address=self.address, **self.init_kwargs)
            self.owned = private
        except BaseException as exc:
            self._error = exc

    def _serve(self, ray: Any) -> None:
        try:
            self._start(ray)
        finally:
            self._ready.set()
        if self.owned:
            self._stop.wait()
            with contextlib.suppress(Exception):
                ray.shutdown()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            owned_here = thread is None and self.owned
        if owned_here:
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
        elif thread is not None:
            self._stop.set()
            thread.join(timeout=60)
        else:
            return
        self.owned = False
        self._remotes.clear()
        self._ready.clear()
        self._stop.clear()
        self._error = None


@contextlib.contextmanager
def _loopback_only(kwargs: Mapping[str, Any]) -> Iterator[None]:
    """Keep a private local cluster on 127.0.0.1 (Ray otherwise listens on every interface).

    Ray binds its servers to loopback only when the node address is 127.0.0.1, which it chooses
    when ``ENABLE_RAY_CLUSTER`` is off; that switch is read at call time, so it is turned off for
    the duration of ``ray.init``. An explicit ``_node_ip_address`` is left alone.
    """
    if "_node_ip_address" in kwargs:
        yield
        return
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without this module: keep its defaults
        yield
        return
    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
