"""Every metric a node exports: its name, type, help text and label names, in one place.

The exposition (``exposition.py``) and the collectors build their families from these entries,
and the shipped Grafana dashboard and Prometheus rules are tested against them (an expression
that names a metric not listed here is a dashboard that shows nothing). Names follow
Prometheus' conventions: ``opentela_`` prefix, base units (seconds, bytes), ``_total`` on
counters.

Cardinality is bounded by construction: request series carry a model (bounded by
``MAX_MODELS``, beyond which ``other``), a route (the gateway's fixed route templates) and a
status (a few dozen HTTP codes at most); no request series carries a peer ID. The only per-node
identity is ``opentela_node_info``'s one series.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

MAX_MODELS = 512
"""Distinct model label values a node keeps series for; later ones count as ``other``."""
OTHER = "other"

# Time to first byte / token: a cached short answer takes tens of milliseconds, a cold start
# of a large model on a loaded replica a minute.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Whole requests: long generations run for minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


def _m(name: str, kind: str, help_: str, *labels: str, buckets: tuple[float, ...] = ()) -> Metric:
    return Metric(name, kind, help_, labels, buckets)


# -- the entry side: HTTP requests this node answered -------------------------------------------
HTTP_REQUESTS = _m(
    "opentela_http_requests_total",
    COUNTER,
    "HTTP requests this node answered, by model (empty when the call names none), route "
    "template and HTTP status (499: the client went away first).",
    "model",
    "route",
    "status",
)
HTTP_IN_FLIGHT = _m(
    "opentela_http_requests_in_flight", GAUGE, "HTTP requests this node is answering now."
)
FORWARD_IN_FLIGHT = _m(
    "opentela_forward_in_flight",
    GAUGE,
    "Requests this node is forwarding to a replica now (its own backend included).",
)
TTFB = _m(
    "opentela_time_to_first_byte_seconds",
    HISTOGRAM,
    "From the request's arrival to the first byte of the answer's body, answered requests.",
    "model",
    buckets=LATENCY_BUCKETS,
)
TTFT = _m(
    "opentela_time_to_first_token_seconds",
    HISTOGRAM,
    "Streamed answers: from the request's arrival to the first chunk of generated text.",
    "model",
    buckets=LATENCY_BUCKETS,
)
DURATION = _m(
    "opentela_request_duration_seconds",
    HISTOGRAM,
    "From the request's arrival to the end of its answer, model calls answered 2xx.",
    "model",
    buckets=DURATION_BUCKETS,
)
PROMPT_TOKENS = _m(
    "opentela_prompt_tokens_total",
    COUNTER,
    "Prompt tokens of answered calls, as the backend reported them in usage.",
    "model",
)
COMPLETION_TOKENS = _m(
    "opentela_completion_tokens_total",
    COUNTER,
    "Completion tokens of answered calls, as the backend reported them in usage.",
    "model",
)
USAGE_ESTIMATED = _m(
    "opentela_usage_estimated_total",
    COUNTER,
    "Answered calls whose backend reported no usage (their tokens are estimated for quotas and "
    "not counted in the token counters).",
    "model",
)
STREAM_ERRORS = _m(
    "opentela_stream_errors_total",
    COUNTER,
    "Streamed answers that ended badly after their head was sent: an error event from the "
    "backend (kind=error_event), or no end of stream (kind=cut: the replica, the path or the "
    "client went away).",
    "model",
    "kind",
)
FAILOVERS = _m(
    "opentela_failovers_total",
    COUNTER,
    "Requests sent to another replica after an attempt failed, by why the attempt failed.",
    "reason",
)
RETRIES = _m(
    "opentela_retries_total",
    COUNTER,
    "Requests sent again to the same replica on a fresh stream: a pooled stream found dead "
    "(stale_stream) or a relay that broke (relay_failed).",
    "reason",
)
EXHAUSTED = _m(
    "opentela_forward_exhausted_total",
    COUNTER,
    "Requests no replica could serve after every attempt (answered 503).",
)

# -- the worker side: requests forwarded to this node's backend ---------------------------------
WORKER_REQUESTS = _m(
    "opentela_worker_requests_total",
    COUNTER,
    "Requests forwarded to this worker by entry nodes, by model and by the status answered "
    "(the backend's, or the worker's own refusal).",
    "model",
    "status",
)
WORKER_IN_FLIGHT = _m(
    "opentela_worker_in_flight", GAUGE, "Forwarded requests this worker's backend is serving now."
)
BACKEND_UP = _m(
    "opentela_backend_up", GAUGE, "1 when this worker's backend answers its health check."
)
BACKEND_RUNNING = _m(
    "opentela_backend_requests_running",
    GAUGE,
    "Requests the backend reports running, from its own metrics (vLLM, SGLang, llama.cpp).",
)
BACKEND_WAITING = _m(
    "opentela_backend_requests_waiting",
    GAUGE,
    "Requests the backend reports queued, from its own metrics.",
)

# -- the pool as this node sees it --------------------------------------------------------------
NODE_INFO = _m(
    "opentela_node_info",
    GAUGE,
    "Always 1: this node's identity and build.",
    "peer_id",
    "role",
    "version",
    "site",
    "reachability",
)
MEMBERS = _m("opentela_members", GAUGE, "Pool members this node knows, by state.", "state")
SUSPICIONS = _m(
    "opentela_membership_suspicions_total", COUNTER, "Members this node came to suspect."
)
DEATHS = _m("opentela_membership_deaths_total", COUNTER, "Members this node declared dead.")
REFUTATIONS = _m(
    "opentela_membership_refutations_total",
    COUNTER,
    "Times this node refuted a suspicion (or a death) about itself.",
)
RECORDS = _m(
    "opentela_table_records", GAUGE, "Records in this node's service table, by status.", "status"
)
REJECTIONS = _m(
    "opentela_table_rejections_total",
    COUNTER,
    "Table records or load updates refused (bad signature, not a member, malformed, stale).",
)
SYNCS = _m("opentela_table_syncs_total", COUNTER, "Anti-entropy table syncs with a peer.")
REPLICAS = _m(
    "opentela_model_replicas",
    GAUGE,
    "Ready replicas of each model in the table; 0 for a model that had one in the last hour.",
    "model",
)
CONTROL_SENT = _m(
    "opentela_control_plane_sent_bytes_total",
    COUNTER,
    "Bytes this node sent for membership and the table, by plane.",
    "plane",
)
CONTROL_RECEIVED = _m(
    "opentela_control_plane_received_bytes_total",
    COUNTER,
    "Bytes this node received for membership and the table, by plane.",
    "plane",
)
CONNECTIONS = _m("opentela_p2p_connections", GAUGE, "libp2p connections open now.")
CONNECTIONS_CLOSED = _m(
    "opentela_p2p_connections_closed_total",
    COUNTER,
    "Idle libp2p connections closed to stay within --p2p.max-connections.",
)

# -- relays -------------------------------------------------------------------------------------
RELAY_CLIENTS = _m(
    "opentela_relay_reservations",
    GAUGE,
    "Private nodes holding a reservation at this relay now.",
)
RELAY_STREAMS = _m("opentela_relay_streams", GAUGE, "Streams this relay is splicing now.")
RELAYED = _m("opentela_relay_relayed_total", COUNTER, "Streams this relay has spliced.")
RELAY_BYTES = _m("opentela_relay_relayed_bytes_total", COUNTER, "Bytes this relay has copied.")
RELAY_REFUSED = _m(
    "opentela_relay_refused_total", COUNTER, "Relay requests this node refused (limits, role)."
)
RELAYS_HELD = _m(
    "opentela_relay_reserved",
    GAUGE,
    "Relays this private node holds a reservation with (0 on a public node).",
)
RELAYED_OPENED = _m(
    "opentela_relayed_streams_opened_total",
    COUNTER,
    "Streams this node opened through a relay (it could not dial the target).",
)

# -- the fleet (a head started with --fleet) --------------------------------------------------
FLEET_DESIRED = _m(
    "opentela_fleet_desired_replicas",
    GAUGE,
    "Replicas the fleet wants for each catalogued model now (demand, min and max).",
    "model",
)
FLEET_JOBS = _m(
    "opentela_fleet_jobs",
    GAUGE,
    "Slurm jobs this head submitted that may still serve, by model and Slurm state.",
    "model",
    "state",
)
FLEET_HELD = _m(
    "opentela_fleet_held_requests",
    GAUGE,
    "Requests waiting at this head for a replica of a starting model.",
    "model",
)
FLEET_SUBMITTED = _m(
    "opentela_fleet_submissions_total", COUNTER, "Jobs the fleet submitted (sbatch)."
)
FLEET_CANCELLED = _m(
    "opentela_fleet_cancellations_total", COUNTER, "Jobs the fleet cancelled (scancel), idle."
)
FLEET_START_FAILURES = _m(
    "opentela_fleet_start_failures_total",
    COUNTER,
    "Jobs that ended (or could not be submitted) before their replica was ever ready.",
)
FLEET_GPU_HOURS = _m(
    "opentela_fleet_gpu_hours_today",
    GAUGE,
    "GPU-hours of the fleet's running jobs so far this UTC day.",
)
FLEET_GPU_HOURS_LIMIT = _m(
    "opentela_fleet_gpu_hours_limit",
    GAUGE,
    "limits.max_gpu_hours_per_day of the fleet file (absent: no cap).",
)
FLEET_JOB_LIMIT = _m(
    "opentela_fleet_job_limit", GAUGE, "limits.max_jobs of the fleet file: concurrent jobs."
)

ALL: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))
"""Every metric above, in definition order (the order ``/metrics`` lists them)."""

NAMES: frozenset[str] = frozenset(m.name for m in ALL)


def series_names(metric: Metric) -> tuple[str, ...]:
    """The sample names a metric shows in the text format (a histogram's three)."""
    if metric.kind == HISTOGRAM:
        return (f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count")
    return (metric.name,)
