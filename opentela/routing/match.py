"""Identity-group tiers, compatible with upstream OpenTela.

A provider matches a request's ``model`` at tier 1 through ``model=<id>``, tier 2 through
``model=*`` (any request that names a model), tier 3 through ``all``. ``X-Otela-Fallback: N``
allows tiers 1..N+1. An empty group list is never selected.
"""

from __future__ import annotations

EXACT, WILDCARD, ALL = 1, 2, 3


def tier(groups: tuple[str, ...] | list[str], model: str | None) -> int | None:
    """The best tier at which ``groups`` serve ``model``; None if they do not."""
    if not groups:
        return None
    if model is None:
        # A request without a model (e.g. GET .../v1/models) may go to any provider.
        return EXACT
    if f"model={model}" in groups:
        return EXACT
    if "model=*" in groups:
        return WILDCARD
    if "all" in groups:
        return ALL
    return None


def max_tier(fallback_header: str | None) -> int:
    """Parse ``X-Otela-Fallback``; anything unparsable means exact only (the safe default)."""
    try:
        level = int((fallback_header or "0").strip())
    except ValueError:
        return EXACT
    return EXACT + max(0, min(level, 2))
