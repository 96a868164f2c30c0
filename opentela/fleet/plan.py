"""What the fleet should do now: pure arithmetic over what the table shows and what the head
has submitted (``now`` is an argument; nothing here touches Slurm or a clock).

The rule, per catalogued model, each reconcile:

- **demand** = requests in flight or queued at its ready replicas (their table load) plus
  requests held at this head waiting for a replica (a cold start);
- **want** = ``ceil(demand / target_queue)``, at least ``min_replicas``, at most
  ``max_replicas``; ``have`` = ready replicas plus this head's jobs that have not become one yet;
- ``want > have``: submit one job (never more than one per model per interval, so a burst of
  demand cannot flood the queue before the first job starts);
- a replica of ours whose job ends within ``handover_before`` (and is past the first half of
  its job) gets one successor while demand still needs it (``have - 1 < want``), started
  early enough to be ready before the old one drains;
- a replica of ours idle (no load seen, nothing forwarded to it) for ``idle_after`` is
  cancelled while more than ``min_replicas`` remain and nothing is held; an in-flight request
  is never cut, since cancelling a job drains its node first (SIGTERM);
- starts that failed (a job gone before its replica was ever ready) back off exponentially
  and stop after ``MAX_START_FAILURES`` in a row: a broken job script is reported, not
  resubmitted forever;
- global caps: at most ``max_jobs`` jobs of ours at once, no submission while today's
  GPU-hours are at ``max_gpu_hours_per_day``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .spec import FleetSpec, ModelSpec

MAX_START_FAILURES = 3
BACKOFF_MAX_S = 600.0

# Slurm job states in which a job may still become (or be) a replica.
LIVE_STATES = frozenset(
    {"", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "REQUEUED", "SUSPENDED"}
)

READY, STARTING, STOPPED, FAILING = "ready", "starting", "stopped", "failing"


@dataclass(frozen=True)
class Replica:
    """A ready replica of a model, as the table shows it."""

    peer_id: str
    job_id: str  # its record's ``slurm_job_id`` label; "" for a node outside Slurm
    load: int
    idle_s: float  # since it last had load or was sent a request by this head
    expires_at: float | None  # wall clock, from its ``expires_at`` label
    started_at: float | None = None  # wall clock, from its ``started_at`` label


@dataclass(frozen=True)
class Job:
    """A job this head submitted."""

    job_id: str
    model: str
    state: str  # Slurm's (PENDING, RUNNING...); "" just submitted, not yet seen in squeue
    submitted_at: float
    successor_of: str = ""  # the job it takes over from (hand-over), if any


@dataclass
class Starts:
    """A model's recent start failures (a job that ended before its replica was ready)."""

    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""

    @property
    def given_up(self) -> bool:
        return self.failures >= MAX_START_FAILURES

    def failed(self, now: float, interval_s: float, error: str) -> None:
        self.failures += 1
        self.retry_at = now + min(BACKOFF_MAX_S, interval_s * 2**self.failures)
        self.last_error = error

    def succeeded(self) -> None:
        self.failures, self.retry_at, self.last_error = 0, 0.0, ""


@dataclass(frozen=True)
class Submit:
    model: str
    reason: str
    successor_of: str = ""


@dataclass(frozen=True)
class Cancel:
    model: str
    job_id: str
    reason: str


Action = Submit | Cancel


@dataclass
class ModelView:
    """One model's figures for a decision and for ``fleet status``."""

    model: str
    demand: int
    want: int
    ready: int
    starting: int
    state: str
    note: str = ""
    actions: list[Action] = field(default_factory=list)


def want_replicas(spec: ModelSpec, demand: int) -> int:
    need = math.ceil(demand / spec.target_queue) if demand > 0 else 0
    return max(spec.min_replicas, min(spec.max_replicas, need))


