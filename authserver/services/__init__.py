"""Business logic. Controllers and the CLI call these; nothing here knows HTTP."""

from .apikeys import Actor, KeyService, KeySpec, Page
from .keygen import KeyGenerator

__all__ = ["Actor", "KeyGenerator", "KeyService", "KeySpec", "Page"]
