"""A deployable Lambda package built in memory (moto stores it; nothing runs it)."""

from __future__ import annotations

import io
import zipfile


def zipped_handler() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", "def handle(event, context):\n    return event\n")
    return buf.getvalue()
