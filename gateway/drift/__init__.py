"""Drift detection: reference profiles, the data plane's counts, the control plane's windows and
scores. Only this package calls the kernels (kernels/)."""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .live import LiveReferences, profile_path
from .monitor import DriftMonitor
from .profile import Profile, ProfileError, build_profile, load_profile, profile_from_rows, read_data
from .scores import SCORES, Score, categorical_scores, score
from .tracker import DriftTracker, drift_counts

__all__ = [
    "SCORES",
    "DriftMonitor",
    "DriftTracker",
    "LiveReferences",
    "Profile",
    "ProfileError",
    "Score",
    "build_profile",
    "categorical_scores",
    "drift_counts",
    "load_profile",
    "profile_from_rows",
    "profile_path",
    "profile_problems",
    "read_data",
    "score",
]


def profile_problems(settings: Settings) -> list[str]:
    """The drift profiles a config names that cannot be read: it is refused with each reason."""
    problems = []
    for name, model in sorted(settings.models.items()):
        if model.drift is not None and model.drift.live is None:
            assert isinstance(model.drift.reference, Path)
            try:
                load_profile(model.drift.reference)
            except ProfileError as exc:
                problems.append(f"models.{name}.drift: {exc}")
    return problems
