"""Steps on Ray: a private local cluster, and a two-node cluster on loopback addresses.

The local cluster is started once for the session (one CPU, no dashboard, no usage stats) and
must leave no process behind. The two-node cluster runs with its driver in a network namespace of
its own, whose only interface is the loopback one, so nothing Ray starts is reachable from
outside however it binds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import executor_checks as ec
import psutil  # type: ignore[import-untyped]
import pytest
import spanflow
from opentelemetry.sdk.resources import PROCESS_PID
from spanflow import attributes as attr

from tests.conftest import Recorded

pytestmark = pytest.mark.ray

if os.environ.get("SPANFLOW_REQUIRE_SERVICES"):
    import ray
else:
    ray = pytest.importorskip("ray")

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent.parent
LOOPBACK = ("127.", "::1", "::ffff:127.")


def _ray_processes(marker: str, *, children: bool = False) -> list[psutil.Process]:
    """Processes whose command line names ``marker`` (a Ray temp dir), and with ``children``
    the Ray processes under this one (workers rename themselves ``ray::...``)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.Process().children(recursive=True) if children else []:
        try:
            if proc.name().startswith(("ray", "gcs_server")):
                found[proc.pid] = proc
        except psutil.Error:
            continue
    for proc in psutil.process_iter():
        try:
            if marker in " ".join(proc.cmdline()):
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def _wait_gone(procs: list[psutil.Process], timeout: float = 60) -> list[str]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    out = []
    for proc in alive:
        try:
            out.append(f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            continue
    return out


def _auth_env(directory: Path) -> dict[str, str]:
    token = directory / "auth_token"
    token.write_text(os.urandom(16).hex())
    token.chmod(0o600)
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@pytest.fixture(scope="session")
def ray_executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spanflow.RayExecutor]:
    """A private local Ray instance for the session; no Ray process may outlive it."""
    temp = tempfile.mkdtemp(prefix="sfray-")  # short: Ray puts unix sockets under it
    env = _auth_env(tmp_path_factory.mktemp("ray-auth"))
    processes: list[psutil.Process] = []
    try:
        with pytest.MonkeyPatch.context() as mp:
            # Ray read RAY_AUTH_MODE when it was imported; ray.init turns token mode on itself
            # for a new local instance (with the token file named here instead of ~/.ray).
            mp.delenv("RAY_AUTH_MODE", raising=False)
            for key, value in env.items():
                if key != "RAY_AUTH_MODE":
                    mp.setenv(key, value)
            # A stray cluster address must be ignored: address=None means a private instance.
            mp.setenv("RAY_ADDRESS", "127.0.0.1:9")
            executor = spanflow.RayExecutor(
                num_cpus=1,
                resources={"ram_disk": 4},
                _temp_dir=temp,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={
                    "env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO)])}
                },
            )
            try:
                assert executor.submit(sum, [1, 2]).result(timeout=180) == 3
                assert executor.started
                assert os.environ.get("RAY_AUTH_MODE") == "token"
                processes = _ray_processes(temp, children=True)
                yield executor
            finally:
                executor.shutdown()
        stray = _wait_gone(processes) + _wait_gone(_ray_processes(temp), timeout=10)
        assert not stray, f"Ray processes left running: {stray}"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@spanflow.workflow
async def fan_out(step: Any, items: list[Any], executor: Any) -> list[Any]:
    return await spanflow.map(step, items, executor=executor)


def test_map_on_ray_is_one_trace(
    recorded_with_store: tuple[Recorded, Path], ray_executor: spanflow.RayExecutor
) -> None:
    recorded, db = recorded_with_store
    assert asyncio.run(fan_out(ec.square, list(range(8)), ray_executor)) == [
        x * 10 + x * x for x in range(8)
    ]
    spanflow.flush()
    run_id, spans = ec.only_run(db)
    ec.check_fan_out(spans, step="square", count=8, caller_pid=os.getpid())
    assert len(spans) == 1 + 8 * 4
    assert ec.worker_span_ids(spans) <= ec.hex_ids(recorded.spans)
    assert {format(s.context.trace_id, "032x") for s in recorded.spans} == {run_id}


