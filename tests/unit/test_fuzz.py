"""A bounded run of ``scripts/fuzz.py`` (issue 9, item 7): every target, a few hundred cases
each, no failure. The full run (``scripts/fuzz.py``, 10^5 cases) is a benchmark-style script;
this keeps each contract in the suite. Plus the regressions the fuzzer found."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import msgpack
import pytest

from opentela.overlay import framing

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "fuzz.py"
_spec = importlib.util.spec_from_file_location("opentela_fuzz", _PATH)
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["opentela_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)

CASES = {
    "frames": 300,
    "record_decode": 150,
    "verify": 200,
    "verify_wire": 200,
    "grant": 200,
    "swim_decode": 200,
    "swim_handler": 100,
    "table": 150,
    "gossip": 150,
    "load": 150,
    "admit": 100,
    "forward": 100,
    "http": 100,
}


def _report(results: list) -> str:
    return "\n".join(f"{r.target}: {ex}" for r in results for ex in r.examples)


def test_pure_and_protocol_targets_hold_their_contracts() -> None:
    plan = {k: v for k, v in CASES.items() if k != "http"}
    results = fuzz.run(plan, seed=1, slow=False)
    assert sum(r.failures for r in results) == 0, _report(results)
    for r in results:
        assert r.cases >= plan[r.target] // 2, r.target  # hypothesis really generated them
        assert r.outcomes, r.target


def test_the_http_edge_answers_everything_below_500_and_cuts_slow_clients_off() -> None:
    results = fuzz.run({"http": CASES["http"]}, seed=1, slow=True)
    assert sum(r.failures for r in results) == 0, _report(results)
    slow = next(r for r in results if r.target == "http_slow_clients")
    assert slow.outcomes == {"slow headers:408": 1, "slow body:408": 1, "silent:closed": 1}


def test_split_is_over_the_requested_total() -> None:
    plan = fuzz.split(100_000)
    assert sum(plan.values()) >= 99_000 and set(plan) == set(fuzz.WEIGHTS)


@pytest.mark.parametrize("kind", [{"a": 1}, [1], True, 1.0, "1", None])
def test_a_frame_whose_kind_is_not_an_int_is_a_frame_error(kind: object) -> None:
    """Found by the fuzzer: ``[{...}, payload]`` raised TypeError (unhashable) out of the
    decoder, past every handler's ``FrameError`` check."""
    body = msgpack.packb([kind, None], use_bin_type=True)
    with pytest.raises(framing.FrameError):
        framing.Decoder().feed(len(body).to_bytes(4, "big") + body)
