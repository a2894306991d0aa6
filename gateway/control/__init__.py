"""Control operations, free of any transport: every change to what is served passes here."""

from .config import Applied, ConfigControl
from .rollout import RolloutDriver

__all__ = ["Applied", "ConfigControl", "RolloutDriver"]
