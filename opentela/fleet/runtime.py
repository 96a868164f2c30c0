"""The fleet component: every ``interval`` (and at once when a request starts waiting for a
model with no replica) it reads Slurm's view of its jobs and the table's view of the
replicas, asks ``plan.decide`` what to do, and submits or cancels jobs.

What it remembers lives in memory: jobs it submitted, start failures, GPU-seconds per UTC
day. A head that restarts forgets its jobs' ids; their replicas stay in the pool until their
time limit (they are still counted as replicas, just no longer cancelled when idle).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..routing.plan import models
from ..table.store import Snapshot
from . import slurm_ctl
from .plan import FAILING, LIVE_STATES, Cancel, Job, ModelView, Replica, Starts, Submit, decide
from .spec import FleetSpec

log = structlog.get_logger("opentela.fleet")

TICK_S = 0.5  # how often the loop looks for a reason to reconcile early (a held request)
SEEN_GRACE_S = 30.0  # a just-submitted job may take this long to show up in squeue
EVENTS = 50


def _epoch(label: str) -> float | None:
    return float(label) if label.isdigit() else None


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class Fleet:
    def __init__(
        self,
        spec: FleetSpec,
        snapshot: Callable[[], Snapshot],
        bootstrap: Callable[[], list[str]],
        last_sent: Callable[[str], float | None],
        hold_timeout_s: float,
        slurm: Any = slurm_ctl,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.snapshot = snapshot
        self.bootstrap = bootstrap
        self.last_sent = last_sent  # wall-clock time this node last forwarded to a peer
        self.hold_timeout_s = hold_timeout_s
        self.slurm = slurm
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.ready_jobs: set[str] = set()  # jobs whose replica was ready at least once
        self.cancelled: set[str] = set()
        self.held: Counter[str] = Counter()  # requests waiting for a replica, by model
        self.starts: dict[str, Starts] = {m.id: Starts() for m in spec.models}
        self.last_submit: dict[str, float] = {}
        self.busy_at: dict[str, float] = {}  # peer -> last time it had load or was sent work
        self.gpu_seconds: dict[str, float] = {}  # UTC day -> GPU-seconds of our jobs
        self.views: list[ModelView] = []
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.stats = Counter[str]()
        self._last_run = -math.inf
        self._last_gpu_at: float | None = None
        self._squeue_failing = False
        self._kick = False

    # -- the asyncio side (the gateway) --------------------------------------------------------

    def catalogued(self, model: str | None) -> bool:
        return model is not None and self.spec.model(model) is not None

    def hold(self, model: str, n: int) -> None:
        """``n`` = +1 when a request starts waiting for ``model``, -1 when it stops."""
        self.held[model] += n
        if self.held[model] <= 0:
            del self.held[model]
        elif n > 0:
            self._kick = True

    def state(self, model: str) -> str | None:
        view = self._view(model)
        return view.state if view is not None else None

    def failing(self, model: str) -> str | None:
        """Why ``model`` cannot start (its last starts failed), or None."""
        view = self._view(model)
        return view.note if view is not None and view.state == FAILING else None

    def _view(self, model: str) -> ModelView | None:
        return next((v for v in self.views if v.model == model), None)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        log.info("fleet.started", file=str(self.spec.path), models=[m.id for m in self.spec.models])
        while True:
            now = self.clock()
            if self._kick or now - self._last_run >= self.spec.interval_s:
                self._kick = False
                self._last_run = now
                await self.reconcile(now)
            await trio.sleep(TICK_S)

    async def reconcile(self, now: float) -> None:
        try:
            states = await trio.to_thread.run_sync(self.slurm.states, list(self.jobs))
        except slurm_ctl.SlurmError as exc:
            if not self._squeue_failing:  # once, not every interval while it lasts
                self._event(now, "", "squeue_failed", str(exc), level="warning")
            self._squeue_failing = True
            return
        if self._squeue_failing:
            self._squeue_failing = False
            self._event(now, "", "squeue_recovered", "squeue answers again")
        self._jobs_update(states, now)
        replicas = self._replicas(self.snapshot(), now)
        self.views = decide(
            self.spec,
            replicas,
            list(self.jobs.values()),
            self.held,
            self.starts,
            self.last_submit,
            self.gpu_hours_today(now),
            now,
        )
        for view in self.views:
            for action in view.actions:
                if isinstance(action, Submit):
                    await self._submit(action, now)
                elif isinstance(action, Cancel):
                    await self._cancel(action, now)

    def _jobs_update(self, states: dict[str, str], now: float) -> None:
        last = self._last_gpu_at if self._last_gpu_at is not None else now
        self._last_gpu_at = now
        for job_id, job in list(self.jobs.items()):
            state = states.get(job_id)
            if state is None and now - job.submitted_at < SEEN_GRACE_S:
                continue  # not in squeue yet
            state = state or "GONE"
            if state == "RUNNING":
                spec = self.spec.model(job.model)
                gpus = spec.gpus if spec is not None else 0
                day = utc_day(now)
                self.gpu_seconds[day] = self.gpu_seconds.get(day, 0.0) + gpus * (now - last)
            if state in LIVE_STATES:
                if state != job.state:
                    self.jobs[job_id] = Job(
                        job.job_id, job.model, state, job.submitted_at, job.successor_of
                    )
                continue
            del self.jobs[job_id]
            if job_id in self.cancelled:
                self.cancelled.discard(job_id)
                self._event(now, job.model, "job_ended", f"job {job_id} {state} (cancelled)")
            elif job_id in self.ready_jobs:
                self._event(now, job.model, "job_ended", f"job {job_id} {state}")
            else:
                error = f"job {job_id} ended {state} before its replica was ready"
                self.starts[job.model].failed(now, self.spec.interval_s, error)
                self.stats["start_failures"] += 1
                start = self.starts[job.model]
                self._event(
                    now,
                    job.model,
                    "start_failed",
                    error + (f"; giving up after {start.failures}" if start.given_up else ""),
                    level="error" if start.given_up else "warning",
                )
            self.ready_jobs.discard(job_id)

    def _replicas(self, snap: Snapshot, now: float) -> dict[str, list[Replica]]:
        pool = models(snap)
        out: dict[str, list[Replica]] = {}
        for spec in self.spec.models:
            reps = []
            for pid in pool.get(spec.id, ()):
                labels = snap.entries[pid].record.labels
                job_id = labels.get("slurm_job_id", "")
                load = snap.load(pid)[1]
                sent = self.last_sent(pid)
                first = self.busy_at.setdefault(pid, now)  # a new replica is not idle yet
                busy = max(first, sent or 0.0, now if load > 0 else 0.0)
                self.busy_at[pid] = busy
                if job_id in self.jobs and job_id not in self.ready_jobs:
                    self.ready_jobs.add(job_id)
                    self.starts[spec.id].succeeded()
                    waited = now - self.jobs[job_id].submitted_at
                    self._event(now, spec.id, "replica_ready", f"job {job_id} after {waited:.1f} s")
                reps.append(
                    Replica(
                        pid,
                        job_id,
                        load,
                        now - busy,
                        _epoch(labels.get("expires_at", "")),
                        _epoch(labels.get("started_at", "")),
                    )
                )
            out[spec.id] = reps
        return out

    async def _submit(self, action: Submit, now: float) -> None:
        spec = self.spec.model(action.model)
        assert spec is not None
        self.last_submit[spec.id] = now
        try:
            job_id = await trio.to_thread.run_sync(self.slurm.submit, spec, self.bootstrap())
        except slurm_ctl.SlurmError as exc:
            self.stats["submit_failures"] += 1
            self.starts[spec.id].failed(now, self.spec.interval_s, f"sbatch failed: {exc}")
            self._event(now, spec.id, "submit_failed", str(exc), level="warning")
            return
        self.jobs[job_id] = Job(job_id, spec.id, "", now, action.successor_of)
        self.stats["submitted"] += 1
        self._event(now, spec.id, "submitted", f"job {job_id}: {action.reason}")

    async def _cancel(self, action: Cancel, now: float) -> None:
        try:
            await trio.to_thread.run_sync(self.slurm.cancel, action.job_id)
        except slurm_ctl.SlurmError as exc:
            self._event(now, action.model, "cancel_failed", str(exc), level="warning")
            return
        self.cancelled.add(action.job_id)
        self.stats["cancelled"] += 1
        self._event(now, action.model, "cancelled", f"job {action.job_id}: {action.reason}")

    def _event(self, now: float, model: str, kind: str, detail: str, level: str = "info") -> None:
        self.events.append({"at": now, "model": model, "event": kind, "detail": detail})
        getattr(log, level)(f"fleet.{kind}", model=model or None, detail=detail)

    # -- what it tells ---------------------------------------------------------------------------

    def gpu_hours_today(self, now: float) -> float:
        return self.gpu_seconds.get(utc_day(now), 0.0) / 3600.0

    def status(self) -> dict[str, Any]:
        now = self.clock()
        views = {v.model: v for v in self.views}
        out = []
        for spec in self.spec.models:
            v = views.get(spec.id)
            jobs = [j for j in self.jobs.values() if j.model == spec.id]
            out.append(
                {
                    "id": spec.id,
                    "state": v.state if v else "unknown",
                    "demand": v.demand if v else None,
                    "desired": v.want if v else None,
                    "ready": v.ready if v else None,
                    "starting": v.starting if v else None,
                    "held": self.held.get(spec.id, 0),
                    "min_replicas": spec.min_replicas,
                    "max_replicas": spec.max_replicas,
                    "note": v.note if v else "",
                    "jobs": [
                        {
                            "id": j.job_id,
                            "state": j.state or "SUBMITTED",
                            "age_s": round(now - j.submitted_at, 1),
                            "ready": j.job_id in self.ready_jobs,
                            "successor_of": j.successor_of or None,
                        }
                        for j in sorted(jobs, key=lambda j: j.submitted_at)
                    ],
                }
            )
        return {
            "file": str(self.spec.path),
            "interval_s": self.spec.interval_s,
            "models": out,
            "limits": {
                "jobs": sum(1 for j in self.jobs.values() if j.state in LIVE_STATES),
                "max_jobs": self.spec.max_jobs,
                "gpu_hours_today": round(self.gpu_hours_today(now), 4),
                "max_gpu_hours_per_day": self.spec.max_gpu_hours_per_day,
            },
            "events": list(self.events)[-20:],
            "stats": dict(self.stats),
        }
