"""Command-line mistakes end ``opentela-node start`` with one ``Error: ...`` line and a non-zero
exit, never a traceback; a JSON-format node's log is JSON lines only (py-libp2p's included);
a bootstrap whose peer ID is wrong says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import Cluster, free_port, wait_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import identity
from opentela.overlay.host import StreamFailed, WrongPeer, open_host

HOST = "127.0.0.1"
OTHER_PID = identity.peer_id(Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))


def start(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = [
        sys.executable, "-m", "opentela.cli", "start", "--log-format", "json",
        "--http-host", HOST, "--http-port", str(free_port(HOST)),
        "--p2p-host", HOST, "--p2p-port", str(free_port(HOST)),
    ]  # fmt: skip
    if "--home" not in args:
        base += ["--home", str(tmp / "home")]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTELA_")}
    return subprocess.run(
        [*base, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    others = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("Error:")]
    assert all(ln.startswith("{") for ln in others), proc.stderr  # log lines only, JSON
    return errors[0]


@pytest.mark.parametrize(
    ("args", "env", "expect"),
    [
        (("--http-port", "47555", "--p2p-port", "47555"), {}, "--p2p-port are both 47555"),
        (("--public-addr", "head.example.org"), {}, "/dns4/head.example.org/tcp/"),
        (("--public-addr", "10.0.0.5:43905"), {}, "/ip4/10.0.0.5/tcp/43905"),
        (("--bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWBad"), {}, "peer ID '12D3KooWBad'"),
        ((f"--bootstrap=/ip4/127.0.0.1/udp/1/quic-v1/p2p/{OTHER_PID}",), {}, "only TCP"),
        (("--service.host", "10.0.0.2"), {}, "--service.host needs --service.port"),
        (("--role", "worker"), {}, "a backend: --service.port or --backend"),
        (("--role", "head", "--backend", "http://127.0.0.1:1"), {}, "--role head"),
        ((), {"OTELA_HTTP_PROT": "1"}, "did you mean OTELA_HTTP_PORT?"),
        ((), {"OTELA_DRAIN_TIMEOUT": "-1"}, "Error: OTELA_DRAIN_TIMEOUT must be 0 or more"),
    ],
)
def test_config_mistakes(tmp_path: Path, args: tuple, env: dict, expect: str) -> None:
    # The ports given first are overridden by those in args (click: the last one wins).
    line = one_error_line(start(tmp_path, *args, env=env))
    assert expect in line, line


def test_home_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "home-file"
    f.write_text("not a directory")
    assert "is a file" in one_error_line(start(tmp_path, "--home", str(f)))
    line = one_error_line(start(tmp_path, "--home", str(f / "below")))
    assert "cannot create --home" in line and "Not a directory" in line


def test_home_cannot_be_created(tmp_path: Path) -> None:
    line = one_error_line(start(tmp_path, "--home", "/sys/opentela-test-home"))
    assert "cannot create --home /sys/opentela-test-home" in line


def test_identity_key_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "home" / "identity.key").mkdir(parents=True)
    assert "is a directory" in one_error_line(start(tmp_path))


def test_init_into_a_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "opentela.cli", "init", "--home", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "is a file" in one_error_line(proc)


# -- logs and bootstrap messages -------------------------------------------------------------


def test_json_log_holds_only_json_and_says_wrong_peer_id(cluster: Cluster) -> None:
    """py-libp2p logs each failed handshake; through our handler those are JSON (or dropped),
    never bare text. The bootstrap whose peer ID is wrong is reported as such."""
    target = cluster.node("target", HOST)
    wrong = f"/ip4/{HOST}/tcp/{target.p2p_port}/p2p/{OTHER_PID}"
    node = cluster.node("joiner", HOST, "--bootstrap", wrong, "--log-level", "debug")
    wait_for(
        lambda: "(wrong peer ID?)" in node.proc.log.read_text(), 20, what="wrong peer ID message"
    )
    node.proc.stop()
    target.proc.stop()
    for proc in (node.proc, target.proc):
        lines = [ln for ln in proc.log.read_text().splitlines() if ln.strip()]
        assert lines, proc.name
        for ln in lines:
            assert isinstance(json.loads(ln), dict), f"{proc.name}: not JSON: {ln!r}"
    events = [json.loads(ln) for ln in node.proc.log.read_text().splitlines() if ln.strip()]
    assert any(e.get("event") == "node.stopped" for e in events)
    # py-libp2p's own records came through our renderer (at debug: its ERRORs and up only).
    theirs = [e for e in events if str(e.get("logger", "")).startswith("libp2p")]
    assert theirs and all(e["level"] in ("error", "critical") for e in theirs), theirs[:3]
    assert not [e for e in events if "Traceback" in json.dumps(e)]


def test_host_reports_a_wrong_peer_id() -> None:
    async def main() -> None:
        ka, kb = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        pa, pb = free_port(HOST), free_port(HOST)
        async with open_host(ka, HOST, pa) as a, open_host(kb, HOST, pb):
            addr = f"/ip4/{HOST}/tcp/{pb}/p2p/{OTHER_PID}"
            with pytest.raises(WrongPeer) as info:
                await a.connect(addr)
            assert str(info.value).startswith(
                f"the node at /ip4/{HOST}/tcp/{pb} is not {OTHER_PID} (wrong peer ID?)"
            )
            assert info.value.found == identity.peer_id(kb)
            # Nobody listening: a plain dial failure, not a wrong peer. (Another peer ID: the
            # peerstore keeps the address just dialed for OTHER_PID and would try it again.)
            nobody = identity.peer_id(Ed25519PrivateKey.generate())
            with pytest.raises(StreamFailed) as info2:
                await a.connect(f"/ip4/{HOST}/tcp/{free_port(HOST)}/p2p/{nobody}")
            assert not isinstance(info2.value, WrongPeer)

    trio.run(main)
