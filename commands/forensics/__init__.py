"""`/forensics [INC-N]` and `/forensics teardown [INC-N]`: the forensic clean room.

The clean room is the CloudFormation stack in deploy/forensics-cleanroom.yml: an isolated VPC
with SSM endpoints and the incident's snapshots restored as volumes on a forensic instance.
Creating and deleting it are approval-gated like containment: `propose_*` plans (reads only)
and records a request through commands.approvals; after approval the approval executor runs
`CleanRoomEngine`, which reports each stack resource as a step, so the card shows the
stack's events as live progress. The stack's state is kept in `incident.facts["forensics"]`
for the incident card.
"""

from commands.forensics.engine import (
    CleanRoomEngine,
    StackWatcher,
    clean_room_lines,
    delete_clean_room,
)
from commands.forensics.plan import (
    CLEAN_ROOM_STACK,
    ENGINE,
    PERMISSIONS,
    STACK_PREFIX,
    TARGET_KIND,
    Proposed,
    Scope,
    check_owned,
    existing_stack,
    incident_snapshots,
    plan_create,
    plan_teardown,
    propose,
    scope_of,
    stack_name,
    subnet_cidr,
    template_body,
)

__all__ = [
    "CLEAN_ROOM_STACK",
    "ENGINE",
    "PERMISSIONS",
    "STACK_PREFIX",
    "TARGET_KIND",
    "CleanRoomEngine",
    "Proposed",
    "Scope",
    "StackWatcher",
    "check_owned",
    "clean_room_lines",
    "delete_clean_room",
    "existing_stack",
    "incident_snapshots",
    "plan_create",
    "plan_teardown",
    "propose",
    "scope_of",
    "stack_name",
    "subnet_cidr",
    "template_body",
]
