"""Every containment action, in the order plans list them where dependencies allow (the
order of AWS's ContainEC2 procedure for an instance, then the other kinds').

The registry (containment/registry.py) is built from `ACTIONS`: a new action is a class in
its own module, added here. Nothing registers itself by being imported.
"""

from __future__ import annotations

from containment.actions import (
    access_key,
    autoscaling,
    capture,
    evidence,
    flow_logs,
    iam_instance,
    iam_role,
    iam_user,
    isolate,
    isolation_groups,
    lambda_function,
    load_balancers,
    protect,
    rds_instance,
    s3_bucket,
    snapshot,
    tag,
    volatile,
)
from containment.registry import Action

ACTIONS: tuple[type[Action], ...] = (
    capture.CaptureInstance,
    evidence.StoreEvidence,
    volatile.VolatileCapture,
    protect.Protect,
    snapshot.Snapshot,
    autoscaling.AutoScaling,
    load_balancers.LoadBalancers,
    isolation_groups.IsolationGroups,
    isolate.Isolate,
    isolate.DropTransitGroup,
    iam_instance.RestrictInstanceIam,
    tag.Tag,
    access_key.CaptureAccessKey,
    access_key.DeactivateAccessKey,
    access_key.RevokeUserSessions,
    flow_logs.EnableFlowLogs,
    iam_user.CaptureUser,
    iam_user.DeactivateUserKeys,
    iam_user.DeleteLoginProfile,
    iam_user.RevokeUserSessionsAll,
    iam_role.CaptureRole,
    iam_role.RevokeRoleSessions,
    iam_role.DenyAllRole,
    s3_bucket.CaptureBucket,
    s3_bucket.DenyBucketPrincipals,
    s3_bucket.BlockBucketPublicAccess,
    lambda_function.CaptureFunction,
    lambda_function.ThrottleFunction,
    lambda_function.RemovePublicPermissions,
    rds_instance.CaptureDbInstance,
    rds_instance.SnapshotDbInstance,
    rds_instance.IsolateDbInstance,
)
