"""The clean room's Engine: runs the approved stack create or delete, one step a resource."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from commands.aftermath import OneWayEngine, step_result
from commands.approvals.plans import StepCallback
from commands.approvals.requests import running_plan
from commands.errors import UserError
from commands.forensics import account
from commands.forensics.plan import (
    POLL_SECONDS,
    TIMEOUT,
    check_owned,
    existing_stack,
    template_body,
)
from commands.incidents import get_incident
from containment.context import ActionContext
from containment.errors import error_record
from containment.idempotency import client_token
from containment.registry import StepResult
from containment.tags import INCIDENT_TAG, tag_list
from containment.targets import Target
from storage.db import Database
from storage.facts import CLEAN_ROOM

_DONE = {"CREATE_COMPLETE", "DELETE_COMPLETE", "UPDATE_COMPLETE"}
_FAILED = {
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "DELETE_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
}


def _resource_note(event: Mapping[str, Any]) -> str:
    return f"{event.get('ResourceType')} {event.get('PhysicalResourceId') or ''}".strip()


def _event_line(e: Mapping[str, Any]) -> str:
    at = e["Timestamp"]
    stamp = at.strftime("%H:%M:%S") if isinstance(at, dt.datetime) else str(at)
    line = f"{stamp} {e['LogicalResourceId']} {e['ResourceStatus']}"
    if e.get("ResourceStatusReason"):
        line += f": {e['ResourceStatusReason']}"
    return line[:300]


class StackWatcher:
    """Follows a stack's events, oldest first, each reported once."""

    def __init__(self, cfn: Any, stack_id: str) -> None:
        self.cfn = cfn
        self.stack_id = stack_id
        self.seen: set[str] = set()

    def prime(self) -> None:
        """Mark every event so far as seen (a teardown reports only its own events)."""
        self.new_events()

    def new_events(self) -> list[StepResult]:
        fresh: list[dict[str, Any]] = []
        pages = self.cfn.get_paginator("describe_stack_events").paginate(StackName=self.stack_id)
        for page in pages:  # newest first; stop at the first page of known events
            batch = [e for e in page["StackEvents"] if e["EventId"] not in self.seen]
            fresh.extend(batch)
            if len(batch) < len(page["StackEvents"]):
                break
        fresh.reverse()
        self.seen.update(e["EventId"] for e in fresh)
        return fresh

    def status(self) -> dict[str, Any]:
        return self.cfn.describe_stacks(StackName=self.stack_id)["Stacks"][0]


