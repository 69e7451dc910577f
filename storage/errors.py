"""The one error storage raises for a database the bot cannot use.

It imports nothing, so the CLI can catch it without loading SQLAlchemy first.
"""


class StorageError(Exception):
    """A database problem phrased as one line: what is wrong and what to do instead."""
