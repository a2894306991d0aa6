"""Control operations, free of any transport: every change to what is served passes here."""

from .config import Applied, ConfigControl

__all__ = ["Applied", "ConfigControl"]
