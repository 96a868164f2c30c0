"""Shared test helpers: real processes on loopback, cleaned up even when a test fails."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opentela.testing.serving import free_port

PY = sys.executable
NODE = [PY, "-m", "opentela.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """An ``opentela-node`` command as a user runs it, with no ``OTELA_*`` of ours leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTELA_")}
    return subprocess.run(
        [*NODE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**clean, **(env or {})},
    )


def one_error_line(p: subprocess.CompletedProcess, code: int, match: str) -> None:
    """A mistake is one ``Error:`` line on stderr, nothing on stdout, no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in p.stderr and p.stdout == ""


def wait_for(
    pred: Callable[[], Any], timeout_s: float = 15.0, interval_s: float = 0.05, what: str = ""
) -> Any:
    """Poll with a deadline: the only way tests wait for something to happen."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or pred}: {last_exc!r}")


def http_json(
    url: str, method: str = "GET", body: Any = None, timeout: float = 10
) -> tuple[int, dict, Any]:
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, dict(r.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return e.code, dict(e.headers), parsed


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout_s: float = 10) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Node:
    proc: Proc
    home: Path
    host: str
    http_port: int
    p2p_port: int
    peer_id: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def maddr(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def models(self) -> list[str]:
        _, _, body = http_json(f"{self.url}/v1/models")
        return sorted(m["id"] for m in body["data"])


@dataclass
class Cluster:
    """Starts real processes; ``close()`` ends exactly those, by PID."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        f = log.open("wb")
        popen = subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def upstream(
        self, name: str, model: str, host: str = "127.0.0.1", port: int = 0, *extra: str
    ) -> tuple[Proc, int]:
        port = port or free_port(host)
        proc = self.spawn(
            name,
            [
                PY,
                "-m",
                "opentela.testing.fake_upstream",
                "--host",
                host,
                "--port",
                str(port),
                "--model",
                model,
                *extra,
            ],
        )
        wait_for(lambda: http_json(f"http://{host}:{port}/health")[0] == 200, 15, what=f"{name} up")
        return proc, port

    def node(
        self,
        name: str,
        host: str,
        *args: str,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Node:
        home = self.tmp / name
        home.mkdir(exist_ok=True)
        if not (home / "identity.key").exists():
            subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
        pid = subprocess.run(
            [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
        ).stdout.strip()
        http_port, p2p_port = free_port(host), free_port(host)
        proc = self.spawn(
            name,
            [
                *NODE,
                "start",
                "--home",
                str(home),
                "--http-host",
                host,
                "--http-port",
                str(http_port),
                "--p2p-host",
                host,
                "--p2p-port",
                str(p2p_port),
                "--log-format",
                "json",
                *args,
            ],
            env,
        )
        node = Node(proc, home, host, http_port, p2p_port, pid)
        if wait:
            try:
                wait_for(
                    lambda: http_json(f"{node.url}/v1/health")[0] == 200, 30, what=f"{name} healthy"
                )
            except AssertionError:
                raise AssertionError(f"{name} did not start:\n{proc.tail()}") from None
        return node

    def restart(self, node: Node, *args: str) -> Node:
        """Same identity, same ports: a node coming back after a crash."""
        proc = self.spawn(
            node.proc.name + "-again",
            [
                *NODE,
                "start",
                "--home",
                str(node.home),
                "--http-host",
                node.host,
                "--http-port",
                str(node.http_port),
                "--p2p-host",
                node.host,
                "--p2p-port",
                str(node.p2p_port),
                "--log-format",
                "json",
                *args,
            ],
        )
        new = Node(proc, node.home, node.host, node.http_port, node.p2p_port, node.peer_id)
        wait_for(lambda: http_json(f"{new.url}/v1/health")[0] == 200, 30, what="restart healthy")
        return new

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def dump(self) -> str:
        return "\n".join(f"--- {p.name} (rc={p.popen.poll()}) ---\n{p.tail()}" for p in self.procs)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(c.dump())
        c.close()


# -- a throwaway PostgreSQL server (scripts/postgres-up.sh), for tests/store and integration ---

REPO = Path(__file__).resolve().parents[1]
PG_PORT = int(os.environ.get("OPENTELA_PG_PORT", "55432"))


def _pg_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of the scripts/postgres-up.sh database (the server's; tests use ``pg_url``)."""
    was_running = _pg_listening(PG_PORT)
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "postgres-up.sh")],
        capture_output=True,
        text=True,
        timeout=900,  # a first apt-get install of postgresql
        stdin=subprocess.DEVNULL,
    )
    if up.returncode != 0 or not up.stdout.strip():
        last = (up.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no PostgreSQL: scripts/postgres-up.sh failed: {last}")
    yield up.stdout.strip().splitlines()[-1]
    if not was_running:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "postgres-down.sh")],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    import psycopg

    base = postgres_server.rsplit("/", 1)[0]
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- in CI, a real-component test that skips is a failure --------------------------------------
#
# Slurm, network namespaces, the real model and the deploy manifests skip on a machine that
# lacks them (not root, no llama.cpp, ...). On a developer's laptop that is fine; in CI
# (CI=true) it would turn `make test` green while proving nothing, so there it fails instead.

