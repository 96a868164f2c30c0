"""The status page in a real browser: headless Chromium (the system's, through selenium) loads
``/`` from the head of a real pool (two GH200 replicas of ``m-a``, one a Slurm job; a worker of
``m-b``), finds each model with its replica count and state, filters by site and by text,
sees a stopped worker's replica disappear, and fits a phone's width. Screenshots go to the
test's output directory (``tmp_path``).

Chromium comes from ``scripts/chromium-up.sh`` (Debian ``chromium`` + ``chromium-driver``,
installed with apt-get as root): without it the test skips, and in CI that skip fails."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cluster, Node, http_json, wait_for

from opentela.testing.browser import full_page_png, open_chromium, wait_until

pytestmark = pytest.mark.real_component
GH200 = "NVIDIA GH200 120GB, 97871, 1\n" * 4
PAGE_S = 30  # the page refreshes every 5 s; membership notices a departure within seconds


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "chromium-up.sh")],
        capture_output=True,
        text=True,
        timeout=900,  # a first apt-get install of chromium
        stdin=subprocess.DEVNULL,
    )
    if up.returncode != 0 or not up.stdout.strip():
        last = (up.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no headless Chromium: scripts/chromium-up.sh failed: {last}")
    browser, driver = up.stdout.strip().splitlines()[-1].split()
    return browser, driver


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    with open_chromium(*chromium, log=tmp_path / "chromedriver.log") as drv:
        yield drv


def pool(cluster: Cluster, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Node]:
    path = os.environ.get("PATH", "")
    head = cluster.node("head", "127.0.0.2", "--site", "k8s")
    ups = {
        n: cluster.upstream(f"up-{n}", m)[1] for n, m in (("a", "m-a"), ("b", "m-a"), ("c", "m-b"))
    }
    smi = tmp / "gh200"
    smi.mkdir()
    (smi / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '%s' '{GH200}'\n")
    (smi / "nvidia-smi").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{smi}:{path}")
    a = cluster.node("a", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(ups["a"]),
                     "--site", "clariden")  # fmt: skip
    slurm = {"SLURM_JOB_ID": "42", "SLURM_JOB_PARTITION": "normal", "SLURM_NNODES": "1",
             "SLURM_JOB_END_TIME": str(int(time.time()) + 7200), "SLURM_NODEID": "0"}  # fmt: skip
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    b = cluster.node("b", "127.0.0.4", "--bootstrap", head.maddr, "--service.port", str(ups["b"]),
                     "--site", "bristen")  # fmt: skip
    for k in slurm:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PATH", path)
    c = cluster.node("c", "127.0.0.5", "--bootstrap", head.maddr, "--service.port", str(ups["c"]))

    def ready() -> bool:
        models = {m["id"]: m for m in http_json(f"{head.url}/v1/status")[2]["models"]}
        return models.get("m-a", {}).get("ready_replicas") == 2 and "m-b" in models

    wait_for(ready, 30, 0.2, what="m-a twice and m-b in the head's status")
    return {"head": head, "a": a, "b": b, "c": c}


def model_row(drv: Any, model: str) -> dict[str, str] | None:
    """What a person reads in the model's row: {column: text}; None when it is not shown."""
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, f'#models tbody tr[data-model="{model}"]')
    if not rows:
        return None
    cells = rows[0].find_elements(By.CSS_SELECTOR, "[data-col]")
    return {c.get_attribute("data-col"): c.text.strip() for c in cells}


def node_state(drv: Any, peer: str) -> str | None:
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, f'#nodes tbody tr[data-peer="{peer}"]')
    return rows[0].find_element(By.CSS_SELECTOR, '[data-col="state"]').text if rows else None


def shown_models(drv: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    return sorted(r.get_attribute("data-model") for r in rows)


def test_the_status_page_in_a_browser(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    nodes = pool(cluster, tmp_path, monkeypatch)
    head = nodes["head"]
    drv = browser
    drv.get(f"{head.url}/")
    assert drv.title == "OpenTela pool status"

    ma = wait_until(
        lambda: (r := model_row(drv, "m-a")) and r["replicas"] == "2" and r, PAGE_S, "m-a x2"
    )
    assert ma["state"] == "ready" and ma["topology"] == "2 replicas \u00d7 4x NVIDIA GH200 120GB"
    assert ma["site"] == "bristen, clariden" and ma["slurm"] == "42"
    assert ma["left"].startswith("in 1h5") or ma["left"] == "in 2h00m"
    mb = model_row(drv, "m-b")
    assert mb is not None and (mb["state"], mb["replicas"]) == ("ready", "1")
    # Unknown is said, not hidden: no GPU, no site, no traffic yet.
    ttft = drv.find_element(
        By.CSS_SELECTOR, '#models tr[data-model="m-b"] [data-col="ttft"] .unknown'
    )
    assert ttft.text.startswith("\u2014") and ttft.get_attribute("title")
    assert mb["topology"] == "1 replica \u00d7 no GPU"
    for n in nodes.values():
        assert node_state(drv, n.peer_id) == "alive"
    assert drv.find_element(By.ID, "refresh").get_attribute("aria-live") == "polite"
    assert drv.find_element(By.TAG_NAME, "main") and drv.find_element(By.TAG_NAME, "nav")
    assert "Updated" in drv.find_element(By.ID, "refresh").text
    shot = full_page_png(drv, tmp_path / "status-pool.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Filters: by site (m-b has none), by text; then back to everything.
    Select(drv.find_element(By.ID, "f-site")).select_by_value("bristen")
    assert shown_models(drv) == ["m-a"]
    assert node_state(drv, nodes["b"].peer_id) == "alive" and node_state(drv, head.peer_id) is None
    Select(drv.find_element(By.ID, "f-site")).select_by_value("")
    drv.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="slurm"]').click()
    assert shown_models(drv) == ["m-a"]
    drv.find_element(By.CSS_SELECTOR, 'input[name="kind"][value=""]').click()
    drv.find_element(By.ID, "f-search").send_keys("m-b")
    assert shown_models(drv) == ["m-b"]
    drv.find_element(By.ID, "f-search").clear()
    drv.execute_script("document.getElementById('filters').dispatchEvent(new Event('input'))")
    assert shown_models(drv) == ["m-a", "m-b"]

    # A stopped worker: its replica leaves the page, and the node is shown as gone.
    nodes["b"].proc.stop()
    ma = wait_until(
        lambda: (r := model_row(drv, "m-a")) and r["replicas"] == "1" and r, PAGE_S, "m-a x1"
    )
    assert ma["state"] == "ready" and ma["site"] == "clariden" and "Slurm" not in ma["model"]
    wait_until(
        lambda: node_state(drv, nodes["b"].peer_id) in (None, "left", "dead"), PAGE_S, "b gone"
    )
    full_page_png(drv, tmp_path / "status-after-stop.png")

    # A phone's width: rows become cards, nothing wider than the screen.
    drv.set_window_size(390, 844)
    wait_until(
        lambda: drv.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        ),
        5,
        "no horizontal scrolling on a phone",
    )
    drv.save_screenshot(str(tmp_path / "status-phone.png"))

    # The node goes away: the page says so and keeps what it last showed.
    head.proc.stop()
    wait_until(
        lambda: "Could not reach the node" in drv.find_element(By.ID, "refresh").text,
        PAGE_S,
        "the page saying the node is unreachable",
    )
    assert model_row(drv, "m-a") is not None
