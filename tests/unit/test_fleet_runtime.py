"""The fleet's bookkeeping over a fake Slurm and a hand-made table: a job becomes a replica
by its ``slurm_job_id`` label, a job that ends first is a failed start (a cancelled one is
not), GPU-seconds accrue for running jobs only, and an unreachable squeue is logged once."""

from __future__ import annotations

from pathlib import Path

import trio

from opentela.fleet import slurm_ctl
from opentela.fleet.runtime import Fleet
from opentela.fleet.spec import FleetSpec, ModelSpec
from opentela.table.record import NodeRecord, Service
from opentela.table.signing import SignedRecord
from opentela.table.store import Entry, Snapshot

M = "org/m"


class FakeSlurm:
    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.cancelled: list[str] = []
        self.down = False
        self.n = 100

    def submit(self, spec: ModelSpec, bootstrap: list[str]) -> str:
        self.n += 1
        self.jobs[str(self.n)] = "PENDING"
        return str(self.n)

    def states(self, ids: list[str]) -> dict[str, str]:
        if self.down:
            raise slurm_ctl.SlurmError("squeue: cannot reach slurmctld")
        return {j: s for j, s in self.jobs.items() if j in ids}

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.jobs[job_id] = "CANCELLED"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def replica(job: str) -> Entry:
    rec = NodeRecord(
        f"peer-{job}", 1, 0.0, role="worker", services=(Service("llm", "ready", (f"model={M}",)),),
        labels={"slurm_job_id": job},
    )  # fmt: skip
    return Entry(SignedRecord(b"", b"", b"", rec), 0.0, True)


def make(**kw: object) -> tuple[Fleet, FakeSlurm, Clock, dict[str, Entry]]:
    spec = ModelSpec(M, Path("/j.sbatch"), {}, **kw)  # type: ignore[arg-type]
    fs = FleetSpec(Path("fleet.yaml"), (spec,), interval_s=1.0)
    slurm, clock, table = FakeSlurm(), Clock(), {}
    fleet = Fleet(
        fs, lambda: Snapshot("self", dict(table)), lambda: ["/ip4/1.2.3.4/tcp/1/p2p/x"],
        lambda _p: None, 60.0, slurm=slurm, clock=clock,
    )  # fmt: skip
    return fleet, slurm, clock, table


def reconcile(fleet: Fleet, clock: Clock, dt: float = 2.0) -> None:
    clock.t += dt
    trio.run(fleet.reconcile, clock.t)


def test_a_held_request_starts_a_job_which_becomes_the_replica_then_idles_out() -> None:
    fleet, slurm, clock, table = make(max_replicas=2, idle_after_s=30)
    fleet.hold(M, +1)
    reconcile(fleet, clock)
    assert list(fleet.jobs) == ["101"] and fleet.state(M) == "starting"
    slurm.jobs["101"] = "RUNNING"
    table["peer-101"] = replica("101")
    reconcile(fleet, clock)
    assert fleet.ready_jobs == {"101"} and fleet.state(M) == "ready"
    fleet.hold(M, -1)
    reconcile(fleet, clock, 31)  # idle 31 s: cancelled
    assert slurm.cancelled == ["101"]
    del table["peer-101"]
    reconcile(fleet, clock)
    assert fleet.jobs == {} and fleet.stats["start_failures"] == 0
    assert fleet.state(M) == "stopped"
    assert fleet.gpu_hours_today(clock.t) > 0


def test_jobs_that_end_before_their_replica_are_failed_starts_and_give_up() -> None:
    fleet, slurm, clock, _ = make(max_replicas=1)
    fleet.hold(M, +1)
    for _ in range(3):
        reconcile(fleet, clock, 30)  # submits (any back-off, 2 then 4 s, has passed)
        slurm.jobs[max(slurm.jobs)] = "FAILED"
        reconcile(fleet, clock, 1)  # sees it failed; backing off now
    assert fleet.stats["start_failures"] == 3 and fleet.stats["submitted"] == 3
    assert fleet.failing(M) and "ended FAILED" in fleet.failing(M)
    reconcile(fleet, clock, 60)
    assert fleet.stats["submitted"] == 3  # given up: no fourth
    assert fleet.status()["models"][0]["state"] == "failing"


def test_an_unreachable_squeue_is_one_event_until_it_answers_again() -> None:
    fleet, slurm, clock, _ = make(max_replicas=1)
    fleet.hold(M, +1)
    reconcile(fleet, clock)
    slurm.down = True
    for _ in range(5):
        reconcile(fleet, clock)
    slurm.down = False
    reconcile(fleet, clock)
    kinds = [e["event"] for e in fleet.events]
    assert kinds.count("squeue_failed") == 1 and kinds.count("squeue_recovered") == 1
