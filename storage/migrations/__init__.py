"""Alembic migrations (script location `storage:migrations`)."""
