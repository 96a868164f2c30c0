"""Routing restrictions a client sets in headers, so nothing has to read the body.

``X-Otela-Identity-Group: key=value`` (upstream OpenTela's header): only providers whose
service identity groups contain ``key=value``, or (our extension) whose record labels have
``key`` = ``value`` (``site=clariden``, ``framework=vllm``). Several pairs, comma-separated or
in repeated headers, must all hold. ``model=X`` is special: it is the request's model, routed
through the identity-group tiers as a body's ``model`` is (``match.py``; so ``X-Otela-Fallback``
still widens it); a body naming another model is the client's mistake.

``X-Otela-Site: name``: only providers whose ``site`` label is ``name``.

Pure: header values in, a ``Restriction`` out (``ValueError`` for a malformed one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IDENTITY_GROUP_HEADER = "X-Otela-Identity-Group"
SITE_HEADER = "X-Otela-Site"
MAX_PAIRS = 16


@dataclass(frozen=True)
class Restriction:
    model: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    site: str | None = None

    @property
    def empty(self) -> bool:
        return not self.pairs and self.site is None

    def admits(self, groups: Iterable[str], labels: Mapping[str, str]) -> bool:
        """Whether a service with identity ``groups``, on a node with ``labels``, may serve."""
        if self.site is not None and labels.get("site") != self.site:
            return False
        have = set(groups)
        return all(f"{k}={v}" in have or labels.get(k) == v for k, v in self.pairs)

    def describe(self) -> str:
        """The filters (not the model) as the client wrote them, for error messages."""
        parts = [f"{k}={v}" for k, v in self.pairs]
        if self.site is not None:
            parts.append(f"site {self.site!r}")
        return ", ".join(parts)


def parse(identity_groups: Iterable[str], site: str | None) -> Restriction:
    """The restriction of a request's ``X-Otela-Identity-Group`` values (every occurrence of
    the header) and ``X-Otela-Site`` value (None: absent)."""
    model: str | None = None
    pairs: list[tuple[str, str]] = []
    for value in identity_groups:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, val = item.partition("=")
            key, val = key.strip(), val.strip()
            if not sep or not key or not val:
                raise ValueError(f"{IDENTITY_GROUP_HEADER} must be key=value, got {item!r}")
            if key == "model":
                if model is not None and model != val:
                    raise ValueError(f"{IDENTITY_GROUP_HEADER} names two models")
                model = val
            elif (key, val) not in pairs:
                pairs.append((key, val))
    if len(pairs) > MAX_PAIRS:
        raise ValueError(f"{IDENTITY_GROUP_HEADER} has more than {MAX_PAIRS} pairs")
    if site is not None:
        site = site.strip()
        if not site:
            raise ValueError(f"{SITE_HEADER} must name a site")
    return Restriction(model, tuple(pairs), site)
