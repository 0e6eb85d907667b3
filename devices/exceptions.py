"""Device registry errors."""

from __future__ import annotations

from agritrace.errors import InvalidInput, NotFound


class GatewayNotFound(NotFound):
    type_slug = "gateway-not-found"
    title = "No such gateway"


class ChannelNotFound(NotFound):
    type_slug = "channel-not-found"
    title = "No such channel"


class InvalidRange(InvalidInput):
    type_slug = "invalid-range"
    title = "Invalid time range"
