"""From the validated settings to traffic policies, and the checks that need the repository."""

from __future__ import annotations

from ..repository import Repository
from ..settings import Settings
from .policy import TrafficPolicy

__all__ = ["policies_of", "unknown_names"]


def policies_of(settings: Settings) -> dict[str, TrafficPolicy]:
    """A TrafficPolicy for every model whose settings split, pin or mirror traffic."""
    out = {}
    for name, model in settings.models.items():
        if model.traffic is None and not model.shadow:
            continue
        sticky = model.sticky
        out[name] = TrafficPolicy(
            weights=dict(model.traffic or {}),
            sticky_metadata=sticky.key.lower() if sticky is not None and sticky.key else None,
            sticky_parameter=sticky.parameter if sticky is not None else None,
            shadows=dict(model.shadow),
            atol=model.compare.atol,
            rtol=model.compare.rtol,
            shadow_max_inflight=model.shadow_max_inflight,
        )
    return out


def unknown_names(settings: Settings) -> list[str]:
    """Models the config names that neither the repository nor a remote version holds (a typo
    would otherwise be ignored), and versions that `traffic`, `shadow` or `rollout` name but
    neither the repository nor a remote (`versions:`) entry holds: the config is refused with
    every one of them listed."""
    repository = Repository(settings.model_repository)
    local = repository.model_names()
    problems = []
    for name, model in sorted(settings.models.items()):
        if name not in local and not any(v.backend == "triton" for v in model.versions.values()):
            problems.append(
                f"models.{name}: no model '{name}' in the repository and no remote version "
                f"(the repository has: {', '.join(local) or 'nothing'})"
            )
            continue
        named = set(model.traffic or {}) | set(model.shadow)
        if model.rollout is not None:
            named |= {model.rollout.canary} | ({model.rollout.baseline} if model.rollout.baseline else set())
        if not named:
            continue
        known = repository.version_names(name) | set(model.versions)
        for version in sorted(named - known, key=int):
            problems.append(
                f"models.{name}: version '{version}' is named in traffic, shadow or rollout but is "
                "neither in the repository nor a remote version"
            )
    return problems
