"""tests/conftest.py's CI rule: with CI=true a skipped real-component test (tests/slurm,
tests/netns, tests/conformance, tests/deploy, or marked ``real_component``) fails, unless it is
in the explicit allow-list; elsewhere, and outside CI, a skip stays a skip.

Each case runs pytest in a subprocess on a tiny tree that uses a copy of the real conftest, so
what is tested is the hook the suite runs with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPPING = """
import pytest

@pytest.mark.skipif(True, reason="needs root")
def test_marked():
    pass

def test_inline():
    pytest.skip("no slurm here")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

def test_runs():
    pass
"""


def _tree(tmp: Path, allow: dict[str, str] | None = None) -> Path:
    (tmp / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    conftest = CONFTEST.read_text()
    if allow:
        conftest += f"\nCI_ALLOWED_SKIPS.update({allow!r})\n"
    (tmp / "conftest.py").write_text(conftest)
    for d in ("slurm", "netns", "unit"):
        (tmp / d).mkdir()
        (tmp / d / f"test_{d}.py").write_text(SKIPPING)
    (tmp / "unit" / "test_marked.py").write_text(
        "import pytest\n\n@pytest.mark.real_component\ndef test_gpu():\n    pytest.skip('no GPU')\n"
    )
    (tmp / "deploy").mkdir()
    (tmp / "deploy" / "test_mod.py").write_text(
        "import pytest\npytest.importorskip('no_such_module_for_sure')\n\n"
        "def test_never():\n    pass\n"
    )
    (tmp / "deploy" / "test_deploy_ok.py").write_text("def test_ok():\n    pass\n")
    return tmp


def _outcomes(tmp: Path, ci: str | None, *paths: str) -> tuple[int, dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-rA", "--rootdir", str(tmp), *paths],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    found = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL)\b", out, re.M)
    }
    return proc.returncode, found, out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path)


def test_outside_ci_skips_stay_skips(tree: Path) -> None:
    rc, found, out = _outcomes(tree, None, "slurm", "netns", "unit")
    assert rc == 0, out
    assert "ERROR" not in found.values() and "FAILED" not in found.values(), out
    assert found["slurm/test_slurm.py::test_runs"] == "PASSED"


def test_ci_false_is_not_ci(tree: Path) -> None:
    rc, _, out = _outcomes(tree, "false", "slurm")
    assert rc == 0, out


def test_in_ci_real_component_skips_fail_with_the_reason(tree: Path) -> None:
    rc, found, out = _outcomes(tree, "true", "slurm", "netns", "unit")
    assert rc == 1, out
    for d in ("slurm", "netns"):
        # A skipif is decided in setup (an error), pytest.skip in the test body (a failure).
        assert found[f"{d}/test_{d}.py::test_marked"] == "ERROR", out
        assert found[f"{d}/test_{d}.py::test_inline"] == "FAILED", out
        assert found[f"{d}/test_{d}.py::test_runs"] == "PASSED", out
        assert f"{d}/test_{d}.py::test_xfail" not in found or "XFAIL" in out
    assert found["unit/test_marked.py::test_gpu"] == "FAILED", out  # the marker counts too
    # Not a real-component directory and not marked: still a plain skip.
    assert "unit/test_unit.py::test_marked" not in found or found[
        "unit/test_unit.py::test_marked"
    ] == ("SKIPPED")
    assert (
        "CI=true: real-component test slurm/test_slurm.py::test_marked was skipped (needs root)"
        in (out)
    )
    assert "(no slurm here)" in out


def test_in_ci_a_module_skipped_at_import_fails(tree: Path) -> None:
    rc, _, out = _outcomes(tree, "true", "deploy")
    assert rc != 0, out
    assert "real-component test deploy/test_mod.py was skipped" in out, out
    rc, _, out = _outcomes(tree, None, "deploy")
    assert rc == 0, out


def test_allow_list_keeps_a_skip_legitimate(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "slurm/test_slurm.py::test_marked": "documented: this runner has no cgroups",
            "netns/test_netns.py": "documented: the whole file",
        },
    )
    rc, found, out = _outcomes(tree, "true", "slurm", "netns")
    assert rc == 1, out  # slurm::test_inline is not allowed
    assert found["slurm/test_slurm.py::test_marked"] == "SKIPPED", out
    assert found["slurm/test_slurm.py::test_inline"] == "FAILED", out
    assert found["netns/test_netns.py::test_marked"] == "SKIPPED", out
    assert found["netns/test_netns.py::test_inline"] == "SKIPPED", out
