"""The entry-side load estimate: gossiped load plus our own requests since that record."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from opentela.routing.estimate import LoadEstimator, Ticket


def test_unknown_peer_is_zero() -> None:
    est = LoadEstimator()
    assert est.estimate("nobody") == 0.0
    assert est.estimates(["a", "b"]) == {"a": 0.0, "b": 0.0}


def test_published_load_alone() -> None:
    est = LoadEstimator()
    assert est.on_record("a", 1, 5)
    assert est.estimate("a") == 5.0


def test_requests_since_the_record_are_added() -> None:
    est = LoadEstimator()
    est.on_record("a", 1, 5)
    t1, _t2 = est.on_start("a"), est.on_start("a")
    assert est.estimate("a") == 7.0
    est.on_finish(t1)
    assert est.estimate("a") == 6.0
    assert est.estimate("b") == 0.0  # other peers untouched


def test_new_record_absorbs_earlier_requests() -> None:
    """Requests started before version V arrived are assumed counted in V's load."""
    est = LoadEstimator()
    est.on_record("a", 1, 0)
    old = [est.on_start("a") for _ in range(3)]
    assert est.estimate("a") == 3.0
    est.on_record("a", 2, 3)  # the worker saw our three
    assert est.estimate("a") == 3.0
    new = est.on_start("a")
    assert est.estimate("a") == 4.0
    # An old request finishing takes one off the published load ...
    est.on_finish(old[0])
    assert est.estimate("a") == 3.0
    # ... a new one takes itself off.
    est.on_finish(new)
    assert est.estimate("a") == 2.0
    est.on_finish(old[1])
    est.on_finish(old[2])
    assert est.estimate("a") == 0.0


def test_old_finishes_floor_at_zero() -> None:
    """The worker's sample may already have dropped requests we see finish later."""
    est = LoadEstimator()
    old = [est.on_start("a") for _ in range(4)]
    est.on_record("a", 1, 1)  # sampled after three of ours were done at the worker
    for t in old:
        est.on_finish(t)
    assert est.estimate("a") == 0.0
    t = est.on_start("a")
    assert est.estimate("a") == 1.0
    est.on_finish(t)
    assert est.estimate("a") == 0.0


def test_open_old_requests_are_a_floor() -> None:
    """A record that missed our requests (sampled before they arrived) cannot hide them."""
    est = LoadEstimator()
    est.on_record("a", 1, 0)
    tickets = [est.on_start("a") for _ in range(3)]
    est.on_record("a", 2, 0)
    assert est.estimate("a") == 3.0
    est.on_finish(tickets[0])
    assert est.estimate("a") == 2.0


def test_stale_or_repeated_records_change_nothing() -> None:
    est = LoadEstimator()
    est.on_record("a", 5, 2)
    t = est.on_start("a")
    assert not est.on_record("a", 5, 2)  # the same record, relayed again
    assert not est.on_record("a", 4, 0)  # an older one
    assert est.estimate("a") == 3.0
    est.on_finish(t)
    assert est.estimate("a") == 2.0


def test_finish_is_idempotent_and_ignores_strangers() -> None:
    est = LoadEstimator()
    est.on_record("a", 1, 1)
    t = est.on_start("a")
    est.on_finish(t)
    est.on_finish(t)
    assert est.estimate("a") == 1.0
    other = LoadEstimator().on_start("a")  # a ticket from another estimator
    est.on_finish(other)
    assert est.estimate("a") == 1.0


def test_in_flight_forget_and_retain() -> None:
    est = LoadEstimator()
    est.on_record("a", 1, 4)
    est.on_record("b", 1, 4)
    t = est.on_start("a")
    est.on_record("a", 2, 4)
    est.on_start("a")
    assert est.in_flight("a") == 2
    est.retain(["x"])  # "a" has open requests and is kept; "b" is dropped
    assert est.estimate("a") == 5.0
    assert est.estimate("b") == 0.0
    est.forget("a")
    assert est.estimate("a") == 0.0
    est.on_finish(t)  # a ticket of a forgotten peer is a no-op
    est.on_record("a", 3, 1)
    assert est.estimate("a") == 1.0


def test_negative_published_load_is_clamped() -> None:
    est = LoadEstimator()
    est.on_record("a", 1, -3)
    assert est.estimate("a") == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("srf"), max_size=60), st.integers(0, 2**32))
def test_exact_when_records_carry_the_true_load(ops: list[str], seed: int) -> None:
    """With this entry as the only client and every record sampled at receipt, the estimate
    is exactly the number of open requests, whatever the interleaving."""
    est = LoadEstimator()
    rng = random.Random(seed)
    open_: list[Ticket] = []
    for version, op in enumerate(ops):
        if op == "s":
            open_.append(est.on_start("a"))
        elif op == "f" and open_:
            est.on_finish(open_.pop(rng.randrange(len(open_))))
        elif op == "r":
            est.on_record("a", version, len(open_))
        assert est.estimate("a") == len(open_)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("srf"), st.integers(0, 10)), max_size=60),
    st.integers(0, 2**32),
)
def test_never_below_our_open_requests(ops: list[tuple[str, int]], seed: int) -> None:
    """Whatever the records say (stale, wrong), the estimate is >= our own open requests."""
    est = LoadEstimator()
    rng = random.Random(seed)
    open_: list[Ticket] = []
    for version, (op, load) in enumerate(ops):
        if op == "s":
            open_.append(est.on_start("a"))
        elif op == "f" and open_:
            est.on_finish(open_.pop(rng.randrange(len(open_))))
        elif op == "r":
            est.on_record("a", version, load)
        assert est.estimate("a") >= len(open_)
