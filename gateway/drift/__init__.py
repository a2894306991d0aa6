"""Drift detection: reference profiles, the data plane's counts, the control plane's windows and
scores. Only this package calls the kernels (kernels/)."""

from __future__ import annotations

from ..settings import Settings
from .monitor import DriftMonitor
from .profile import Profile, ProfileError, build_profile, load_profile, read_data
from .scores import SCORES, Score, score
from .tracker import DriftTracker, drift_counts

__all__ = [
    "SCORES",
    "DriftMonitor",
    "DriftTracker",
    "Profile",
    "ProfileError",
    "Score",
    "build_profile",
    "drift_counts",
    "load_profile",
    "profile_problems",
    "read_data",
    "score",
]


def profile_problems(settings: Settings) -> list[str]:
    """The drift profiles a config names that cannot be read: it is refused with each reason."""
    problems = []
    for name, model in sorted(settings.models.items()):
        if model.drift is not None:
            try:
                load_profile(model.drift.reference)
            except ProfileError as exc:
                problems.append(f"models.{name}.drift: {exc}")
    return problems