def handover_at(r: Replica, before_s: float) -> float:
    """When a replica's successor is submitted: ``before_s`` ahead of its end, but never in
    the first half of its job (a job shorter than ``2 x handover_before`` would otherwise
    start its successor at once, and that one the next)."""
    if r.expires_at is None:
        return math.inf
    at = r.expires_at - before_s
    if r.started_at is not None:
        at = max(at, (r.started_at + r.expires_at) / 2)
    return at


def decide(
    fleet: FleetSpec,
    replicas: Mapping[str, Sequence[Replica]],
    jobs: Sequence[Job],
    held: Mapping[str, int],
    starts: Mapping[str, Starts],
    last_submit: Mapping[str, float],
    gpu_hours_today: float,
    now: float,
) -> list[ModelView]:
    """Every catalogued model's view, with the actions to take now (in ``view.actions``)."""
    live = [j for j in jobs if j.state in LIVE_STATES]
    jobs_left = fleet.max_jobs - len(live)
    capped = (
        fleet.max_gpu_hours_per_day is not None and gpu_hours_today >= fleet.max_gpu_hours_per_day
    )
    views = []
    for spec in fleet.models:
        view = _model(spec, replicas.get(spec.id, ()), live, held.get(spec.id, 0), now)
        start = starts.get(spec.id) or Starts()
        may_submit = now - last_submit.get(spec.id, -math.inf) >= fleet.interval_s
        blocked = _blocked(start, capped, jobs_left, now)
        for action in _wanted(spec, view, replicas.get(spec.id, ()), live, held, now):
            if isinstance(action, Cancel):
                view.actions.append(action)
            elif not may_submit:
                continue
            elif blocked:
                view.note = blocked
            else:
                view.actions.append(action)
                jobs_left -= 1
                may_submit = False
        if start.given_up:
            view.state = FAILING if view.ready == 0 else view.state
            view.note = f"{start.failures} starts failed in a row: {start.last_error}"
        views.append(view)
    return views


def _blocked(start: Starts, capped: bool, jobs_left: int, now: float) -> str:
    if start.given_up:
        return "not submitting: its last starts failed"
    if now < start.retry_at:
        return f"backing off after a failed start ({start.retry_at - now:.0f} s left)"
    if capped:
        return "GPU-hour cap for today reached"
    if jobs_left <= 0:
        return "job cap (limits.max_jobs) reached"
    return ""


def _model(
    spec: ModelSpec, reps: Sequence[Replica], live: Sequence[Job], held: int, now: float
) -> ModelView:
    ready_jobs = {r.job_id for r in reps if r.job_id}
    starting = [j for j in live if j.model == spec.id and j.job_id not in ready_jobs]
    demand = sum(max(0, r.load) for r in reps) + held
    want = want_replicas(spec, demand)
    state = READY if reps else STARTING if starting or held else STOPPED
    return ModelView(spec.id, demand, want, len(reps), len(starting), state)


def _wanted(
    spec: ModelSpec,
    view: ModelView,
    reps: Sequence[Replica],
    live: Sequence[Job],
    held: Mapping[str, int],
    now: float,
) -> list[Action]:
    ours = {j.job_id: j for j in live if j.model == spec.id}
    have = view.ready + view.starting
    out: list[Action] = []
    if view.want > have:
        out.append(
            Submit(spec.id, f"demand {view.demand} wants {view.want}, {have} up or starting")
        )
    successors = {j.successor_of for j in ours.values() if j.successor_of}
    for r in reps:
        if (
            r.job_id in ours
            and r.job_id not in successors
            and now >= handover_at(r, spec.handover_before_s)
            and have - 1 < view.want
        ):
            ends_in = (r.expires_at or now) - now
            out.append(Submit(spec.id, f"job {r.job_id} ends in {ends_in:.0f} s", r.job_id))
    if held.get(spec.id, 0) == 0:
        left = view.ready
        for r in sorted(reps, key=lambda r: -r.idle_s):
            if left <= spec.min_replicas:
                break
            if r.job_id in ours and r.load == 0 and r.idle_s >= spec.idle_after_s:
                out.append(Cancel(spec.id, r.job_id, f"idle for {r.idle_s:.0f} s"))
                left -= 1
    return out
