"""A --subprocess backend that exits: restarted and re-advertised, or the node drains and exits."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio
from conftest import Cluster, Node, free_port, http_json, wait_for

from opentela.worker.supervisor import MAX_RESTARTS, BackendSupervisor

MSG = [{"role": "user", "content": "hi"}]


def fake_backend(model: str) -> tuple[str, int]:
    port = free_port()
    cmd = (
        f"{sys.executable} -m opentela.testing.fake_upstream"
        f" --host 127.0.0.1 --port {port} --model {model}"
    )
    return cmd, port


def head_and_worker(cluster: Cluster, model: str, *extra: str) -> tuple[Node, Node, int]:
    cmd, port = fake_backend(model)
    head = cluster.node("head", "127.0.0.2")
    w = cluster.node(
        "w",
        "127.0.0.3",
        "--bootstrap",
        head.maddr,
        "--service.port",
        str(port),
        "--subprocess",
        cmd,
        *extra,
    )
    wait_for(lambda: head.models() == [model], 20, what="subprocess backend advertised")
    return head, w, port


def backend_stats(node: Node) -> dict[str, Any]:
    return http_json(f"{node.url}/v1/dnt/stats")[2]["worker"]["backend"]


def chat(node: Node, model: str) -> tuple[int, dict, Any]:
    return http_json(
        f"{node.url}/v1/chat/completions", "POST", {"model": model, "messages": MSG}, timeout=5
    )


def events(node: Node, name: str) -> list[dict[str, Any]]:
    out = []
    for line in node.proc.log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                out.append(entry)
    return out


def test_backend_is_stopped_with_the_node(cluster: Cluster) -> None:
    _, w, port = head_and_worker(cluster, "m-sub")
    assert "[backend] READY" in w.proc.log.read_text()
    stats = http_json(f"http://127.0.0.1:{port}/stats")
    assert stats[0] == 200
    backend_pid = _listener_pid(port)
    w.proc.signal(signal.SIGTERM)
    assert w.proc.popen.wait(15) == 0
    wait_for(lambda: not _pid_alive(backend_pid), 5, what="backend stopped with the node")


def _listener_pid(port: int) -> int:
    """PID of the process listening on 127.0.0.1:``port`` (a backend the node started; other
    loopback addresses may reuse the same port number)."""
    inode = None
    hexport = f"{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == "0100007F:" + hexport and parts[3] == "0A":  # 127.0.0.1 only
                inode = parts[9]
    assert inode, f"nobody listens on {port}"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no pid for port {port}")


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_killed_backend_is_restarted_and_advertised_again(cluster: Cluster) -> None:
    head, w, _ = head_and_worker(cluster, "m-again")
    first = backend_stats(w)
    assert first["state"] == "running" and first["restarts"] == 0
    assert first["restart_policy"] == "on-failure"
    os.kill(first["pid"], signal.SIGKILL)
    # While it restarts the model still exists, with no live replica: 503 + Retry-After, not 404.
    _, headers, body = wait_for(
        lambda: (r := chat(head, "m-again"))[0] == 503 and r, 5, what="503 while restarting"
    )
    assert "Retry-After" in headers and body["error"]["code"] == "no_live_replica"
    _, headers, _ = wait_for(
        lambda: (r := chat(head, "m-again"))[0] == 200 and r, 20, what="served again"
    )
    assert headers["X-Computing-Node"] == w.peer_id
    again = backend_stats(w)
    assert again["restarts"] == 1 and again["state"] == "running" and again["pid"] != first["pid"]
    assert [(e["signal"], e["code"]) for e in events(w, "backend.exited")] == [("SIGKILL", None)]
    assert [e["attempt"] for e in events(w, "backend.restarting")] == [1]
    assert w.proc.alive()


def test_always_restarts_even_a_clean_exit(cluster: Cluster) -> None:
    head, w, _ = head_and_worker(cluster, "m-always", "--subprocess.restart", "always")
    first = backend_stats(w)
    os.kill(first["pid"], signal.SIGTERM)  # the fake upstream exits 0 on SIGTERM
    wait_for(lambda: backend_stats(w)["restarts"] == 1, 10, what="restarted")
    wait_for(lambda: chat(head, "m-always")[0] == 200, 20, what="served again")
    assert [(e["code"], e["signal"]) for e in events(w, "backend.exited")] == [(0, None)]
    assert backend_stats(w)["pid"] != first["pid"] and w.proc.alive()


def test_never_drains_and_exits_when_the_backend_dies(cluster: Cluster) -> None:
    head, w, _ = head_and_worker(cluster, "m-never", "--subprocess.restart", "never")
    os.kill(backend_stats(w)["pid"], signal.SIGKILL)
    assert w.proc.popen.wait(20) != 0
    wait_for(lambda: head.models() == [], 5, what="model gone from the head")
    assert events(w, "backend.not_restarted")[0]["policy"] == "never"
    assert events(w, "node.stopping")[0]["reason"] == "backend exited"
    assert events(w, "node.drained") and not events(w, "backend.restarting")


def test_backend_failing_at_start_is_given_up(cluster: Cluster) -> None:
    w = cluster.node(
        "w",
        "127.0.0.3",
        "--service.port",
        str(free_port()),
        "--subprocess",
        f'{sys.executable} -c "import sys; sys.exit(3)"',
        wait=False,
    )
    # Backoff 0.25 s doubling, five restarts: ~8 s of waiting, then the node drains and exits.
    assert w.proc.popen.wait(25) != 0, w.proc.tail()
    exits = events(w, "backend.exited")
    assert [(e["code"], e["signal"]) for e in exits] == [(3, None)] * (MAX_RESTARTS + 1)
    restarts = events(w, "backend.restarting")
    assert [e["attempt"] for e in restarts] == list(range(1, MAX_RESTARTS + 1))
    assert [e["delay_s"] for e in restarts] == [0.25 * 2**i for i in range(MAX_RESTARTS)]
    (gave_up,) = events(w, "backend.gave_up")
    assert gave_up["restarts"] == MAX_RESTARTS and gave_up["code"] == 3
    assert events(w, "node.stopping")[0]["reason"] == "backend gave up"


def test_clean_exit_with_on_failure_ends_the_node_cleanly(cluster: Cluster) -> None:
    w = cluster.node(
        "w",
        "127.0.0.3",
        "--service.port",
        str(free_port()),
        "--subprocess",
        f'{sys.executable} -c "pass"',
        wait=False,
    )
    assert w.proc.popen.wait(20) == 0, w.proc.tail()
    assert events(w, "backend.not_restarted")[0]["code"] == 0
    assert not events(w, "backend.restarting")


# --- the supervisor in-process, with a fake agent: stopping it for good ---


class FakeAgent:
    def __init__(self) -> None:
        self.exits: list[int] = []

    def backend_up(self) -> bool:
        return False

    def stopping(self) -> bool:
        return False

    def on_backend_exit(self, code: int) -> None:
        self.exits.append(code)


def ignores_sigterm(ready: Path) -> str:
    """A backend that shrugs SIGTERM off, and says (a file) once it does."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f" open({str(ready)!r}, 'w').close(); time.sleep(60)"
    )
    return f'{sys.executable} -c "{code}"'


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_stop_ends_the_backend_and_restarts_nothing() -> None:
    agent = FakeAgent()
    sup = BackendSupervisor("sleep 60", "always", agent)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            pid = sup.pid
            assert pid is not None and _alive(pid)
            await sup.stop()
            assert not _alive(pid)
        # run() returned by itself: the exit was not followed by a restart.

    trio.run(main)
    assert agent.exits == [-signal.SIGTERM] and sup.restarts == 0 and sup.state == "stopped"
    assert not sup.failed and not sup.stopped.is_set()


def test_stop_kills_a_backend_that_ignores_sigterm_when_the_deadline_passes(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready"
    sup = BackendSupervisor(ignores_sigterm(ready), "always", FakeAgent())

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.to_thread.run_sync(lambda: wait_for(ready.exists, 10, what="handler set"))
            start = trio.current_time()
            with trio.move_on_after(0.5):  # the node's stop budget, much shorter than the grace
                await sup.stop()
            pid = sup.pid
            assert pid is not None
            await trio.to_thread.run_sync(lambda: wait_for(lambda: not _alive(pid), 5))
            return trio.current_time() - start

    assert trio.run(main) < 3


def test_workers_left_behind_by_a_dead_backend_are_ended(tmp_path: Path) -> None:
    """vLLM's workers outliving its main process would keep the port and the GPU memory the
    restarted backend needs."""
    child = tmp_path / "child.pid"
    sup = BackendSupervisor(f"sh -c 'sleep 60 & echo $! > {child}; exit 1'", "never", FakeAgent())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await sup.stopped.wait()

    trio.run(main)
    assert sup.failed and sup.reason == "backend exited"
    assert not _alive(int(child.read_text()))
