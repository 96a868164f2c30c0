"""The shipped monitoring files (deploy/prometheus/, deploy/grafana/opentela.json) work with
the metrics nodes really export.

A dashboard panel or an alert that names a metric the catalog does not have shows nothing or
never fires, and nothing else would notice: so every expression is checked against
``opentela.metrics.catalog`` (names and label names), the Prometheus files with the real
``promtool`` (config syntax, rule syntax, the rules' unit tests), and the dashboard's queries
with promtool too (as throwaway recording rules, the one way promtool 2.x parses an
arbitrary expression), plus the dashboard's Grafana shape.

promtool comes from ``scripts/promtool-up.sh`` (Debian's ``prometheus`` package, installed with
apt-get as root): without it the promtool tests skip, and in CI they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opentela.metrics import catalog

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "opentela-rules.yml"
RULE_TESTS = PROM_DIR / "opentela-rules.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "opentela.json"
K8S_SERVICE = REPO / "deploy" / "kubernetes" / "service.yaml"

PROCESS_METRICS = frozenset(
    {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
    }
)
# Labels Prometheus adds to every scraped series (prometheus.yml's target labels).
TARGET_LABELS = frozenset({"job", "instance", "role", "site", "hostname", "slurm_job_id"})
EXPECTED_ALERTS = frozenset(
    {
        "OpentelaModelWithoutReplicas",
        "OpentelaHighErrorRate",
        "OpentelaTTFTP99High",
        "OpentelaNodeFlapping",
        "OpentelaBackendDown",
        "OpentelaRelayRefusing",
    }
)
PANEL_TYPES = frozenset(
    {
        "timeseries",
        "stat",
        "gauge",
        "bargauge",
        "table",
        "heatmap",
        "state-timeline",
        "status-history",
        "piechart",
        "barchart",
        "histogram",
        "text",
        "row",
    }
)
GRAFANA_BUILTINS = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms"})
METRIC_PREFIXES = ("opentela_", "process_", "python_")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_VARIABLE = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*(\w+)\s*\)")


def _series_labels() -> dict[str, frozenset[str]]:
    """Sample name -> its own label names (a histogram's ``_bucket`` also has ``le``)."""
    out: dict[str, frozenset[str]] = {}
    for m in catalog.ALL:
        for name in catalog.series_names(m):
            extra = {"le"} if name.endswith("_bucket") and m.kind == catalog.HISTOGRAM else set()
            out[name] = frozenset(m.labels) | extra
    for name in PROCESS_METRICS:
        out[name] = frozenset({"implementation", "major", "minor", "patchlevel", "version"})
    return out


SERIES = _series_labels()
CATALOG_LABELS = frozenset(label for labels in SERIES.values() for label in labels)


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(RULES)["groups"] for rule in group["rules"]]


def _recorded() -> dict[str, frozenset[str]]:
    """Recording rule name -> its labels, from the name's level (``model:...`` -> model)."""
    out = {}
    for rule in _rules():
        if "record" in rule:
            level = rule["record"].split(":")[0]
            out[rule["record"]] = (
                frozenset(level.split("_")) if ":" in rule["record"] else frozenset()
            )
    return out


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def _dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def _rule_exprs() -> list[str]:
    return [rule["expr"] for rule in _rules()]


def _as_promql(expr: str) -> str:
    """A dashboard query as Prometheus sees it once Grafana substituted its variables."""
    expr = re.sub(r"\$\{?__rate_interval\}?|\$\{?__interval\}?|\$\{?__range\}?", "5m", expr)
    return _VARIABLE.sub(".*", expr)


# -- promtool -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "promtool-up.sh")],
        capture_output=True,
        text=True,
        timeout=900,  # a first apt-get install of prometheus
        stdin=subprocess.DEVNULL,
    )
    if up.returncode != 0 or not up.stdout.strip():
        last = (up.stderr.strip().splitlines() or ["no output"])[-1]
        reason = f"no promtool: scripts/promtool-up.sh failed: {last}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return up.stdout.strip().splitlines()[-1]


