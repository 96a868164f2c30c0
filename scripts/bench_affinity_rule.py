#!/usr/bin/env python3
"""Affinity's bounded-load rule, this tree's against the previous one, on a virtual clock.

The closed loop of ``tests/unit/test_routing_rate.py`` (the real ``Balancer``, load estimator
and learned rates; no network): two replicas, the slow one 4x slower and owning the prompt's
key, ``clients`` closed-loop clients, 2,000 requests. Reported: the slow replica's share of
the requests (issue 13's target: at most 0.6x random's 0.5), per rule, clients and relay time.

* ``this``: ``estimate / w <= c * (mean + 1)`` (``routing/balance.py``, ``queue_ahead``): the
  request being placed is not weighted, so an idle owner always keeps its keys;
* ``previous``: ``(estimate + 1) / w <= c * (mean + 1) + 1``.

    .venv/bin/python scripts/bench_affinity_rule.py [--seeds 5] [--out .bench/affinity-rule.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "unit"), str(REPO / "tests")]

from test_routing import PIDS  # noqa: E402
from test_routing_rate import closed_loop, two_replicas  # noqa: E402

import opentela.routing.balance as balance  # noqa: E402
from opentela.gateway.balancer import Balancer  # noqa: E402

REQUESTS = 2000


def previous_rule(estimate: float, weight: float) -> float:
    """The previous accept test rewritten as ``x <= bound``: ``(e + 1) / w - 1``."""
    return (estimate + 1.0) / (weight if weight > 0 else 1.0) - 1.0


def slow_share(clients: int, hops_s: float, seed: int) -> float:
    slow, fast = PIDS[0], PIDS[1]
    served = closed_loop(
        Balancer("affinity", random.Random(seed)),
        two_replicas(),
        {slow: 0.2, fast: 0.05},
        clients=clients,
        n=REQUESTS,
        hops_s=hops_s,
    )
    return served[slow] / sum(served.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / ".bench" / "affinity-rule.json"))
    args = ap.parse_args()
    this = balance.queue_ahead
    rows = []
    for clients in (2, 4, 8, 16):
        for hops_s in (0.0, 0.05):
            row = {"clients": clients, "hops_s": hops_s}
            for name, rule in (("previous", previous_rule), ("this", this)):
                balance.queue_ahead = rule
                shares = [slow_share(clients, hops_s, s) for s in range(args.seeds)]
                row[name] = [round(min(shares), 3), round(max(shares), 3)]
            balance.queue_ahead = this
            rows.append(row)
    print(f"{'clients':>7} {'hops':>6}  {'previous rule':>14}  {'this rule':>10}   (slow share)")
    for r in rows:
        prev, cur = (f"{a:.2f}-{b:.2f}" for a, b in (r["previous"], r["this"]))
        print(f"{r['clients']:>7} {r['hops_s'] * 1000:>4.0f}ms  {prev:>14}  {cur:>10}")
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"requests": REQUESTS, "seeds": args.seeds, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
