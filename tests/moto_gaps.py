"""Where moto's model of AWS falls short of what a test needs, the gap filled as AWS behaves.

moto's CopySnapshot looks for the source snapshot in the caller's own account only; AWS also
copies a snapshot another account shared with the caller (createVolumePermission). This
patch adds exactly that, and refuses an unshared one as AWS does. Its CreateSnapshot also
drops the volume's KMS key (AWS encrypts a snapshot under its volume's key).
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

    def create_snapshot(self: Any, volume_id: str, *args: Any, **kwargs: Any) -> Any:
        snapshot = original_create(self, volume_id, *args, **kwargs)
        snapshot.kms_key_id = snapshot.kms_key_id or self.get_volume(volume_id).kms_key_id
        return snapshot

    original_create = EBSBackend.create_snapshot
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EBSBackend, "copy_snapshot", copy_snapshot)
        mp.setattr(EBSBackend, "create_snapshot", create_snapshot)
        yield


@contextmanager
def sdk_task_outputs_as_json() -> Iterator[None]:
    """moto's States Language interpreter keeps an aws-sdk task's boto3 answer as Python
    objects, so a datetime in it (an instance's LaunchTime) breaks States.JsonToString;
    Step Functions hands the state the answer as JSON, timestamps as ISO 8601 strings."""
    import datetime as dt

    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as sdk,
    )

    cls = sdk.StateTaskServiceAwsSdk
    original = cls._eval_service_task

    def as_json(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: as_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [as_json(v) for v in value]
        return value

    def eval_service_task(self: Any, env: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, env, *args, **kwargs)
        env.stack.append(as_json(env.stack.pop()))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "_eval_service_task", eval_service_task)
        yield


@contextmanager
def sdk_error_names() -> Iterator[None]:
    """Step Functions names an aws-sdk task's error `<Service>.<Exception>` with the service
    in PascalCase (`Kms.NotFoundException`); moto's interpreter knows that spelling for a
    few services only and keeps the rest lower-case (`kms.NotFoundException`)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as sdk,
    )

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sdk._SERVICE_ERROR_NAMES, "kms", "Kms")
        yield
