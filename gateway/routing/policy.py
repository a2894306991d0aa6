"""A model's traffic policy and the one routing decision, as pure functions of a snapshot.

    pin       the request names a version (`model_version`): that version, or NOT_FOUND when
              the model never declared it, UNAVAILABLE when it is declared but not loaded
    sticky    the request carries the sticky key: a stable hash of it picks the version
    weighted  a random draw against the weights
    default   the model has no traffic split: its newest loaded version, as before routing

Only ready (loaded) versions get sticky or weighted traffic; a version that is not ready gives
its share to the others. A `Router` is built once per published snapshot (models, versions,
policy) and never changes, so the hot path reads it without a lock.

Sticky keys use weighted rendezvous hashing: each version scores the key with its own stable
hash, `weight / -ln(u)`, and the highest score wins. The key lands on the same version in every
worker and after a restart (the hash is keyed by nothing but the key and the version). When one
version's weight grows while the others keep their ratios (a canary stepping up), a key either
stays or moves to that version, never elsewhere and never back; and a version that stops being
ready hands on only its own keys. Cumulative intervals in a fixed order keep that promise only
for two versions.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["NO_POLICY", "Route", "Router", "TrafficPolicy", "sticky_unit"]

V = TypeVar("V")

_MASK = (1 << 64) - 1


class Route(StrEnum):
    PINNED = "pinned"
    STICKY = "sticky"
    WEIGHTED = "weighted"
    DEFAULT = "default"


@dataclass(frozen=True)
class TrafficPolicy:
    """What the config says about one model's traffic (validated by gateway/settings.py)."""

    weights: Mapping[str, float] = field(default_factory=dict)  # empty: no split (default route)
    sticky_metadata: str | None = None  # gRPC metadata key (lower case)
    sticky_parameter: str | None = None  # or a request parameter
    shadows: Mapping[str, float] = field(default_factory=dict)  # version -> share of requests mirrored
    atol: float = 1e-4
    rtol: float = 1e-3
    shadow_max_inflight: int = 64

    @property
    def versions(self) -> frozenset[str]:
        """Every version the policy names (they are loaded with the model)."""
        return frozenset(self.weights) | frozenset(self.shadows)


NO_POLICY = TrafficPolicy()


def _version_salt(version: str) -> int:
    """A version's odd 64-bit multiplier (multiply-shift hashing), stable across processes."""
    digest = hashlib.blake2b(version.encode(), digest_size=8, person=b"mg-ver").digest()
    return int.from_bytes(digest, "little") | 1


def _key_hash(key: str | bytes) -> int:
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _unit(h: int, salt: int) -> float:
    """The top 53 bits of h * salt mod 2^64, as a number in (0, 1)."""
    return ((((h * salt) & _MASK) >> 11) + 0.5) * 2.0**-53


def sticky_unit(key: str | bytes, version: str) -> float:
    """The key's stable draw in (0, 1) for one version (the same in every process)."""
    return _unit(_key_hash(key), _version_salt(version))


class Router(Generic[V]):
    """The routing decision for one model over one snapshot. `served` maps the loaded versions
    to what serves them; `declared` holds every version the model knows (loaded or not)."""

    __slots__ = (
        "_cumulative",
        "_declared",
        "_default",
        "_served",
        "_sticky",
        "_weighted",
        "policy",
        "revision",
        "shadows",
        "sticky",
    )

    def __init__(
        self,
        policy: TrafficPolicy,
        served: Mapping[str, V],
        declared: Sequence[str] = (),
        default: str | None = None,
        revision: int = 0,
    ) -> None:
        self.policy = policy
        self.revision = revision  # the policy revision this router was built from
        self.sticky = policy.sticky_metadata is not None or policy.sticky_parameter is not None
        self._served = dict(served)
        self._declared = frozenset(declared) | frozenset(served)
        self._default = self._served.get(default) if default is not None else None
        # the weights of the ready versions, in a fixed order (by version number)
        ready = [(v, w) for v, w in sorted(policy.weights.items(), key=lambda i: int(i[0])) if w > 0]
        ready = [(v, w) for v, w in ready if v in self._served]
        total = sum(w for _, w in ready)
        self._weighted: list[tuple[str, V]] = [(v, self._served[v]) for v, _ in ready]
        running, self._cumulative = 0.0, []
        for _, w in ready:
            running += w / total
            self._cumulative.append(running)
        if self._cumulative:
            self._cumulative[-1] = 1.0
        self._sticky = [(_version_salt(v), w / total, v, self._served[v]) for v, w in ready]
        # the shadows that are loaded: (version, share of requests mirrored, what serves it)
        self.shadows: tuple[tuple[str, float, V], ...] = tuple(
            (v, share, self._served[v]) for v, share in sorted(policy.shadows.items()) if v in self._served
        )

    @property
    def split(self) -> bool:
        """The model has a traffic split (weighted or sticky routing applies)."""
        return bool(self.policy.weights)

    def weights(self) -> dict[str, float]:
        """Each ready version's share of unpinned traffic, normalised (what is served now)."""
        previous, shares = 0.0, {}
        for (version, _), edge in zip(self._weighted, self._cumulative, strict=True):
            shares[version] = round(edge - previous, 12)
            previous = edge
        return shares

    def pinned(self, version: str) -> V | None:
        """The loaded version named by a pin; None when it is declared but not loaded.
        Raises KeyError when the model does not know it at all."""
        found = self._served.get(version)
        if found is None and version not in self._declared:
            raise KeyError(version)
        return found

    def choose(self, key: str | bytes | None = None, draw: float | None = None) -> tuple[V, Route] | None:
        """The version for an unpinned request, and how it was chosen. `key` is the sticky key's
        value when the request carries one; `draw` a uniform [0, 1) number (random when None).
        None when no version can take it (every weighted version not ready)."""
        if not self._weighted:
            if self.policy.weights or self._default is None:
                return None
            return self._default, Route.DEFAULT
        if key is not None:
            h = _key_hash(key)
            best, best_score = self._sticky[0][3], -1.0
            for salt, weight, _, served in self._sticky:
                score = weight / -math.log(((((h * salt) & _MASK) >> 11) + 0.5) * 2.0**-53)
                if score > best_score:
                    best, best_score = served, score
            return best, Route.STICKY
        u = random.random() if draw is None else draw
        for (_, served), edge in zip(self._weighted, self._cumulative, strict=True):
            if u < edge:
                return served, Route.WEIGHTED
        return self._weighted[-1][1], Route.WEIGHTED
