"""Cold-chain domain errors."""

from __future__ import annotations

from agritrace.errors import Conflict, NotFound


class ProfileNotFound(NotFound):
    pass


class AlertNotFound(NotFound):
    pass


class AlertClosed(Conflict):
    pass
