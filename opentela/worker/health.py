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