class CleanRoomEngine(OneWayEngine):
    """The approval executor's Engine for forensics / forensics_teardown requests.

    Each stack resource becomes a step of its own as its events arrive (started on
    *_IN_PROGRESS, finished on *_COMPLETE / *_FAILED), so the approval card lists them.
    """

    def __init__(
        self,
        *,
        database: Database,
        poll_seconds: float = POLL_SECONDS,
        timeout: dt.timedelta = TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        on_facts: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(on_facts)
        self.database = database
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.sleep = sleep

    plan_command = "/forensics to plan a clean room"

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]:
        plan = self._plan_of(ctx.incident_key, target.resource_id)
        if plan.get("operation") == "teardown":
            return self._teardown(target, ctx, plan, on_step)
        return self._create(target, ctx, plan, on_step)

    # ------------------------------------------------------------------------------------

    def _plan_of(self, incident_key: str, stack: str) -> dict[str, Any]:
        """The plan of the running request for this stack (the executor passes only names)."""
        return running_plan(
            database=self.database,
            target_id=stack,
            kinds=("forensics", "forensics_teardown", "retry"),
            what="clean-room",
        )

    def follow(
        self,
        watcher: StackWatcher,
        on_step: StepCallback,
        results: dict[str, StepResult | None],
        incident_key: str,
    ) -> dict[str, Any]:
        """Report resource events as steps until the stack settles; return its description."""
        stack_id = watcher.stack_id
        deadline = time.monotonic() + self.timeout.total_seconds()
        lines: list[str] = []
        while True:
            for event in watcher.new_events():
                lines.append(_event_line(event))
                logical = str(event["LogicalResourceId"])
                state = str(event["ResourceStatus"])
                if event.get("ResourceType") == "AWS::CloudFormation::Stack":
                    continue  # the stack itself is the overall step
                step = f"stack:{logical}"[:60]
                if state.endswith("_IN_PROGRESS"):
                    if step not in results:
                        on_step(step, "started", None)
                        results[step] = None
                elif state.endswith("_COMPLETE") or state.endswith("_FAILED"):
                    failed = state.endswith("_FAILED")
                    error = (
                        {
                            "code": state,
                            "message": event.get("ResourceStatusReason") or state,
                            "kind": "error",
                            "operation": "CloudFormation",
                        }
                        if failed
                        else None
                    )
                    result = step_result(
                        self.database.clock.now(),
                        step,
                        "failed" if failed else "succeeded",
                        note=_resource_note(event),
                        error=error,
                    )
                    results[step] = result
                    on_step(step, "finished", result)
            self.save_facts(incident_key, events=lines[-12:])
            stack = watcher.status()
            status = stack["StackStatus"]
            if status in _DONE or status in _FAILED:
                return stack
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stack {stack_id} still {status} after {self.timeout}")
            self.sleep(self.poll_seconds)

    def _forensic_copies(
        self, target: Target, ctx: ActionContext, plan: Mapping[str, Any], on_step: StepCallback
    ) -> tuple[list[StepResult], dict[str, str] | None]:
        """Share and copy the snapshots; (step results, source id -> copy id) or None on
        failure. Each step is reported as it finishes, so the card and timeline show it."""
        snaps = list(plan.get("snapshots") or [])
        keys = dict((plan.get("forensic") or {}).get("keys") or {})
        done: list[StepResult] = []
        on_step("share_snapshots", "started", None)
        try:
            shared = account.share(
                ec2=ctx.client("ec2", target),
                kms=ctx.client("kms", target),
                ctx=ctx,
                region=target.region,
                snapshots=snaps,
                keys=keys,
            )
            result = step_result(
                self.database.clock.now(),
                "share_snapshots",
                "succeeded",
                note=f"shared {len(shared['snapshots'])} snapshot(s) with account "
                f"{ctx.forensic_account_id}"
                + (f"; {len(shared['grants'])} KMS grant(s)" if shared["grants"] else ""),
                evidence=shared,
                changes={"shared": shared["snapshots"], "grants": shared["grants"]},
            )
        except Exception as exc:
            result = step_result(
                self.database.clock.now(), "share_snapshots", "failed", error=error_record(exc)
            )
        on_step("share_snapshots", "finished", result)
        done.append(result)
        if result.status != "succeeded":
            return done, None
        on_step("copy_snapshots", "started", None)
        ec2 = account.room_ec2(ctx, target)
        entries: list[dict[str, Any]] = []
        try:
            entries = account.copy(
                ec2=ec2,
                ctx=ctx,
                region=target.region,
                snapshots=snaps,
                source_account=target.account_id,
            )
            account.wait_completed(
                ec2,
                [e["copy_id"] for e in entries],
                timeout=self.timeout,
                poll=self.poll_seconds,
                sleep=self.sleep,
            )
            manifest = account.record_copies(ctx, target.region, entries)
            result = step_result(
                self.database.clock.now(),
                "copy_snapshots",
                "succeeded",
                note="; ".join(
                    f"{e['snapshot_id']} (volume {e['volume_id']}, started {e['start_time']}) "
                    f"→ {e['copy_id']}"
                    for e in entries
                )
                + ("" if manifest else "; no evidence bucket: not in a manifest"),
                evidence={"copies": entries, "manifest": manifest},
            )
        except Exception as exc:
            result = step_result(
                self.database.clock.now(),
                "copy_snapshots",
                "failed",
                error=error_record(exc),
                evidence={"copies": entries},  # what was made before the failure
            )
        on_step("copy_snapshots", "finished", result)
        done.append(result)
        if result.status != "succeeded":
            return done, None
        return done, {e["snapshot_id"]: e["copy_id"] for e in entries}

    def _create(
        self, target: Target, ctx: ActionContext, plan: Mapping[str, Any], on_step: StepCallback
    ) -> list[StepResult]:
        cfn = account.cfn_client(ctx, target)
        name = str(plan["stack_name"])
        results: dict[str, StepResult | None] = {}
        before: list[StepResult] = []
        parameters = dict(plan["parameters"])
        if plan.get("forensic") and not ctx.dry_run:
            before, copies = self._forensic_copies(target, ctx, plan, on_step)
            if copies is None:
                return before
            for k, v in list(parameters.items()):
                if k.startswith("SnapshotId") and v in copies:
                    parameters[k] = copies[v]
        on_step("create_stack", "started", None)
        if ctx.dry_run:
            result = step_result(
                self.database.clock.now(),
                "create_stack",
                "succeeded",
                dry_run=True,
                note=f"dry run: would create {name}",
            )
            on_step("create_stack", "finished", result)
            return [result]
        try:
            found = existing_stack(cfn, name)
            replaced = ""
            if found is not None and found["StackStatus"] in _FAILED:
                # A failed earlier attempt: clear it away so the retry can create afresh.
                check_owned(found, ctx.incident_key)
                cfn.delete_stack(StackName=found["StackId"])
                self._wait_deleted(cfn, found["StackId"])
                replaced, found = found["StackId"], None
            if found is None:
                stack_id = cfn.create_stack(
                    # botocore re-sends a create whose answer was lost: with the same token
                    # CloudFormation answers with the stack it made instead of refusing.
                    ClientRequestToken=client_token(ctx, "forensics", name, replaced),
                    StackName=name,
                    TemplateBody=template_body(),
                    Parameters=[
                        {"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()
                    ],
                    Capabilities=["CAPABILITY_IAM"],
                    Tags=tag_list(
                        {INCIDENT_TAG: ctx.incident_key, "incident-bot:purpose": "forensics"}
                    ),
                )["StackId"]
            else:
                stack_id = found["StackId"]
            self.save_facts(
                ctx.incident_key,
                stack_name=name,
                stack_id=stack_id,
                status="CREATE_IN_PROGRESS",
                region=target.region,
                account_id=ctx.forensic_account_id or target.account_id,
            )
            stack = self.follow(StackWatcher(cfn, stack_id), on_step, results, ctx.incident_key)
        except Exception as exc:
            result = step_result(
                self.database.clock.now(), "create_stack", "failed", error=error_record(exc)
            )
            on_step("create_stack", "finished", result)
            self.save_facts(
                ctx.incident_key, status="FAILED", error=(result.error or {}).get("message")
            )
            return [*before, *[r for r in results.values() if r], result]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        ok = stack["StackStatus"] == "CREATE_COMPLETE"
        volumes = [v for v in outputs.get("VolumeIds", "").split(",") if v.startswith("vol-")]
        self.save_facts(
            ctx.incident_key,
            status=stack["StackStatus"],
            instance_id=outputs.get("InstanceId"),
            vpc_id=outputs.get("VpcId"),
            volume_ids=volumes,
            reason=stack.get("StackStatusReason"),
        )
        result = step_result(
            self.database.clock.now(),
            "create_stack",
            "succeeded" if ok else "failed",
            note=(
                f"instance {outputs.get('InstanceId')}: aws ssm start-session --target "
                f"{outputs.get('InstanceId')}"
            )
            if ok
            else None,
            error=None
            if ok
            else {
                "code": stack["StackStatus"],
                "message": stack.get("StackStatusReason") or "stack failed",
                "kind": "error",
                "operation": "CreateStack",
            },
            evidence={"stack_id": stack["StackId"], "outputs": outputs},
            changes={"stack_id": stack["StackId"]},
        )
        on_step("create_stack", "finished", result)
        return [*before, *[r for r in results.values() if r], result]

    def _wait_deleted(self, cfn: Any, stack_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout.total_seconds()
        while True:
            stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
            if stack["StackStatus"] in ("DELETE_COMPLETE", "DELETE_FAILED"):
                return stack
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stack {stack_id} still {stack['StackStatus']}")
            self.sleep(self.poll_seconds)

    def _teardown(
        self, target: Target, ctx: ActionContext, plan: Mapping[str, Any], on_step: StepCallback
    ) -> list[StepResult]:
        on_step("delete_stack", "started", None)
        result = delete_clean_room(
            ctx=ctx,
            target=target,
            stack_id=str(plan["stack_id"]),
            engine=self,
            on_step=on_step,
        )
        on_step("delete_stack", "finished", result)
        return [result]

    def save_facts(self, incident_key: str, **values: Any) -> None:
        with self.database.session() as session:
            CLEAN_ROOM.update(
                get_incident(session=session, key=incident_key),
                **values,
                updated_at=self.database.clock.now().isoformat(),
            )
        self.facts_changed(incident_key)  # a card refresh must never fail the stack operation


def delete_clean_room(
    *,
    ctx: ActionContext,
    target: Target,
    stack_id: str,
    engine: CleanRoomEngine,
    on_step: StepCallback | None = None,
    action: str = "delete_stack",
) -> StepResult:
    """Delete the incident's stack (after checking its tag) and wait; the step's result."""
    cfn = account.cfn_client(ctx, target)
    try:
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        if stack["StackStatus"] == "DELETE_COMPLETE":
            return step_result(
                engine.database.clock.now(), action, "skipped", note="already deleted"
            )
        check_owned(stack, ctx.incident_key)
        if ctx.dry_run:
            return step_result(
                engine.database.clock.now(),
                action,
                "succeeded",
                dry_run=True,
                note=f"dry run: would delete {stack['StackName']}",
            )
        watcher = StackWatcher(cfn, stack["StackId"])
        watcher.prime()
        cfn.delete_stack(StackName=stack_id)
        engine.save_facts(ctx.incident_key, status="DELETE_IN_PROGRESS")
        results: dict[str, StepResult | None] = {}
        final = engine.follow(watcher, on_step or (lambda *a: None), results, ctx.incident_key)
    except UserError as exc:
        return step_result(
            engine.database.clock.now(),
            action,
            "failed",
            error={"code": "NotOwned", "message": exc.message, "kind": "error"},
        )
    except Exception as exc:
        return step_result(engine.database.clock.now(), action, "failed", error=error_record(exc))
    status = final["StackStatus"]
    engine.save_facts(
        ctx.incident_key, status=status, deleted_at=engine.database.clock.now().isoformat()
    )
    if status != "DELETE_COMPLETE":
        return step_result(
            engine.database.clock.now(),
            action,
            "failed",
            error={
                "code": status,
                "message": final.get("StackStatusReason") or status,
                "kind": "error",
                "operation": "DeleteStack",
            },
        )
    return step_result(
        engine.database.clock.now(),
        action,
        "succeeded",
        note=f"deleted {final['StackName']}",
        changes={"deleted": stack_id},
    )


def clean_room_lines(facts: Mapping[str, Any]) -> list[str]:
    """Plain-text lines about the clean room for the incident card."""
    room = CLEAN_ROOM.get(facts)
    if not room:
        return []
    lines = [f"clean room {room.get('stack_name', '?')}: {room.get('status', '?')}"]
    if room.get("instance_id") and room.get("status") == "CREATE_COMPLETE":
        lines.append(f"connect: aws ssm start-session --target {room['instance_id']}")
    if room.get("volume_ids"):
        lines.append("restored volumes: " + ", ".join(room["volume_ids"]))
    if room.get("error") or room.get("reason"):
        lines.append(str(room.get("error") or room.get("reason")))
    lines.extend(room.get("events") or [])
    return lines
