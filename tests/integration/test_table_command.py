"""``opentela-node table`` against a real head and worker: the local row marked, whole peer IDs
with --wide, the backend's health, SEEN from membership, and a departed worker shown as left."""

from __future__ import annotations

import re
import signal
import subprocess
import time

from conftest import NODE, Cluster, http_json, wait_for


def table(url: str, *flags: str) -> dict[str, list[str]]:
    """Rows of the CLI's output by peer cell (marker kept in the first cell), header under ""."""
    out = subprocess.run(
        [*NODE, "table", "--url", url, *flags],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    lines = out.splitlines()
    rows = {"": re.split(r"\s{2,}", lines[0].strip())}
    for line in lines[1:]:
        if not line.startswith("("):
            cells = re.split(r"\s{2,}", line.strip())
            rows[cells[0].removeprefix("* ")] = cells
    return rows


def test_table_cli_reads_the_pool(cluster: Cluster) -> None:
    _, up = cluster.upstream("up", "m-table")
    head = cluster.node("head", "127.0.0.2")
    w = cluster.node("w", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(up))
    wait_for(lambda: head.models() == ["m-table"], 15, what="advertised")

    def worker_entry() -> dict:
        return http_json(f"{head.url}/v1/dnt/table")[2][f"/{w.peer_id}"]

    # Once its backend is up the worker's record no longer changes, yet last_seen keeps moving:
    # it is when membership last heard from the worker, not when the record last changed.
    e = wait_for(
        lambda: (e := worker_entry())["last_seen"] >= e["version"] / 1000 + 2 and e,
        15,
        what="last_seen moving past the record's last change",
    )
    assert time.time() - e["last_seen"] <= 5
    assert http_json(f"{head.url}/v1/dnt/table")[2][f"/{head.peer_id}"]["self"] is True
    assert e["self"] is False

    rows = table(head.url, "--wide")
    header = rows[""]
    col = {name: i for i, name in enumerate(header)}
    assert "BACKEND" in col
    assert rows[head.peer_id][0] == f"* {head.peer_id}"  # the node asked, whole ID
    worker = rows[w.peer_id]  # whole ID: pasteable into /v1/p2p/<peer>/...
    assert worker[0] == w.peer_id  # unmarked
    assert worker[col["BACKEND"]] == "up" and worker[col["MODELS"]] == "m-table"
    assert worker[col["STATE"]] == "alive"
    seen = re.fullmatch(r"(\d+)s ago", worker[col["SEEN"]])
    assert seen is not None and int(seen.group(1)) <= 5
    assert worker_entry()["version"] == e["version"]  # the record did not change meanwhile
    short = table(head.url)
    assert w.peer_id not in short and any(k.endswith(w.peer_id[-6:]) for k in short)

    w.proc.signal(signal.SIGTERM)
    assert w.proc.popen.wait(15) == 0

    def left_row() -> list[str] | None:
        row = table(head.url, "--wide").get(w.peer_id)
        return row if row is not None and row[col["STATE"]] == "left" else None

    row = wait_for(left_row, 10, what="worker shown as left")
    assert row[col["STATUS"]] == "left"
    assert row[col["MODELS"]] == "-" and row[col["BACKEND"]] == "-"
    assert head.models() == []
