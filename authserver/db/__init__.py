"""Persistence: SQLAlchemy 2 models and the async engine. Nothing stored is secret."""

from .engine import create_engine, session_factory
from .models import ApiKey, AuditEvent, Base, KeyKind, Tenant

__all__ = ["ApiKey", "AuditEvent", "Base", "KeyKind", "Tenant", "create_engine", "session_factory"]
