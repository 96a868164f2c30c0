"""The fleet file loads as written, and every mistake names its line and what to write instead."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from opentela.fleet.spec import FleetError, FleetSpec, ModelSpec, load, parse

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "slurm" / "worker-vllm.sbatch"

USER_FILE = """\
# fleet.yaml
models:
  - id: swiss-ai/Apertus-8B
    sbatch: examples/slurm/worker-vllm.sbatch        # the job script that starts a worker
    env: {MODEL: swiss-ai/Apertus-8B}
    min_replicas: 0          # scale to zero when idle
    max_replicas: 4
    idle_after: 30m          # stop a replica that served nothing this long
    target_queue: 4          # waiting requests per replica that trigger one more
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job script next to the fleet file, so relative paths need no cwd."""
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\necho hi\n")
    return script


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def model(extra: str = "") -> str:
    """A valid one-model file (id on line 2, sbatch on 3) plus indented model keys."""
    return "models:\n  - id: m\n    sbatch: job.sbatch\n" + textwrap.indent(extra, "    ")


def failure(path: Path) -> str:
    with pytest.raises(FleetError) as info:
        load(path)
    return str(info.value)


# --- files that load ----------------------------------------------------------------------


def test_user_file_loads_as_written(tmp_path: Path) -> None:
    (tmp_path / "examples" / "slurm").mkdir(parents=True)
    shutil.copy(WORKER, tmp_path / "examples" / "slurm" / "worker-vllm.sbatch")
    path = tmp_path / "fleet.yaml"
    path.write_text(USER_FILE)

    fleet = load(path)

    assert fleet.path == path
    (m,) = fleet.models
    assert m == ModelSpec(
        id="swiss-ai/Apertus-8B",
        sbatch=(tmp_path / "examples" / "slurm" / "worker-vllm.sbatch").resolve(),
        env={"MODEL": "swiss-ai/Apertus-8B"},
        min_replicas=0,
        max_replicas=4,
        idle_after_s=1800.0,
        target_queue=4,
        line=3,
    )
    assert m.sbatch.is_absolute()
    assert fleet.model("swiss-ai/Apertus-8B") is m
    assert fleet.model("other") is None
    assert (fleet.max_jobs, fleet.max_gpu_hours_per_day, fleet.interval_s) == (16, None, 5.0)


def test_user_file_sbatch_found_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file lives in conf/, the path is written from the repo root: the cwd fallback.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "fleet.yaml").write_text(USER_FILE)
    monkeypatch.chdir(REPO)

    fleet = load(tmp_path / "conf" / "fleet.yaml")

    assert fleet.models[0].sbatch == WORKER.resolve()


def test_sbatch_next_to_the_file_wins_over_the_current_directory(
    tmp_path: Path, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "job.sbatch").write_text("#!/bin/bash\n")
    monkeypatch.chdir(elsewhere)

    fleet = load(write(tmp_path, model()))

    assert fleet.models[0].sbatch == job.resolve()


def test_base_dir_overrides_the_file_directory(tmp_path: Path, job: Path) -> None:
    fleet = parse(model(), tmp_path / "sub" / "fleet.yaml", base_dir=tmp_path)
    assert fleet.models[0].sbatch == job.resolve()


def test_absolute_sbatch_path(tmp_path: Path, job: Path) -> None:
    text = f"models:\n  - id: m\n    sbatch: {job}\n"
    assert parse(text, Path("/nowhere/fleet.yaml")).models[0].sbatch == job.resolve()


def test_example_fleet_loads_from_the_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)

    fleet = load("examples/fleet.yaml")

    first, second = fleet.models
    assert first.id == "swiss-ai/Apertus-8B" and first.sbatch == WORKER.resolve()
    assert (first.min_replicas, first.max_replicas, first.idle_after_s) == (0, 4, 1800.0)
    # Written relative to the file's own directory (examples/).
    assert second.sbatch == WORKER.resolve()
    assert second.env["MODEL"] == second.id
    assert (second.account, second.partition, second.qos, second.reservation) == (
        "my-project",
        "gpu",
        "normal",
        "",
    )
    assert (second.gpus, second.handover_before_s, second.min_replicas) == (1, 900.0, 1)
    assert (fleet.max_jobs, fleet.max_gpu_hours_per_day, fleet.interval_s) == (8, 96.0, 5.0)


def test_defaults(tmp_path: Path, job: Path) -> None:
    fleet = load(write(tmp_path, model()))

    assert fleet == FleetSpec(
        path=tmp_path / "fleet.yaml",
        models=(ModelSpec(id="m", sbatch=job.resolve(), env={}, line=2),),
    )
    m = fleet.models[0]
    assert (m.min_replicas, m.max_replicas, m.target_queue, m.gpus) == (0, 1, 4, 1)
    assert (m.idle_after_s, m.handover_before_s) == (1800.0, 600.0)
    assert (m.account, m.partition, m.reservation, m.qos) == ("", "", "", "")
    assert (fleet.max_jobs, fleet.max_gpu_hours_per_day, fleet.interval_s) == (16, None, 5.0)


def test_every_key(tmp_path: Path, job: Path) -> None:
    text = model(
        "env:\n  PORT: 8080\n  DEBUG: yes\n  RATIO: 1.5\n  NAME: 'x y'\n"
        "min_replicas: 1\nmax_replicas: 1_0\nidle_after: 1h\ntarget_queue: 2\n"
        "handover_before: 1:30\ngpus: 0\naccount: acct\npartition: p\n"
        "reservation: r\nqos: q\n"
    )
    text += "limits:\n  max_jobs: 3\n  max_gpu_hours_per_day: 12.5\ninterval: 90s\n"

    fleet = load(write(tmp_path, text))

    m = fleet.models[0]
    # Scalars are kept as written, as a shell export would pass them.
    assert dict(m.env) == {"PORT": "8080", "DEBUG": "yes", "RATIO": "1.5", "NAME": "x y"}
    assert (m.min_replicas, m.max_replicas, m.target_queue, m.gpus) == (1, 10, 2, 0)
    assert (m.idle_after_s, m.handover_before_s) == (3600.0, 90.0)
    assert (m.account, m.partition, m.reservation, m.qos) == ("acct", "p", "r", "q")
    assert (fleet.max_jobs, fleet.max_gpu_hours_per_day, fleet.interval_s) == (3, 12.5, 90.0)


@pytest.mark.parametrize(
    ("written", "seconds"), [("30m", 1800), ("300", 300), ("'01:02:03'", 3723)]
)
def test_duration_forms(tmp_path: Path, job: Path, written: str, seconds: float) -> None:
    fleet = load(write(tmp_path, model(f"idle_after: {written}\n")))
    assert fleet.models[0].idle_after_s == seconds


def test_empty_sections_mean_defaults(tmp_path: Path, job: Path) -> None:
    text = model("env:\n") + "limits:\n  max_gpu_hours_per_day: ~\n"
    fleet = load(write(tmp_path, text))
    assert dict(fleet.models[0].env) == {} and fleet.max_gpu_hours_per_day is None


def test_specs_are_frozen_and_hashable(tmp_path: Path, job: Path) -> None:
    m = load(write(tmp_path, model("env: {A: b}\n"))).models[0]
    assert {m: 1}[m] == 1
    with pytest.raises(TypeError):
        m.env["A"] = "c"  # type: ignore[index]


# --- mistakes: line and message --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        pytest.param(
            model("max_replica: 3\n"),
            4,
            "unknown key 'max_replica' in a model; did you mean 'max_replicas'?",
            id="unknown-key-suggests",
        ),
        pytest.param(
            model("idle_after_s: 60\n"), 4, "did you mean 'idle_after'?", id="field-name-suggests"
        ),
        pytest.param(
            model("colour: red\n"), 4, "valid keys: id, sbatch, env", id="unknown-key-far"
        ),
        pytest.param(
            model("max_jobs: 3\n"), 4, "'max_jobs' belongs under 'limits:'", id="limit-in-model"
        ),
        pytest.param(
            model() + "max_replicas: 3\n",
            4,
            "'max_replicas' belongs to a model, under 'models:'",
            id="model-key-at-top",
        ),
        pytest.param(
            model() + "limits:\n  max_job: 3\n",
            5,
            "unknown key 'max_job' in limits; did you mean 'max_jobs'?",
            id="unknown-limit",
        ),
        pytest.param("models:\n  - sbatch: job.sbatch\n", 2, "model without 'id'", id="missing-id"),
        pytest.param(
            "models:\n  - id: m\n", 2, "model 'm' without 'sbatch'", id="missing-sbatch-key"
        ),
        pytest.param(
            "models:\n  - id: ''\n    sbatch: job.sbatch\n",
            2,
            "id: must not be empty",
            id="empty-id",
        ),
        pytest.param(
            "models:\n  - id: 8\n    sbatch: job.sbatch\n",
            2,
            'id: expected a string, got an integer (8); quote it to make it a string: "8"',
            id="id-not-string",
        ),
        pytest.param(
            "models:\n  - id: m\n    sbatch: missing.sbatch\n",
            3,
            "sbatch: no such file 'missing.sbatch' (looked for ",
            id="missing-sbatch-file",
        ),
        pytest.param(
            "models:\n  - id: m\n    sbatch: .\n", 3, "is not a file", id="sbatch-is-a-directory"
        ),
        pytest.param(
            model() + "  - id: n\n    sbatch: job.sbatch\n  - id: m\n    sbatch: job.sbatch\n",
            6,
            "model id 'm' given twice (lines 2 and 6)",
            id="duplicate-id",
        ),
        pytest.param(
            model("min_replicas: 5\nmax_replicas: 2\n"),
            4,
            "min_replicas (5, line 4) is above max_replicas (2, line 5)",
            id="min-above-max",
        ),
        pytest.param(
            model("min_replicas: 2\n"),
            4,
            "min_replicas (2, line 4) is above max_replicas (1, the default)",
            id="min-above-default-max",
        ),
        pytest.param(
            model("min_replicas: 2\nmax_replicas: 3\n")
            + "  - id: n\n    sbatch: job.sbatch\n    min_replicas: 1\n"
            + "limits:\n  max_jobs: 2\n",
            10,
            "the models' min_replicas add up to 3 (m 2, n 1), above limits.max_jobs (2, "
            "line 10): raise max_jobs or lower a min_replicas",
            id="min-replicas-above-job-cap",
        ),
        pytest.param(
            model("min_replicas: 17\nmax_replicas: 20\n"),
            1,
            "above limits.max_jobs (16, the default)",
            id="min-replicas-above-default-job-cap",
        ),
        pytest.param(
            model("idle_after: 30 minutes\n"),
            4,
            "idle_after: invalid duration '30 minutes': use seconds",
            id="bad-duration",
        ),
        pytest.param(
            model("idle_after: 0\n"), 4, "idle_after: must be at least 1s", id="zero-idle"
        ),
        pytest.param(
            model("handover_before: yes\n"),
            4,
            "handover_before: expected a duration (30m, 1h, 90s, 300), got a boolean (yes)",
            id="bool-duration",
        ),
        pytest.param(
            model("max_replicas: four\n"),
            4,
            "max_replicas: expected an integer, got a string (four)",
            id="string-for-int",
        ),
        pytest.param(
            model("min_replicas: yes\n"),
            4,
            "min_replicas: expected an integer, got a boolean (yes)",
            id="yes-for-int",
        ),
        pytest.param(
            model("target_queue: 4.0\n"),
            4,
            "target_queue: expected an integer, got a number (4.0)",
            id="float-for-int",
        ),
        pytest.param(
            model("max_replicas: 0\n"), 4, "max_replicas: must be at least 1, got 0", id="max-0"
        ),
        pytest.param(
            model("gpus: -1\n"), 4, "gpus: must be at least 0, got -1", id="gpus-negative"
        ),
        pytest.param(
            model("target_queue: 0\n"), 4, "target_queue: must be at least 1", id="queue-0"
        ),
        pytest.param(
            model("account: [a]\n"), 4, "account: expected a string, got a list", id="list-for-str"
        ),
        pytest.param(
            model("env: {MODEL: x, 1X: y}\n"),
            4,
            "env: '1X' is not a variable name",
            id="bad-env-key",
        ),
        pytest.param(
            model("env:\n  MODEL: x\n  MY-VAR: y\n"),
            6,
            "env: 'MY-VAR' is not a variable name",
            id="bad-env-key-block",
        ),
        pytest.param(model("env:\n  A: [1]\n"), 5, "env.A: expected a string", id="env-value-list"),
        pytest.param(model("env: [A]\n"), 4, "env: expected a mapping, got a list", id="env-list"),
        pytest.param(
            model("gpus: 1\ngpus: 2\n"), 5, "key 'gpus' given twice (lines 4 and 5)", id="dup-key"
        ),
        pytest.param(
            model() + "limits:\n  max_jobs: 0\n", 5, "max_jobs: must be at least 1", id="jobs-0"
        ),
        pytest.param(
            model() + "limits:\n  max_gpu_hours_per_day: 0\n",
            5,
            "max_gpu_hours_per_day: must be above 0",
            id="gpu-hours-0",
        ),
        pytest.param(
            model() + "limits:\n  max_gpu_hours_per_day: .inf\n",
            5,
            "must be a finite number",
            id="gpu-hours-inf",
        ),
        pytest.param(model() + "limits: 3\n", 4, "limits: expected a mapping", id="limits-scalar"),
        pytest.param(
            model() + "interval: 0.5\n", 4, "interval: must be at least 1s", id="interval"
        ),
        pytest.param("models: []\n", 1, "models: the list is empty", id="empty-models"),
        pytest.param("# nothing\nmodels:\n", 2, "models: the list is empty", id="null-models"),
        pytest.param("models: {id: m}\n", 1, "models: expected a list of models", id="models-map"),
        pytest.param(
            "models:\n  - m\n", 2, "a model: expected a mapping, got a string (m)", id="item"
        ),
        pytest.param("limits: {max_jobs: 2}\n", 1, "no 'models:' list", id="no-models"),
        pytest.param("", 1, "the file is empty", id="empty-file"),
        pytest.param("- id: m\n", 1, "expected a mapping with a 'models:' list", id="top-list"),
        pytest.param(
            "models:\n  - id: m\n    sbatch: [job.sbatch\n", 4, "invalid YAML: ", id="bad-yaml"
        ),
        pytest.param("models:\n  - id: m\n\tsbatch: job.sbatch\n", 3, "invalid YAML: ", id="tab"),
    ],
)
def test_mistake(tmp_path: Path, job: Path, text: str, line: int, expected: str) -> None:
    path = write(tmp_path, text)
    message = failure(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message


def test_error_carries_its_parts(tmp_path: Path, job: Path) -> None:
    path = write(tmp_path, model("max_replica: 3\n"))
    with pytest.raises(ValueError) as info:
        load(path)
    err = info.value
    assert isinstance(err, FleetError)
    assert (err.path, err.line) == (path, 4)
    assert err.message.startswith("unknown key 'max_replica'")


def test_missing_sbatch_names_both_places_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    message = failure(write(tmp_path, model()))
    assert str(tmp_path / "job.sbatch") in message and str(elsewhere / "job.sbatch") in message


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert failure(path).startswith(f"{path}:1: cannot read the file")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(b"models: \xff\n")
    assert failure(path).startswith(f"{path}:1: not UTF-8 text")
