"""Which version serves a request, and how a shadow's answer compares with the primary's.

Pure: functions of a policy snapshot and the request (no I/O, no clock but an injected draw), so
they are tested without a server. gateway/registry.py builds a `Router` per published model;
gateway/dataplane.py asks it for each request.
"""

from ._config import policies_of, unknown_names
from .compare import Comparison, compare
from .policy import NO_POLICY, Route, Router, TrafficPolicy, sticky_unit

__all__ = [
    "NO_POLICY",
    "Comparison",
    "Route",
    "Router",
    "TrafficPolicy",
    "compare",
    "policies_of",
    "sticky_unit",
    "unknown_names",
]
