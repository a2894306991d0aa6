"""Control operations, free of any transport: every change to what is served passes here."""

from .config import ConfigControl, Published, publish, read_json, read_published, write_json
from .plane import Change, ControlPlane
from .rollout import RolloutDriver

__all__ = [
    "Change",
    "ConfigControl",
    "ControlPlane",
    "Published",
    "RolloutDriver",
    "publish",
    "read_json",
    "read_published",
    "write_json",
]
