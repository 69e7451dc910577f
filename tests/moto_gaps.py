"""Where moto's model of AWS falls short of what a test needs, the gap filled as AWS behaves.

moto's CopySnapshot looks for the source snapshot in the caller's own account only; AWS also
copies a snapshot another account shared with the caller (createVolumePermission). This
patch adds exactly that, and refuses an unshared one as AWS does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from moto.ec2.exceptions import InvalidSnapshotIdError
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.utils import random_snapshot_id


@contextmanager
def shared_snapshot_copies() -> Iterator[None]:
    original = EBSBackend.copy_snapshot

    def copy_snapshot(
        self: Any, source_snapshot_id: str, source_region: str, description: str, kms_key_id: Any
    ) -> Any:
        from moto.ec2.models import ec2_backends

        for account, regions in ec2_backends.items():
            if account == self.account_id:
                continue
            source = regions[source_region].snapshots.get(source_snapshot_id)
            if source is None:
                continue
            if self.account_id not in source.create_volume_permission_userids:
                raise InvalidSnapshotIdError()  # AWS: not found, when not shared with you
            snapshot = Snapshot(
                self,
                random_snapshot_id(),
                volume=source.volume,
                description=description,
                encrypted=True if kms_key_id else source.encrypted,
                kms_key_id=kms_key_id,
            )
            self.snapshots[snapshot.id] = snapshot
            return snapshot
        return original(self, source_snapshot_id, source_region, description, kms_key_id)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EBSBackend, "copy_snapshot", copy_snapshot)
        yield