def test_failure_on_ray_reraises_with_its_spans(
    recorded_with_store: tuple[Recorded, Path], ray_executor: spanflow.RayExecutor
) -> None:
    _, db = recorded_with_store
    with pytest.raises(spanflow.RemoteStepError) as info:
        asyncio.run(fan_out(ec.square_or_fail, [3], ray_executor))
    assert info.value.type_name == "ValueError"
    assert info.value.remote_message == "item 3 is cursed"
    assert "square_or_fail" in info.value.remote_traceback
    spanflow.flush()
    _, spans = ec.only_run(db)
    (step,) = ec.failed(spans, "square_or_fail")
    (worker,) = ec.failed(spans, "run/square_or_fail")
    assert worker.parent_id == step.span_id
    assert [s.parent_id for s in spans if s.name == "leaf"] == [worker.span_id]


def test_resource_hints_reach_ray(recorded: Recorded, ray_executor: spanflow.RayExecutor) -> None:
    (held,) = asyncio.run(fan_out(ec.assigned, [1], ray_executor))
    assert held == {"CPU": 0.5, "ram_disk": 1.0}


def test_sync_and_async_steps_on_ray(
    recorded: Recorded, ray_executor: spanflow.RayExecutor
) -> None:
    remote = spanflow.step(name="remote_square", executor=ray_executor)(ec.body(ec.square))

    @spanflow.workflow
    def flow() -> int:
        return int(remote(3))

    assert flow() == 39
    (worker,) = recorded.children(recorded.one("remote_square"))
    assert worker.resource.attributes[PROCESS_PID] != os.getpid()
    assert asyncio.run(fan_out(ec.async_square, [4], ray_executor)) == [16]
    (async_worker,) = recorded.named("run/async_square")
    assert [c.name for c in recorded.children(async_worker)] == ["leaf"]


def test_nested_fan_out_from_a_ray_worker(
    recorded_with_store: tuple[Recorded, Path], ray_executor: spanflow.RayExecutor
) -> None:
    _, db = recorded_with_store
    assert asyncio.run(fan_out(ec.fan_out_again, [1], ray_executor)) == [[10, 20]]
    spanflow.flush()
    _, spans = ec.only_run(db)
    (outer,) = ec.check_fan_out(spans, step="fan_out_again", count=1, nested=()).values()
    leafs = [s for s in spans if s.name == "leaf"]
    assert len(leafs) == 2 and {s.parent_id for s in leafs} == {outer.span_id}
    for leaf in leafs:  # each nested step ran in a worker of its own, filed under it
        (worker,) = [s for s in spans if s.parent_id == leaf.span_id]
        assert worker.name == "run/leaf"
        assert worker.resource[PROCESS_PID] != outer.resource[PROCESS_PID]
        assert [s.name for s in spans if s.parent_id == worker.span_id] == ["library.call"]


