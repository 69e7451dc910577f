"""SQLAlchemy models, sessions, the hash-chained timeline and migrations."""
