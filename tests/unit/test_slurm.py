"""Slurm job detection against captured command output; never raises, never runs Slurm."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from opentela.platform import slurm
from opentela.platform.slurm import (
    SlurmJob,
    detect,
    parse_duration,
    parse_scontrol_end_time,
    parse_slurm_time,
    parse_squeue_json,
    parse_time_left,
    run_command,
)

END = 1795846320  # 2026-11-28T06:12:00Z
END_ISO = "2026-11-28T06:12:00"
END_LOCAL = datetime(2026, 11, 28, 6, 12, 0).timestamp()  # what %e means on this machine

JOB_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NODELIST": "nid[001-002]",
    "SLURM_JOB_PARTITION": "normal",
    "SLURM_CLUSTER_NAME": "alps",
    "SLURM_JOB_GPUS": "0,1,2,3",
    "SLURM_LOCALID": "1",
}

SQUEUE_JSON_2205 = json.dumps(
    {
        "meta": {"Slurm": {"version": {"major": 22, "minor": 5, "micro": 8}}},
        "errors": [],
        "jobs": [
            {"job_id": 17, "end_time": 1700000000, "job_state": "RUNNING"},
            {"job_id": 4242, "end_time": END, "job_state": "RUNNING"},
        ],
    }
)
SQUEUE_JSON_2302 = json.dumps(
    {
        "jobs": [
            {
                "job_id": 4242,
                "end_time": {"set": True, "infinite": False, "number": END},
                "job_state": ["RUNNING"],
            }
        ]
    }
)
SCONTROL = (
    "JobId=4242 JobName=worker UserId=alice(1000) GroupId=alice(1000) JobState=RUNNING "
    f"RunTime=00:01:00 TimeLimit=01:00:00 StartTime=2026-11-28T05:12:00 EndTime={END_ISO} "
    "Deadline=N/A Partition=normal NodeList=nid001\n"
)


class FakeRun:
    """Answers commands from a table keyed by argv[0:2]; records every call."""

    def __init__(self, answers: dict[tuple[str, ...], str | None]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str | None:
        self.calls.append(argv)
        for key, out in self.answers.items():
            if tuple(argv[: len(key)]) == key and all(k in argv for k in key):
                return out
        return None


def _squeue_e(out: str | None) -> dict[tuple[str, ...], str | None]:
    return {("squeue", "-h"): out}


# --- detect -----------------------------------------------------------------------------


def test_no_job_id_is_not_a_job() -> None:
    run = FakeRun({})
    assert detect({}, run) is None
    assert detect({"SLURM_JOB_ID": "  ", "SLURM_JOB_NODELIST": "n1"}, run) is None
    assert run.calls == []


def test_env_end_time_wins_and_runs_nothing() -> None:
    run = FakeRun({("squeue",): "should not be asked"})
    job = detect({**JOB_ENV, "SLURM_JOB_END_TIME": str(END)}, run)
    assert job == SlurmJob(
        job_id="4242",
        end_time=float(END),
        node_list="nid[001-002]",
        partition="normal",
        cluster="alps",
        gpus="0,1,2,3",
        local_id=1,
    )
    assert run.calls == []


def test_step_gpus_and_legacy_names() -> None:
    env = {
        "SLURM_JOBID": "7",
        "SLURM_NODELIST": "n1",
        "SLURM_STEP_GPUS": "2",
        "SLURM_JOB_GPUS": "0,1,2,3",
        "SLURM_JOB_END_TIME": str(END),
    }
    job = detect(env, FakeRun({}))
    assert job is not None
    assert (job.job_id, job.node_list, job.gpus, job.local_id) == ("7", "n1", "2", None)
    assert (job.partition, job.cluster) == ("", "")


@pytest.mark.parametrize("bad", ["0", "", "soon", "-5", "4294967295", "1.5e9"])
def test_bad_env_end_time_falls_through_to_squeue_json(bad: str) -> None:
    run = FakeRun({("squeue", "--json"): SQUEUE_JSON_2205})
    job = detect({**JOB_ENV, "SLURM_JOB_END_TIME": bad}, run)
    assert job is not None and job.end_time == END
    assert run.calls[0] == ["squeue", "--json", "-j", "4242"]


def test_squeue_json_new_shape() -> None:
    job = detect(JOB_ENV, FakeRun({("squeue", "--json"): SQUEUE_JSON_2302}))
    assert job is not None and job.end_time == END


def test_squeue_json_failure_falls_to_percent_e() -> None:
    run = FakeRun({("squeue", "--json"): None, **_squeue_e(END_ISO + "\n")})
    job = detect(JOB_ENV, run)
    assert job is not None and job.end_time == END_LOCAL
    assert run.calls[1] == ["squeue", "-h", "-j", "4242", "-o", "%e"]


def test_percent_e_unknown_falls_to_scontrol() -> None:
    run = FakeRun(
        {
            ("squeue", "--json"): '{"jobs": []}',
            **_squeue_e("Unknown\n"),
            ("scontrol",): SCONTROL,
        }
    )
    job = detect(JOB_ENV, run)
    assert job is not None and job.end_time == END_LOCAL
    assert run.calls[-1] == ["scontrol", "show", "job", "-o", "4242"]
    assert len(run.calls) == 3


def test_every_source_fails_gives_none_not_an_error() -> None:
    run = FakeRun({("squeue", "--json"): "not json", **_squeue_e("N/A"), ("scontrol",): "junk"})
    job = detect(JOB_ENV, run)
    assert job is not None and job.end_time is None
    assert len(run.calls) == 3
    assert detect(JOB_ENV, lambda _argv: None) == SlurmJob(
        "4242", None, "nid[001-002]", "normal", "alps", "0,1,2,3", 1
    )


@pytest.mark.parametrize("local_id", ["", "x", "-1"])
def test_odd_local_id_is_none(local_id: str) -> None:
    job = detect({**JOB_ENV, "SLURM_LOCALID": local_id}, lambda _a: None)
    assert job is not None and job.local_id is None


# --- individual parsers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SQUEUE_JSON_2205, END),
        (SQUEUE_JSON_2302, END),
        ('{"jobs": [{"end_time": 1795846320}]}', END),  # no job_id field: the first job
        ('{"jobs": [{"job_id": 1, "end_time": 1795846320}]}', END),  # -j ignored: first job
        ('{"jobs": [{"job_id": 4242, "end_time": 1795846320.0}]}', END),
        ('{"jobs": [{"job_id": 4242, "end_time": {"set": false, "number": 0}}]}', None),
        ('{"jobs": [{"job_id": 4242, "end_time": {"set": true, "infinite": true}}]}', None),
        ('{"jobs": [{"job_id": 4242, "end_time": {"set": true, "number": "x"}}]}', None),
        ('{"jobs": [{"job_id": 4242, "end_time": 0}]}', None),
        ('{"jobs": [{"job_id": 4242, "end_time": 4294967295}]}', None),
        ('{"jobs": [{"job_id": 4242, "end_time": true}]}', None),
        ('{"jobs": [{"job_id": 4242, "end_time": "1795846320"}]}', None),
        ('{"jobs": [{"job_id": 4242}]}', None),
        ('{"jobs": ["x"]}', None),
        ('{"jobs": []}', None),
        ('{"jobs": {}}', None),
        ("[]", None),
        ("", None),
        ("{truncated", None),
    ],
)
def test_parse_squeue_json(text: str, expected: int | None) -> None:
    got = parse_squeue_json(text, "4242")
    assert got == (None if expected is None else float(expected))


@pytest.mark.parametrize(
    "text", ["N/A", "Unknown", "None", "", "  ", "2026-11-28", "2026-13-45T99:99:99", "x" * 500]
)
def test_parse_slurm_time_rejects(text: str) -> None:
    assert parse_slurm_time(text) is None


def test_parse_slurm_time_local_and_explicit_zone() -> None:
    assert parse_slurm_time(f" {END_ISO}\n") == END_LOCAL
    assert parse_slurm_time(END_ISO, UTC) == END


def test_parse_scontrol() -> None:
    assert parse_scontrol_end_time(SCONTROL, UTC) == END
    assert parse_scontrol_end_time(SCONTROL.replace(END_ISO, "Unknown")) is None
    assert parse_scontrol_end_time("JobId=1 EndTime= Partition=x") is None
    assert parse_scontrol_end_time("slurm_load_jobs error: Invalid job id specified") is None
    # "PreEndTime" or similar must not be mistaken for EndTime
    assert parse_scontrol_end_time(f"JobId=1 XEndTime={END_ISO}") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4:59", 299.0),
        ("0:00", 0.0),
        ("1:02:03", 3723.0),
        ("2-00:00:00", 172800.0),
        ("1-01:01:01", 90061.0),
        (" 59:59\n", 3599.0),
        ("UNLIMITED", None),
        ("NOT_SET", None),
        ("INVALID", None),
        ("", None),
        ("1-4:59", None),
        ("1:60", None),
        ("a:bc", None),
        ("12", None),
        ("x-01:00:00", None),
    ],
)
def test_parse_time_left(text: str, expected: float | None) -> None:
    assert parse_time_left(text) == expected


# --- parse_duration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),
        ("300s", 300.0),
        ("5m", 300.0),
        ("5M", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1d", 86400.0),
        ("1.5m", 90.0),
        ("0", 0.0),
        ("0.5", 0.5),
        ("1:30", 90.0),
        ("01:02:03", 3723.0),
        ("1-00:00:00", 86400.0),
        (" 5m ", 300.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "abc",
        "5 m",
        "5x",
        "m",
        "-5",
        "-5m",
        "30m1h",
        "5ms",
        "1:2:3:4",
        "1:75",
        ":30",
        "1e3",
    ],
)
def test_parse_duration_rejects_with_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert "5m" in str(info.value)


# --- run_command ------------------------------------------------------------------------


def test_run_command_stdout_failure_missing_and_timeout() -> None:
    py = sys.executable
    assert run_command([py, "-c", "print('ok')"]) == "ok\n"
    assert run_command([py, "-c", "import sys; sys.exit(3)"]) is None
    assert run_command(["/nonexistent/squeue-for-test"]) is None
    assert run_command([py, "-c", "import time; time.sleep(5)"], timeout_s=0.2) is None


def test_run_command_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise subprocess.SubprocessError("weird")

    monkeypatch.setattr(slurm.subprocess, "run", boom)
    assert run_command(["squeue"]) is None
