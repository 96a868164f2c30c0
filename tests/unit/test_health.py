"""Backend health state machine and hop-by-hop header filtering."""

from __future__ import annotations

import pytest

from opentela.httpheaders import DROP_TO_BACKEND, HOP_BY_HOP, end_to_end
from opentela.worker.health import Health, force_down, observe

M = ("m1", "m2")

# -- health -----------------------------------------------------------------------------------


def test_initial_state_is_down() -> None:
    assert Health() == Health(up=False, failures=0, models=())


def test_first_success_brings_up_and_reports_change() -> None:
    state, changed = observe(Health(), M)
    assert state == Health(up=True, failures=0, models=M)
    assert changed


def test_success_with_same_models_is_not_a_change() -> None:
    state, _ = observe(Health(), M)
    state2, changed = observe(state, M)
    assert state2 == state and not changed


def test_model_list_change_is_a_change() -> None:
    state, _ = observe(Health(), M)
    state, changed = observe(state, ("m3",))
    assert changed and state.models == ("m3",) and state.up


def test_up_with_no_models_is_still_up() -> None:
    state, changed = observe(Health(), ())
    assert state.up and changed and state.models == ()


def test_single_failure_does_not_withdraw() -> None:
    state, _ = observe(Health(), M)
    state, changed = observe(state, None)
    assert state == Health(up=True, failures=1, models=M)
    assert not changed


def test_threshold_failures_withdraw() -> None:
    state, _ = observe(Health(), M)
    state, _ = observe(state, None)
    state, changed = observe(state, None)
    assert changed
    assert state == Health(up=False, failures=2, models=())
    # Further failures while down are not changes.
    state, changed = observe(state, None)
    assert not changed and not state.up and state.failures == 3


@pytest.mark.parametrize("threshold", [1, 3, 5])
def test_custom_threshold(threshold: int) -> None:
    state, _ = observe(Health(), M)
    for i in range(1, threshold):
        state, changed = observe(state, None, threshold=threshold)
        assert state.up and not changed and state.failures == i
    state, changed = observe(state, None, threshold=threshold)
    assert changed and not state.up


def test_failures_must_be_consecutive() -> None:
    state, _ = observe(Health(), M)
    for _ in range(5):
        state, changed = observe(state, None)
        assert not changed
        state, changed = observe(state, M)
        assert not changed and state.failures == 0
    assert state.up


def test_one_success_restores_with_fresh_models() -> None:
    state, _ = observe(Health(), M)
    state, _ = observe(state, None)
    state, _ = observe(state, None)
    assert not state.up
    state, changed = observe(state, ("new",))
    assert changed
    assert state == Health(up=True, failures=0, models=("new",))


def test_restore_with_same_models_still_reports_change() -> None:
    # The upstream flaw: a recovered backend must be re-advertised even with an unchanged list.
    state, _ = observe(Health(), M)
    state, _ = force_down(state)
    state, changed = observe(state, M)
    assert changed and state.up and state.models == M


def test_failures_while_never_up_never_change() -> None:
    state = Health()
    for i in range(1, 5):
        state, changed = observe(state, None)
        assert not changed and not state.up and state.failures == i


def test_force_down() -> None:
    up, _ = observe(Health(), M)
    up, _ = observe(up, None)
    down, changed = force_down(up)
    assert changed
    assert down == Health(up=False, failures=1, models=())
    again, changed = force_down(down)
    assert not changed and again == down
    assert force_down(Health()) == (Health(), False)


def test_states_are_immutable() -> None:
    state = Health()
    observe(state, M)
    observe(state, None)
    force_down(state)
    assert state == Health()


# -- end_to_end -------------------------------------------------------------------------------


def test_hop_by_hop_stripped_case_insensitively() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive"),
        ("KEEP-ALIVE", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "example.org"),
        ("content-length", "12"),
        ("Upgrade", "h2c"),
        ("TE", "trailers"),
        ("Trailer", "X-Foo"),
        ("Proxy-Authorization", "Basic x"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Connection", "close"),
        ("Authorization", "Bearer k"),
    ]
    assert end_to_end(headers) == [
        ["Content-Type", "application/json"],
        ["Authorization", "Bearer k"],
    ]


def test_every_hop_by_hop_name_is_stripped() -> None:
    for name in HOP_BY_HOP:
        for variant in (name, name.upper(), name.title()):
            assert end_to_end([(variant, "v"), ("X-Keep", "1")]) == [["X-Keep", "1"]]


def test_names_listed_in_connection_are_stripped() -> None:
    headers = [
        ("Connection", "close, X-Secret ,x-other"),
        ("x-secret", "1"),
        ("X-OTHER", "2"),
        ("X-Kept", "3"),
    ]
    assert end_to_end(headers) == [["X-Kept", "3"]]


def test_multiple_connection_headers_all_honoured() -> None:
    headers = [
        ("connection", "X-A"),
        ("CONNECTION", "X-B"),
        ("x-a", "1"),
        ("x-b", "2"),
        ("x-c", "3"),
    ]
    assert end_to_end(headers) == [["x-c", "3"]]


def test_drop_set_honoured_case_insensitively() -> None:
    headers = [
        ("X-Request-ID", "abc"),
        ("x-otela-fallback", "2"),
        ("X-OTELA-FALLBACK", "1"),
        ("Accept", "*/*"),
    ]
    assert end_to_end(headers, DROP_TO_BACKEND) == [["Accept", "*/*"]]
    # Without the drop set the fallback headers pass; a non-UUID request id never does.
    assert len(end_to_end(headers)) == 3


def test_request_id_passes_only_when_it_is_a_uuid() -> None:
    rid = "0b6f1c9e-6f3a-4d0e-9a55-2f1d5c8b7a10"
    assert end_to_end([("X-Request-ID", rid)]) == [["X-Request-ID", rid]]
    assert end_to_end([("x-request-id", "req-42")]) == []


def test_order_duplicates_and_values_preserved() -> None:
    headers = [("Set-Cookie", "a=1"), ("X-A", "v"), ("set-cookie", "b=2")]
    assert end_to_end(headers) == [["Set-Cookie", "a=1"], ["X-A", "v"], ["set-cookie", "b=2"]]


def test_accepts_lists_and_generators() -> None:
    wire = [["Content-Type", "text/plain"], ["Connection", "close"]]
    assert end_to_end(wire) == [["Content-Type", "text/plain"]]  # type: ignore[arg-type]
    assert end_to_end(iter([("A", "1")])) == [["A", "1"]]
    assert end_to_end([]) == []