TESTS_DIR = Path(__file__).resolve().parent
REAL_COMPONENT_DIRS = frozenset({"slurm", "netns", "conformance", "deploy", "vllm"})

# The only skips CI tolerates: "<path under tests/>::<test name>" (or just the path, for a whole
# file) -> why this skip is legitimate. Keep it empty unless there is a reason to write down.
CI_ALLOWED_SKIPS: dict[str, str] = {
    "vllm/test_vllm_matrix.py": "opt-in, `make conformance-vllm`: vLLM's CPU build takes ~4 min "
    "and 3.6 GB to install and over a minute per server to start, past CI's time budget",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_component: needs a real external component; in CI a skip fails"
    )


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _under_tests(path: Path) -> str | None:
    try:
        return Path(path).resolve().relative_to(TESTS_DIR).as_posix()
    except ValueError:
        return None


def _allowed_skip(rel: str, name: str) -> str | None:
    key = f"{rel}::{name}" if name else rel
    for k in (key, key.split("[", 1)[0], rel):
        if CI_ALLOWED_SKIPS.get(k):
            return CI_ALLOWED_SKIPS[k]
    return None


def _skip_reason(rep: pytest.TestReport | pytest.CollectReport) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


def _fail_skip_in_ci(rep: pytest.TestReport | pytest.CollectReport, rel: str, name: str) -> None:
    if rep.outcome != "skipped" or hasattr(rep, "wasxfail") or _allowed_skip(rel, name):
        return
    rep.outcome = "failed"
    rep.longrepr = (
        f"CI=true: real-component test {rel}{'::' + name if name else ''} was skipped "
        f"({_skip_reason(rep)}); in CI it must run. Provide the component, or add it to "
        "CI_ALLOWED_SKIPS in tests/conftest.py with the reason."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if _in_ci() and rep.skipped:
        rel = _under_tests(item.path)
        real = item.get_closest_marker("real_component") is not None
        if rel is not None and (real or rel.split("/", 1)[0] in REAL_COMPONENT_DIRS):
            _fail_skip_in_ci(rep, rel, item.nodeid.split("::", 1)[-1])
    setattr(item, f"rep_{rep.when}", rep)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A whole module skipped at import (``pytest.importorskip``, module-level skip)."""
    outcome = yield
    rep = outcome.get_result()
    if _in_ci() and rep.skipped and isinstance(collector, pytest.Module):
        rel = _under_tests(collector.path)
        if rel is not None and rel.split("/", 1)[0] in REAL_COMPONENT_DIRS:
            _fail_skip_in_ci(rep, rel, "")