def test_private_cluster_listens_on_loopback_only(ray_executor: spanflow.RayExecutor) -> None:
    context = ray.get_runtime_context()
    assert context.gcs_address.startswith("127.0.0.1:")  # not the stray RAY_ADDRESS
    listening = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ray" not in " ".join(proc.cmdline()):
                continue  # other services of the test session (the Phoenix receiver)
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        listening += [(proc.name(), c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening, "found no listening Ray process"
    assert [x for x in listening if not x[1].startswith(LOOPBACK)] == []


DRIVER = textwrap.dedent(
    """
    import ctypes, fcntl, json, os, socket, struct, subprocess, sys, time

    # A network namespace whose only interface is the loopback one (brought up here).
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        sys.exit(77)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS

    import asyncio
    import psutil  # type: ignore[import-untyped]
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    import spanflow

    out, temp, db, pythonpath = sys.argv[1:5]
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    port = "6380"
    common = ["--num-cpus=1", "--disable-usage-stats", "--temp-dir=" + temp, "--block"]
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--node-ip-address=127.0.0.2", "--port=" + port,
         "--include-dashboard=false", *common])
    nodes = [head]

    @spanflow.step
    def leaf(x):
        return x + 1

    @spanflow.step
    def where(x):
        leaf(x)
        return x, os.getpid(), ray.get_runtime_context().get_node_id()

    @spanflow.workflow
    async def across(on_head, on_worker):
        a, b = await spanflow.parallel(
            spanflow.map(where, [1, 2], executor=on_head),
            spanflow.map(where, [3, 4], executor=on_worker),
        )
        return a + b

    try:
        spanflow.configure(db=db)
        executor = spanflow.RayExecutor(
            "127.0.0.2:" + port, log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
        deadline = time.time() + 120
        while True:
            try:
                executor.submit(int).result(timeout=60)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        nodes.append(subprocess.Popen(
            [ray_cli, "start", "--address=127.0.0.2:" + port, "--node-ip-address=127.0.0.3",
             *common]))
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.time() > deadline:
                raise TimeoutError("the second node did not join")
            time.sleep(0.5)
        ids = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
        pin = lambda ip: executor.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(ids[ip], soft=False))
        result = asyncio.run(across(pin("127.0.0.2"), pin("127.0.0.3")))
        spanflow.flush()
        family = [p.pid for p in psutil.Process().children(recursive=True)]
        with open(out, "w") as f:
            json.dump({"result": result, "nodes": ids, "processes": family,
                       "interfaces": [name for _, name in socket.if_nameindex()]}, f)
        ray.shutdown()
    finally:
        for node in reversed(nodes):
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
    """
)


@pytest.mark.slow
def test_two_node_cluster_on_loopback_is_one_trace(tmp_path: Path) -> None:
    temp = tempfile.mkdtemp(prefix="sfray2-")
    out, db = tmp_path / "out.json", tmp_path / "traces.db"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_", "RAY_"))
    }
    env = {**clean, **_auth_env(tmp_path)}
    pythonpath = os.pathsep.join([str(TESTS_DIR), str(REPO)])
    try:
        proc = subprocess.run(
            [sys.executable, str(script), str(out), temp, str(db), pythonpath],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode == 77:
            pytest.skip("cannot create a network namespace here (needs CAP_SYS_ADMIN)")
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads(out.read_text())
        stray = _wait_gone([_process(pid) for pid in report["processes"] if _process(pid)])
        stray += _wait_gone(_ray_processes(temp), timeout=10)
        assert not stray, f"Ray processes left running: {stray}"
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert report["interfaces"] == ["lo"]
    by_node: dict[str, set[int]] = {}
    for _, pid, node in report["result"]:
        by_node.setdefault(node, set()).add(pid)
    head, worker = report["nodes"]["127.0.0.2"], report["nodes"]["127.0.0.3"]
    assert set(by_node) == {head, worker}
    assert sorted(x for x, _, node in report["result"] if node == worker) == [3, 4]
    _, spans = ec.only_run(db)
    workers = ec.check_fan_out(spans, step="where", count=4, nested=("leaf",))
    span_pids = {w.resource[PROCESS_PID] for w in workers.values()}
    assert span_pids == by_node[head] | by_node[worker]  # spans from both nodes, one trace
    assert all(s.attributes.get(attr.RUN_ID) for s in spans if s.name in ("where", "leaf"))
    assert len(spans) == 1 + 4 * 3


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def test_executor_options_share_the_connection(ray_executor: spanflow.RayExecutor) -> None:
    pinned = ray_executor.options(num_cpus=0.25)
    assert pinned.submit(lambda: 1).result(timeout=60) == 1
    assert pinned.started  # one instance behind both
    assert repr(pinned) == "RayExecutor('local')"
