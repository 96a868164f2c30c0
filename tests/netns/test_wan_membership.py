"""Membership across a WAN: real nodes in network namespaces, 40 ms added one way between
sites (NFQUEUE, ``scripts/netns.sh delay``) and 1 % random loss on every host
(``netns.sh loss 1``), default membership settings, a bounded run: no live node may be
declared dead.

Sites: h1 (the head) and h2 share site A (no delay between them, so the exclusion list of
``delay`` is exercised), h3 is site B, h4 site C; every cross-site round trip is ~80 ms.
The run also shows the delay was real, three ways: ping across sites and within site A, the
round trips the head's membership measured (``/v1/dnt/stats``: the smallest is in-site, the
largest cross-site), and the loss rules' drop counters.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
PREFIX, SUBNET, N = "otw", "10.231.78", 4
ENV = {**os.environ, "PREFIX": PREFIX, "SUBNET": SUBNET, "N": str(N)}
SITE = {1: "a", 2: "a", 3: "b", 4: "c"}
DELAY_MS, LOSS_PCT = 40, 1
RUN_S = 60.0
PY = sys.executable
NODE = [PY, "-m", "opentela.cli"]
P2P, HTTP, UP = 43906, 8093, 8081

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def addr(i: int) -> str:
    return f"{SUBNET}.{i}"


def netns(*args: str) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts/netns.sh"), *args],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=180,  # the first delay builds netfilterqueue
    )


def in_host(i: int, argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-h{i}", *argv], **kw)


def run_in(i: int, argv: list[str]) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", f"{PREFIX}-h{i}", *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def logs(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def stats(i: int) -> dict:
    code = (
        "import urllib.request;"
        f"print(urllib.request.urlopen('http://127.0.0.1:{HTTP}/v1/dnt/stats', timeout=5)"
        ".read().decode())"
    )
    return json.loads(run_in(i, [PY, "-c", code]))


def ping_ms(i: int, to: int) -> float | None:
    """Average ping round trip from host i to host ``to``; None without a ping binary."""
    if shutil.which("ping") is None:
        return None
    out = run_in(i, ["ping", "-c", "5", "-i", "0.2", "-q", addr(to)])
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))


def dropped(i: int) -> int:
    out = run_in(i, ["nft", "-j", "list", "table", "inet", "otela_loss"])
    return sum(
        expr["counter"]["packets"]
        for item in json.loads(out)["nftables"]
        for expr in item.get("rule", {}).get("expr", [])
        if "counter" in expr
    )


@pytest.fixture
def wan() -> Iterator[None]:
    netns("up")
    try:
        for i in SITE:
            same_site = [addr(j) for j in SITE if j != i and SITE[j] == SITE[i]]
            netns("delay", str(i), str(DELAY_MS), *same_site)
        netns("loss", str(LOSS_PCT))
        yield
    finally:
        netns("down")  # stops the delayers too


def test_no_false_death_across_a_40ms_lossy_wan(wan: None, tmp_path: Path) -> None:
    # The delay is real, and only between sites.
    cross, local = ping_ms(1, 3), ping_ms(1, 2)
    if cross is not None:
        assert 2 * DELAY_MS <= cross < 2 * DELAY_MS + 30, cross
        assert local < 10, local
    procs: list[subprocess.Popen] = []
    logs_of: dict[int, Path] = {}
    try:
        homes = {i: tmp_path / f"h{i}" for i in SITE}
        for home in homes.values():
            subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
        head_id = subprocess.run(
            [*NODE, "peer-id", "--home", str(homes[1])], check=True, capture_output=True, text=True
        ).stdout.strip()
        boot = f"/ip4/{addr(1)}/tcp/{P2P}/p2p/{head_id}"
        for i in SITE:
            args = [*NODE, "start", "--home", str(homes[i]), "--p2p-host", addr(i), "--p2p-port", str(P2P),
                    "--http-host", "127.0.0.1", "--http-port", str(HTTP), "--log-format", "json"]  # fmt: skip
            if i > 1:
                up = in_host(i, [PY, "-m", "opentela.testing.fake_upstream", "--port", str(UP), "--model", f"m{i}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                procs.append(up)
                args += ["--bootstrap", boot, "--service.port", str(UP)]
            logs_of[i] = tmp_path / f"node{i}.log"
            with logs_of[i].open("wb") as f:
                procs.append(in_host(i, args, stdout=f, stderr=subprocess.STDOUT))

        def everyone_up() -> bool:
            return all(
                len({e["peer"] for e in logs(logs_of[i]) if e.get("event") == "member.up"}) >= N - 1
                for i in logs_of
            )

        def count(name: str) -> int:
            return sum(1 for i in logs_of for e in logs(logs_of[i]) if e.get("event") == name)

        wait_for(everyone_up, 45, 0.2, what="all members up across the WAN")
        drops0 = {i: dropped(i) for i in logs_of}
        before = {name: count(name) for name in ("member.suspect", "member.refuted")}
        time.sleep(RUN_S)  # the run itself: a fixed observation window, not synchronisation
        drops = {i: dropped(i) - drops0[i] for i in logs_of}
        downs = {
            i: [e for e in logs(logs_of[i]) if e.get("event") == "member.down"] for i in logs_of
        }
        membership = stats(1)["membership"]
        print(
            f"{DELAY_MS} ms one way between sites, {LOSS_PCT}% loss, {RUN_S:.0f}s on {N} hosts: "
            f"ping cross-site {cross} ms, in-site {local} ms; head's membership {membership}; "
            f"dropped={drops}; suspicion reports while joining {before['member.suspect']}, "
            f"in the run {count('member.suspect') - before['member.suspect']}; refutations "
            f"{count('member.refuted')}; downs={sum(map(len, downs.values()))} (whole test)"
        )
        assert all(not d for d in downs.values()), downs
        assert all(p.poll() is None for p in procs), "a process died"
        # The head measured both kinds of link: its in-site peer, and the far ones.
        assert membership["rtt_known"] == N - 1, membership
        assert membership["srtt_min_ms"] < 40, membership  # in-site: ~1 ms plus Python
        assert 2 * DELAY_MS <= membership["srtt_max_ms"] < 2 * DELAY_MS + 120, membership
        # The loss was real: every host dropped packets during the run.
        assert all(n > 0 for n in drops.values()), drops
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
