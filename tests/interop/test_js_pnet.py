"""``--swarm-key`` interoperates with js-libp2p's ``@libp2p/pnet`` (the cipher go-libp2p and kubo
use too): a js peer with the same key completes pnet + Noise + Yamux with a real
``opentela-node`` and the other way round; with another key it is refused, with the clear error.

Needs node and npm; ``npm ci`` installs the pinned js-libp2p (package-lock.json) into
tests/interop/node_modules (git-ignored; ~10 s from npm's cache, ~50 MB).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import trio
from conftest import Cluster, wait_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import pnet
from opentela.overlay.host import StreamFailed, open_host
from opentela.testing.serving import free_port

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "pnet_peer.mjs"

pytestmark = pytest.mark.real_component


@pytest.fixture(scope="module")
def js() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("js-libp2p interop needs node and npm on PATH (apt-get install nodejs npm)")
    stamp = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        started = time.monotonic()
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        print(f"npm ci: {time.monotonic() - started:.1f}s")
    return node


def _key(tmp: Path, name: str) -> Path:
    return pnet.write_swarm_key(tmp / name)


def _js_dial(node: str, key: Path, maddr: str) -> tuple[int, dict]:
    r = subprocess.run(
        [node, str(SCRIPT), "dial", str(key), maddr], capture_output=True, text=True, timeout=60
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no answer from the js peer (rc {r.returncode}):\n{r.stderr[-2000:]}"
    return r.returncode, json.loads(lines[-1])


def _refusals(log: Path) -> list[str]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "pnet.refused":
            out.append(str(rec.get("reason")))
    return out


def test_js_dials_an_opentela_node_in_the_same_private_network(
    js: str, cluster: Cluster, tmp_path: Path
) -> None:
    key, other = _key(tmp_path, "swarm.key"), _key(tmp_path, "other.key")
    node = cluster.node("head", "127.0.0.1", "--swarm-key", str(key))

    rc, answer = _js_dial(js, key, node.maddr)
    assert rc == 0 and answer["ok"], answer
    assert answer["peer"] == node.peer_id  # Noise proved the node's identity
    assert answer["stream"] == "unsupported"  # a stream negotiation went through Yamux

    rc, answer = _js_dial(js, other, node.maddr)
    assert rc != 0 and not answer["ok"], answer
    reasons = wait_for(lambda: _refusals(node.proc.log), 10, what="the node's pnet.refused line")
    assert "private network key mismatch?" in reasons[0]


def test_an_opentela_host_dials_js_in_the_same_private_network(js: str, tmp_path: Path) -> None:
    key, other = _key(tmp_path, "swarm.key"), _key(tmp_path, "other.key")
    listener = subprocess.Popen(
        [js, str(SCRIPT), "listen", str(key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert listener.stdout is not None
        first = listener.stdout.readline()
        maddr = json.loads(first)["listening"]

        async def dial(psk: bytes) -> str:
            async with open_host(
                Ed25519PrivateKey.generate(), "127.0.0.1", free_port(), swarm_key=psk
            ) as host:
                try:
                    return await host.connect(maddr)
                except StreamFailed as exc:
                    return f"failed: {exc}"

        started = time.monotonic()
        assert trio.run(dial, pnet.load_swarm_key(key)) == maddr.rsplit("/", 1)[1]
        assert json.loads(listener.stdout.readline())["inbound"]  # js saw the connection
        failed = trio.run(dial, pnet.load_swarm_key(other))
        assert failed.startswith("failed: ") and "private network key mismatch?" in failed
        assert time.monotonic() - started < 2 * 5.0  # within the dial timeout, no hang
    finally:
        listener.kill()
        listener.wait(5)
