"""Persistence: SQLAlchemy 2 models and the async engine. Nothing stored is secret."""

from .models import ApiKey, AuditEvent, Base, Tenant
from .engine import create_engine, session_factory

__all__ = ["ApiKey", "AuditEvent", "Base", "Tenant", "create_engine", "session_factory"]
