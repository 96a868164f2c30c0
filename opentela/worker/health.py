"""Backend health as a pure state machine: consecutive failures withdraw, one success restores.

Withdrawal needs ``threshold`` failures in a row so a single slow probe does not flap the
service; restoration is immediate and always re-reads the model list (the upstream re-advertised
a recovered backend without its models and never routed to it again).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Health:
    up: bool = False
    failures: int = 0
    models: tuple[str, ...] = ()


def observe(
    state: Health, models: tuple[str, ...] | None, threshold: int = 2
) -> tuple[Health, bool]:
    """Feed one probe result (``None`` = failed). Returns the new state and whether the
    advertised service changed."""
    if models is not None:
        new = Health(up=True, failures=0, models=models)
        return new, (not state.up) or state.models != models
    failures = state.failures + 1
    if state.up and failures >= threshold:
        return Health(up=False, failures=failures, models=()), True
    return replace(state, failures=failures), False


def force_down(state: Health) -> tuple[Health, bool]:
    """The backend process died: no need to wait for probes to notice."""
    return Health(up=False, failures=state.failures, models=()), state.up


LOAD_MIN_INTERVAL_S = 0.5  # at most two load updates per second per worker


def load_worth_publishing(published: int, current: int, since_s: float) -> bool:
    """Publish load only on a meaningful change, and not too often: every update goes to the
    entries that route to us (and, within the pool's budget, to gossip). Meaningful: back to
    idle, or a change of at least one request and at least 20 % of what was published."""
    if current == published or since_s < LOAD_MIN_INTERVAL_S:
        return False
    return current == 0 or abs(current - published) >= max(1, 0.2 * published)
