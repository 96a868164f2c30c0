"""``--swarm-key``: real ``opentela-node`` processes in a private network. Members with the key
form a pool; a node with another key, or none, never joins and says why within the dial timeout."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

from conftest import NODE, Cluster, http_json, wait_for


def _swarm_key(path: Path) -> Path:
    out = subprocess.run(
        [*NODE, "swarm-key", str(path)], check=True, capture_output=True, text=True
    )
    assert out.stdout.splitlines()[-1] == str(path)  # the path, last; the key never on stdout
    assert path.read_text().split("\n")[2] not in out.stdout + out.stderr
    return path


def _events(log: Path, event: str) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            out.append(rec)
    return out


def test_swarm_key_command_writes_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = _swarm_key(tmp_path / "swarm.key")
    lines = path.read_text().splitlines()
    assert lines[:2] == ["/key/swarm/psk/1.0.0/", "/base16/"] and len(lines[2]) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = subprocess.run([*NODE, "swarm-key", str(path)], capture_output=True, text=True)
    assert again.returncode != 0
    assert again.stderr.strip().splitlines() == [
        f"Error: {path} already exists; not overwriting a swarm key"
    ]
    assert path.read_text().splitlines() == lines


def test_a_bad_swarm_key_is_one_line_before_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("/key/swarm/psk/1.0.0/\n/base16/\n1234\n")
    os.chmod(bad, 0o600)
    loose = _swarm_key(tmp_path / "loose.key")
    os.chmod(loose, 0o644)
    for path, words in ((bad, "64 hex digits"), (loose, "readable by others")):
        r = subprocess.run(
            [*NODE, "start", "--home", str(tmp_path / "h"), "--swarm-key", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: --swarm-key: ") and words in lines[0]


def test_only_nodes_with_the_same_key_join(cluster: Cluster, tmp_path: Path) -> None:
    key = _swarm_key(tmp_path / "swarm.key")
    other = _swarm_key(tmp_path / "other.key")
    _, up_a = cluster.upstream("up-a", "model-a")
    _, up_b = cluster.upstream("up-b", "model-b")
    _, up_c = cluster.upstream("up-c", "model-c")
    head = cluster.node("head", "127.0.0.2", "--swarm-key", str(key))
    boot = ["--bootstrap", head.maddr]
    member = cluster.node(
        "member",
        "127.0.0.3",
        *boot,
        "--swarm-key",
        str(key),
        "--backend",
        f"http://127.0.0.1:{up_a}",
    )
    wait_for(lambda: head.models() == ["model-a"], 15, what="the member's model at the head")
    status, headers, body = http_json(
        f"{head.url}/v1/chat/completions",
        "POST",
        {"model": "model-a", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200, body
    assert {k.lower(): v for k, v in headers.items()}["x-computing-node"] == member.peer_id

    started = time.monotonic()
    wrong = cluster.node(
        "wrong-key",
        "127.0.0.4",
        *boot,
        "--swarm-key",
        str(other),
        "--backend",
        f"http://127.0.0.1:{up_b}",
    )
    keyless = cluster.node("no-key", "127.0.0.5", *boot, "--backend", f"http://127.0.0.1:{up_c}")

    # The node with another key says so, within the dial timeout (5 s) of starting to dial.
    failed = wait_for(
        lambda: _events(wrong.proc.log, "bootstrap.unreachable"), 20, what="wrong-key's dial error"
    )
    assert "private network key mismatch?" in failed[0]["error"], failed[0]
    assert time.monotonic() - started < 20

    # The head names both refusals (once per address and reason a minute, not per attempt).
    def refusals() -> list[str]:
        return sorted(e["reason"] for e in _events(head.proc.log, "pnet.refused"))

    reasons = wait_for(
        lambda: refusals() if len(refusals()) >= 2 else None, 20, what="head's pnet.refused lines"
    )
    assert "private network key mismatch?" in reasons[1] and "no swarm key" in reasons[0]
    keyless_failed = wait_for(
        lambda: _events(keyless.proc.log, "bootstrap.unreachable"), 20, what="no-key's dial error"
    )
    assert "needs --swarm-key?" in keyless_failed[0]["error"], keyless_failed[0]

    # Neither joined: the pool is still the head and the member.
    assert head.models() == ["model-a"]
    _, _, table = http_json(f"{head.url}/v1/dnt/table")
    assert {k.lstrip("/") for k in table} == {head.peer_id, member.peer_id}
    assert wrong.models() == ["model-b"] and keyless.models() == ["model-c"]  # alone, each
    assert len(_events(head.proc.log, "pnet.refused")) == 2  # rate-limited, not once per retry
