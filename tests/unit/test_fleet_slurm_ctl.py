"""The fleet's Slurm commands, built and parsed without a cluster."""

from __future__ import annotations

from pathlib import Path

from opentela.fleet.slurm_ctl import job_env, job_name, parse_states, sbatch_argv
from opentela.fleet.spec import ModelSpec


def spec(**kw: object) -> ModelSpec:
    return ModelSpec(
        id="swiss-ai/Apertus 8B", sbatch=Path("/jobs/w.sbatch"), env={"MODEL": "x"}, **kw
    )  # type: ignore[arg-type]


def test_sbatch_carries_only_the_options_the_file_sets() -> None:
    assert sbatch_argv(spec()) == [
        "sbatch", "--parsable", "--job-name=otela-fleet-swiss-ai_Apertus_8B", "/jobs/w.sbatch",
    ]  # fmt: skip
    argv = sbatch_argv(spec(account="a-llm", partition="normal", qos="high", reservation="r1"))
    assert argv[3:-1] == ["--account=a-llm", "--partition=normal", "--reservation=r1", "--qos=high"]
    assert job_name("a" * 300).startswith("otela-fleet-") and len(job_name("a" * 300)) <= 112


def test_the_job_gets_the_model_env_and_the_pool_but_none_of_the_heads_settings() -> None:
    base = {"PATH": "/bin", "OTELA_HOME": "/head", "OTELA_AUTH": "required", "MODEL": "old"}
    env = job_env(spec(), ["/ip4/10.0.0.1/tcp/43905/p2p/12D3Koo"], base)
    assert env["PATH"] == "/bin" and env["MODEL"] == "x"
    assert env["OTELA_BOOTSTRAP"] == "/ip4/10.0.0.1/tcp/43905/p2p/12D3Koo"
    assert "OTELA_HOME" not in env and "OTELA_AUTH" not in env


def test_squeue_states_parse() -> None:
    text = "101|RUNNING\n102|PENDING\n\n103|cancelled\nbroken line\n"
    assert parse_states(text) == {"101": "RUNNING", "102": "PENDING", "103": "CANCELLED"}
