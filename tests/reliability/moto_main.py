"""moto_server, with one emulator gap closed so flow logs can be tested through it.

moto 5.2.5 checks a CreateFlowLogs S3 destination by looking up everything after
`arn:aws:s3:::` as a bucket name, prefix included, so `bucket/prefix/` never exists (real
AWS takes the first path segment as the bucket). Bucket names cannot contain "/": looking up
the first segment changes nothing else.

Run as `python -m tests.reliability.moto_main -H 127.0.0.1 -p PORT`.
"""

from __future__ import annotations

from typing import Any

from moto.s3.models import S3Backend
from moto.server import main

_get_bucket = S3Backend.get_bucket


def _first_segment(self: S3Backend, bucket_name: str) -> Any:
    return _get_bucket(self, bucket_name.split("/", 1)[0])


S3Backend.get_bucket = _first_segment  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
