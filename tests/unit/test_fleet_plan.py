"""The fleet's decisions, without Slurm or a network: scale from zero, up to max and not
beyond, one submission per model per interval, hand-over before a job ends, scale down after
idle but never below min or while requests wait, back-off and giving up on failed starts,
and the global caps."""

from __future__ import annotations

from pathlib import Path

from opentela.fleet.plan import (
    MAX_START_FAILURES,
    Cancel,
    Job,
    Replica,
    Starts,
    Submit,
    decide,
    want_replicas,
)
from opentela.fleet.spec import FleetSpec, ModelSpec

M = "org/m"
NOW = 10_000.0


def fleet(**kw: object) -> FleetSpec:
    limits = {k: kw.pop(k) for k in ("max_jobs", "max_gpu_hours_per_day") if k in kw}
    spec = ModelSpec(id=M, sbatch=Path("/job.sbatch"), env={}, **kw)  # type: ignore[arg-type]
    return FleetSpec(path=Path("fleet.yaml"), models=(spec,), interval_s=5.0, **limits)  # type: ignore[arg-type]


def run(
    f: FleetSpec,
    replicas: list[Replica] = (),  # type: ignore[assignment]
    jobs: list[Job] = (),  # type: ignore[assignment]
    held: int = 0,
    starts: Starts | None = None,
    last_submit: float | None = None,
    gpu_hours: float = 0.0,
):
    views = decide(
        f,
        {M: list(replicas)},
        list(jobs),
        {M: held} if held else {},
        {M: starts or Starts()},
        {M: last_submit} if last_submit is not None else {},
        gpu_hours,
        NOW,
    )
    return views[0]


def rep(job: str, load: int = 0, idle: float = 0.0, expires: float | None = None) -> Replica:
    return Replica(f"peer-{job}", job, load, idle, expires)


def test_want_is_demand_over_target_queue_within_min_and_max() -> None:
    spec = ModelSpec(M, Path("/j"), {}, min_replicas=1, max_replicas=3, target_queue=4)
    assert [want_replicas(spec, d) for d in (0, 1, 4, 5, 8, 9, 100)] == [1, 1, 1, 2, 2, 3, 3]


def test_a_held_request_starts_a_model_from_zero_once_per_interval() -> None:
    f = fleet(max_replicas=2)
    view = run(f, held=1)
    assert view.state == "stopped" or view.state == "starting"
    assert [type(a) for a in view.actions] == [Submit]
    # The job is pending now: no second one while it starts.
    pending = Job("7", M, "PENDING", NOW - 1)
    assert run(f, jobs=[pending], held=1, last_submit=NOW - 60).actions == []
    # Nothing held, nothing in flight, min 0: nothing to do.
    assert run(f).actions == [] and run(f).state == "stopped"


def test_queued_load_scales_up_to_max_and_not_beyond() -> None:
    f = fleet(max_replicas=3, target_queue=4)
    reps = [rep("1", load=9)]
    view = run(f, replicas=reps)
    assert view.want == 3 and [type(a) for a in view.actions] == [Submit]
    # One per interval: the next only after the interval.
    assert run(f, replicas=reps, last_submit=NOW - 1).actions == []
    reps3 = [rep("1", load=20), rep("2", load=20), rep("3", load=20)]
    jobs = [Job(j, M, "RUNNING", 0) for j in ("1", "2", "3")]
    assert run(f, replicas=reps3, jobs=jobs).actions == []  # at max: never a fourth


def test_idle_replicas_are_cancelled_down_to_min_never_with_load_or_held_requests() -> None:
    f = fleet(min_replicas=1, max_replicas=3, idle_after_s=600)
    jobs = [Job(j, M, "RUNNING", 0) for j in ("1", "2", "3")]
    reps = [rep("1", idle=700), rep("2", idle=900), rep("3", load=1, idle=900)]
    view = run(f, replicas=reps, jobs=jobs)
    # 3 has load (never cut) and keeps the count at min: both idle ones go, longest first.
    assert [a.job_id for a in view.actions if isinstance(a, Cancel)] == ["2", "1"]
    assert run(f, replicas=reps, jobs=jobs, held=1).actions == []  # a request waits: keep all
    # Down to min: the last idle replica stays.
    one = [rep("1", idle=10_000)]
    assert run(f, replicas=one, jobs=jobs[:1]).actions == []
    # Replicas that are not ours (no job of this head) are never cancelled.
    foreign = [rep("99", idle=10_000), rep("98", idle=10_000)]
    assert run(f, replicas=foreign).actions == []


def test_a_replica_near_its_time_limit_gets_one_successor_while_demand_needs_it() -> None:
    f = fleet(min_replicas=1, max_replicas=2, handover_before_s=600)
    job = Job("1", M, "RUNNING", 0)
    ending = [rep("1", expires=NOW + 300)]
    view = run(f, replicas=ending, jobs=[job])
    assert view.actions == [Submit(M, "job 1 ends in 300 s", "1")]
    successor = Job("2", M, "PENDING", NOW - 10, successor_of="1")
    assert run(f, replicas=ending, jobs=[job, successor], last_submit=NOW - 60).actions == []
    # Not needed (min 0, no demand): no successor.
    assert run(fleet(handover_before_s=600), replicas=ending, jobs=[job]).actions == []
    # Far from its limit: nothing.
    assert run(f, replicas=[rep("1", expires=NOW + 3600)], jobs=[job]).actions == []
    # A job shorter than twice handover_before: its successor waits for the second half
    # (else a 10-minute job with handover_before 10m would chain successors at once).
    young = Replica("p", "1", 0, 0.0, NOW + 500, started_at=NOW - 50)
    assert run(f, replicas=[young], jobs=[job]).actions == []
    older = Replica("p", "1", 0, 0.0, NOW + 250, started_at=NOW - 350)
    assert [type(a) for a in run(f, replicas=[older], jobs=[job]).actions] == [Submit]


def test_failed_starts_back_off_then_give_up_and_are_reported() -> None:
    f = fleet(max_replicas=2)
    starts = Starts()
    starts.failed(NOW - 1, 5.0, "job 3 ended FAILED before its replica was ready")
    view = run(f, held=1, starts=starts)
    assert view.actions == [] and "backing off" in view.note
    for _ in range(MAX_START_FAILURES - 1):
        starts.failed(NOW - 10_000, 5.0, "job 4 ended FAILED before its replica was ready")
    view = run(f, held=1, starts=starts)
    assert view.actions == []
    assert view.state == "failing" and "3 starts failed" in view.note and "job 4" in view.note
    starts.succeeded()
    assert [type(a) for a in run(f, held=1, starts=starts).actions] == [Submit]


def test_global_caps_block_submissions_and_say_why() -> None:
    view = run(fleet(max_replicas=2, max_jobs=1), held=1, jobs=[Job("1", "other", "RUNNING", 0)])
    assert view.actions == [] and "max_jobs" in view.note
    view = run(fleet(max_replicas=2, max_gpu_hours_per_day=10.0), held=1, gpu_hours=10.0)
    assert view.actions == [] and "GPU-hour cap" in view.note
    # Ended jobs do not count against max_jobs.
    done = Job("1", "other", "COMPLETED", 0)
    assert [type(a) for a in run(fleet(max_jobs=1), held=1, jobs=[done]).actions] == [Submit]
