"""The hand-written exposition is valid Prometheus text (checked with prometheus_client's own
parser), its labels stay bounded, and the pure pieces of /metrics behave."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from opentela.metrics import catalog
from opentela.metrics.catalog import OTHER
from opentela.metrics.collect import REPLICA_MEMORY_S, ReplicaMemory
from opentela.metrics.exposition import BoundedLabel, Family, render_values
from opentela.metrics.requests import RequestMetrics
from opentela.metrics.targets import host_port, http_sd
from opentela.table.record import NodeRecord
from opentela.table.signing import SignedRecord
from opentela.table.store import Entry, Snapshot


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_histogram_counter_and_values_parse_back_exactly() -> None:
    hist = Family(catalog.TTFT)
    for v in (0.01, 0.025, 0.3, 7.0, 100.0):
        hist.histogram('we"ird\\model\n').observe(v)
    req = Family(catalog.HTTP_REQUESTS)
    req.counter("m", "/v1/chat/completions", "200").inc(3)
    text = hist.render() + req.render()
    text += render_values(catalog.MEMBERS, {("alive",): 3, ("suspect",): 1})
    text += render_values(catalog.BACKEND_RUNNING, None)  # unknown: left out
    got = _samples(text)
    name = 'we"ird\\model\n'
    le = lambda b: (("le", b), ("model", name))  # noqa: E731
    prefix = "opentela_time_to_first_token_seconds"
    assert got[f"{prefix}_bucket", le("0.025")] == 2  # le: 0.025 itself is in its bucket
    assert got[f"{prefix}_bucket", le("0.5")] == 3
    assert got[f"{prefix}_bucket", le("60.0")] == 4
    assert got[f"{prefix}_bucket", le("+Inf")] == 5
    assert got[f"{prefix}_count", (("model", name),)] == 5
    assert abs(got[f"{prefix}_sum", (("model", name),)] - 107.335) < 1e-9
    key = (("model", "m"), ("route", "/v1/chat/completions"), ("status", "200"))
    assert got["opentela_http_requests_total", key] == 3
    assert got["opentela_members", (("state", "alive"),)] == 3
    assert not any(n.startswith("opentela_backend_requests_running") for n, _ in got)


def test_a_histogram_renders_again_only_after_it_changed() -> None:
    h = Family(catalog.TTFB).histogram("m")
    h.observe(0.1)
    first = h.render()
    assert h.render() is first  # cached: a scrape is a join of strings
    h.observe(0.2)
    assert h.render() != first


def test_model_labels_are_bounded() -> None:
    label = BoundedLabel(limit=3)
    assert [label(m) for m in ("a", "b", "c", "d", "a")] == ["a", "b", "c", OTHER, "a"]


def test_a_gone_model_reads_zero_for_an_hour_then_is_forgotten() -> None:
    mem = ReplicaMemory()
    assert mem.counts({"a": 2, "b": 1}, 0.0) == {"a": 2, "b": 1}
    assert mem.counts({"a": 2}, 10.0) == {"a": 2, "b": 0}
    assert mem.counts({"a": 1}, 10.0 + REPLICA_MEMORY_S + 1) == {"a": 1}


def test_usage_listener_counts_latencies_tokens_and_broken_streams() -> None:
    clock = iter([10.0, 20.0, 30.0]).__next__
    m = RequestMetrics(clock=clock)
    sse = SimpleNamespace(error=False)
    row = SimpleNamespace(estimated=0, prompt_tokens=7, completion_tokens=5)
    ok = SimpleNamespace(
        status=200, row=row, model="m", first_byte=9.5, started=9.0, sse=sse,
        first_token=9.75, complete=True,
    )  # fmt: skip
    m.observe(ok)
    cut = SimpleNamespace(**{**ok.__dict__, "complete": False})
    m.observe(cut)
    est = SimpleNamespace(**{**ok.__dict__, "row": SimpleNamespace(estimated=1), "sse": None})
    m.observe(est)
    m.observe(SimpleNamespace(status=503, row=row, model="m"))  # an error: status counts only
    got = _samples(m.render())
    assert got["opentela_prompt_tokens_total", (("model", "m"),)] == 14
    assert got["opentela_completion_tokens_total", (("model", "m"),)] == 10
    assert got["opentela_usage_estimated_total", (("model", "m"),)] == 1
    assert got["opentela_stream_errors_total", (("kind", "cut"), ("model", "m"))] == 1
    assert got["opentela_time_to_first_byte_seconds_count", (("model", "m"),)] == 3
    assert got["opentela_time_to_first_token_seconds_sum", (("model", "m"),)] == 1.5
    # Duration: complete 2xx answers only (the first and the estimated one).
    assert got["opentela_request_duration_seconds_count", (("model", "m"),)] == 2
    assert got["opentela_request_duration_seconds_sum", (("model", "m"),)] == 1.0 + 21.0


def _entry(pid: str, http_addr: str, alive: bool = True, **labels: str) -> Entry:
    rec = NodeRecord(pid, 1, 0.0, role="worker", http_addr=http_addr, labels=labels)
    return Entry(SignedRecord(b"", b"", b"", rec), 0.0, alive)


def test_http_sd_lists_live_members_with_meta_labels() -> None:
    snap = Snapshot(
        "self",
        {
            "self": _entry("self", "http://127.0.0.1:8092"),
            "w1": _entry("w1", "http://[::1]:9000", site="clariden", slurm_job_id="42"),
            "w2": _entry("w2", "http://[::1]:9000"),  # an HTTP process of w1: one address
            "dead": _entry("dead", "http://10.0.0.9:8092", alive=False),
            "bad": _entry("bad", "not a url"),
        },
    )
    groups = http_sd(snap)
    assert [g["targets"] for g in groups] == [["127.0.0.1:8092"], ["[::1]:9000"]]
    w1 = groups[1]["labels"]
    assert w1["__meta_opentela_site"] == "clariden"
    assert w1["__meta_opentela_slurm_job_id"] == "42"
    assert w1["__meta_opentela_role"] == "worker"
    assert "__meta_opentela_hostname" not in w1
    assert host_port("http://h:notaport") is None


def test_every_catalog_entry_is_well_formed() -> None:
    names = [m.name for m in catalog.ALL]
    assert len(names) == len(set(names))
    for m in catalog.ALL:
        assert m.name.startswith("opentela_")
        assert m.name.endswith("_total") == (m.kind == catalog.COUNTER), m.name
        assert (m.kind == catalog.HISTOGRAM) == bool(m.buckets), m.name
        assert list(m.buckets) == sorted(m.buckets)


def test_every_metric_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    missing = [m.name for m in catalog.ALL if f"`{m.name}`" not in doc]
    assert missing == [], f"add to docs/metrics.md: {missing}"


def test_many_models_render_as_one_valid_text() -> None:
    m = RequestMetrics()
    rng = random.Random(1)
    for i in range(100):
        model = f"org/model-{i}"
        for _ in range(5):
            m.ttft.histogram(model).observe(rng.random())
            m.requests.counter(model, "/v1/chat/completions", "200").inc()
    fams = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert len(fams["opentela_time_to_first_token_seconds"].samples) == 100 * 14
    assert len(fams["opentela_http_requests"].samples) == 100