def _run(promtool: str, *args: str, cwd: Path = PROM_DIR) -> str:
    """promtool from ``cwd`` (rule_files are relative to the config / test file's directory)."""
    p = subprocess.run(
        [promtool, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, f"promtool {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


@pytest.mark.real_component
def test_promtool_check_config(promtool: str) -> None:
    # The http_sd URL's host (`head`) need not resolve: check config does not dial it.
    out = _run(promtool, "check", "config", CONFIG.name)
    assert "SUCCESS" in out and RULES.name in out, out


@pytest.mark.real_component
def test_promtool_check_rules(promtool: str) -> None:
    out = _run(promtool, "check", "rules", RULES.name)
    assert f"SUCCESS: {len(_rules())} rules found" in out, out


@pytest.mark.real_component
def test_promtool_rule_unit_tests(promtool: str) -> None:
    out = _run(promtool, "test", "rules", RULE_TESTS.name)
    assert "SUCCESS" in out, out


@pytest.mark.real_component
def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Every panel query is valid PromQL once Grafana substituted its variables."""
    exprs = [t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", [])]
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": _as_promql(e)} for i, e in enumerate(exprs)
    ]
    (tmp_path / "dashboard-rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    out = _run(promtool, "check", "rules", "dashboard-rules.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out, out


# -- the Prometheus files' content -------------------------------------------------------------


def test_scrape_config_jobs() -> None:
    """The head by static target; the pool from the head's http_sd, heads dropped, the
    discovery labels kept as target labels; the rules loaded."""
    cfg = _load_yaml(CONFIG)
    assert cfg["rule_files"] == [RULES.name]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"opentela-head", "opentela-pool"}
    head, pool = jobs["opentela-head"], jobs["opentela-pool"]
    assert head["static_configs"][0]["targets"] == ["head:8092"]
    (sd,) = pool["http_sd_configs"]
    assert sd["url"] == "http://head:8092/metrics/targets"
    relabel = pool["relabel_configs"]
    drops = [r for r in relabel if r.get("action") == "drop"]
    assert drops == [{"source_labels": ["__meta_opentela_role"], "regex": "head", "action": "drop"}]
    mapped = {r["target_label"]: r["source_labels"] for r in relabel if r.get("target_label")}
    assert mapped == {
        label: [f"__meta_opentela_{label}"]
        for label in ("role", "site", "hostname", "slurm_job_id")
    }
    assert TARGET_LABELS - {"job", "instance"} == set(mapped)
    assert not {"instance", "peer_id"} & set(mapped)  # instance stays host:port


def test_scrape_config_names_the_kubernetes_service() -> None:
    """The comments point at the Service deploy/kubernetes/service.yaml really defines."""
    services = {d["metadata"]["name"]: d for d in yaml.safe_load_all(K8S_SERVICE.read_text()) if d}
    port = services["opentela-head"]["spec"]["ports"][0]["port"]
    text = CONFIG.read_text()
    assert f"opentela-head.opentela.svc.cluster.local:{port}" in text
    assert "opentela-head-pods" in services and "opentela-head-pods" in text


def test_alerts_are_complete() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    assert set(alerts) == EXPECTED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), name


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load_yaml(RULE_TESTS)["tests"]:
        assert case["input_series"], case
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


# -- the dashboard's shape ----------------------------------------------------------------------


def test_dashboard_shape() -> None:
    dash = _dashboard()
    assert dash["title"] and dash["uid"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for v in variables.values():
        assert v["name"] and v["type"], v
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "site"):
        assert variables[name]["type"] == "query"
        q = variables[name]["query"]
        assert _LABEL_VALUES.fullmatch(q["query"] if isinstance(q, dict) else q), name
        assert variables[name]["datasource"]["uid"] == "${datasource}"

    panels = list(_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in PANEL_TYPES and p["title"], p
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh"), p["title"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_dashboard_has_the_panels_asked_for() -> None:
    """Each topic has a panel whose queries use its metric."""
    queries = {
        p["title"]: " ".join(t["expr"] for t in p["targets"])
        for p in _panels(_dashboard())
        if p["type"] != "row"
    }
    wanted = [
        "opentela_http_requests_total",
        'status=~"5.."',
        "opentela_time_to_first_token_seconds_bucket",
        "opentela_completion_tokens_total",
        "opentela_http_requests_in_flight",
        "opentela_failovers_total",
        "opentela_members",
        "opentela_model_replicas",
        "opentela_backend_up",
        "opentela_backend_requests_waiting",
        "opentela_control_plane_sent_bytes_total",
        "opentela_relay_reservations",
    ]
    for needle in wanted:
        assert any(needle in q for q in queries.values()), needle
    ttft = [q for q in queries.values() if "time_to_first_token" in q]
    assert any("histogram_quantile(0.5," in q and "histogram_quantile(0.99," in q for q in ttft)


def test_dashboard_variables_are_defined() -> None:
    dash = _dashboard()
    defined = {v["name"] for v in dash["templating"]["list"]} | GRAFANA_BUILTINS
    for expr in _dashboard_exprs(dash):
        assert set(_VARIABLE.findall(expr)) <= defined, expr


# -- names: every metric and label an expression uses exists ------------------------------------


def _check_names(expr: str, recorded: dict[str, frozenset[str]]) -> list[str]:
    """What in ``expr`` names a metric or label nodes do not export (empty: all known)."""
    problems = []
    known = {**SERIES, **recorded}
    bare = _STRING.sub('""', expr)
    for ident in _IDENT.findall(bare):
        if ":" in ident and ident not in recorded:
            problems.append(f"{ident}: not a recording rule")
        elif ident.startswith(METRIC_PREFIXES) and ident not in SERIES:
            problems.append(f"{ident}: not in the catalog")
    for metric, matchers in _SELECTOR.findall(bare):
        if metric not in known:
            problems.append(f"{metric}: selector of an unknown metric")
            continue
        for label in _MATCHER.findall(matchers):
            if label not in known[metric] | TARGET_LABELS:
                problems.append(f"{metric}{{{label}}}: {metric} has no label {label}")
    for group in _GROUPING.findall(bare):
        for label in filter(None, (s.strip() for s in group.split(","))):
            if label not in CATALOG_LABELS | TARGET_LABELS:
                problems.append(f"by ({label}): no metric has that label")
    for metric, label in _LABEL_VALUES.findall(expr):
        if label not in known.get(metric, frozenset()) | TARGET_LABELS:
            problems.append(f"label_values({metric}, {label}): unknown label")
    return problems


def test_rule_metric_and_label_names_exist() -> None:
    recorded = _recorded()
    problems = {e: p for e in _rule_exprs() if (p := _check_names(e, recorded))}
    assert not problems, problems


def test_dashboard_metric_and_label_names_exist() -> None:
    recorded = _recorded()
    dash = _dashboard()
    problems = {e: p for e in _dashboard_exprs(dash) if (p := _check_names(e, recorded))}
    assert not problems, problems
    for p in _panels(dash):
        for t in p.get("targets", []):
            legend = set(_LEGEND.findall(t.get("legendFormat", "")))
            assert legend <= CATALOG_LABELS | TARGET_LABELS, (p["title"], legend)


def test_name_check_catches_mistakes() -> None:
    """The check above is not vacuous: typos in metric, label and rule names are caught."""
    recorded = _recorded()
    assert (
        _check_names(
            'sum by (model) (rate(opentela_http_requests_total{status="500"}[5m]))', recorded
        )
        == []
    )
    assert _check_names("rate(opentela_http_request_total[5m])", recorded)
    assert _check_names('opentela_members{status="alive"}', recorded)
    assert _check_names("sum by (modle) (opentela_model_replicas)", recorded)
    assert _check_names("model:opentela_http_requests:rate1m", recorded)
    assert _check_names("rate(up_total[5m])", recorded) == []  # unprefixed, not a selector
    assert _check_names("up{job='x'}", recorded)
