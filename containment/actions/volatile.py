"""Optional step: capture the instance's volatile state through SSM Run Command before the
security-group change cuts it off (and before its role is replaced by a deny-all one, since the
instance uploads with its own credentials).

The document is `deploy/ssm-volatile-capture.json`, created in the account as
`incident-bot-VolatileCapture`: processes, network connections, logged-in users and, when the
memory tool is installed, a memory image, written under the incident's key in the evidence
bucket. Only an instance whose SSM agent is online can run it; the plan says when it is not.
The capture is evidence: nothing to roll back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from botocore.exceptions import WaiterError

from containment.context import ActionContext
from containment.errors import error_record
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

DOCUMENT = "incident-bot-VolatileCapture"
TIMEOUT_S = 900  # how long the capture may run before isolation goes ahead without it
NOT_MANAGED = "not SSM-managed (no online SSM agent): no volatile capture before isolation"


def volatile_prefix(target: Target, ctx: ActionContext) -> str:
    return f"{ctx.evidence_prefix}{ctx.incident_key}/instance/{target.resource_id}/volatile/"


def ssm_unavailable(ssm: Any, instance_id: str) -> str | None:
    """Why the capture cannot run (None: the instance's SSM agent is registered and online)."""
    try:
        found = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
        ).get("InstanceInformationList", [])
    except Exception as exc:  # unreadable SSM state: the plan says so, isolation goes ahead
        err = error_record(exc)
        return f"SSM state unreadable ({err['code']}): no volatile capture before isolation"
    if any(i.get("PingStatus") == "Online" for i in found):
        return None
    return NOT_MANAGED


class VolatileCapture(Action):
    name = "volatile_capture"
    summary = (
        "Capture processes, connections, logged-in users and memory (SSM Run Command) "
        "before isolation"
    )
    permissions = ("ssm:DescribeInstanceInformation", "ssm:SendCommand", "ssm:GetCommandInvocation")
    depends_on = ("capture",)
    optional = True
    poll_seconds: ClassVar[int] = 10

    def _params(self, target: Target, ctx: ActionContext) -> dict[str, Any]:
        return {
            "InstanceIds": [target.resource_id],
            "DocumentName": DOCUMENT,
            "TimeoutSeconds": TIMEOUT_S,
            "Parameters": {
                "EvidenceBucket": [ctx.evidence_bucket or ""],
                "EvidencePrefix": [volatile_prefix(target, ctx)],
            },
            "Comment": f"incident-bot {ctx.incident_key}: volatile capture"[:100],
        }

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if not ctx.evidence_bucket:
            return [_skipped("no containment.evidence_bucket to write the capture to")]
        why = ssm_unavailable(ctx.client("ssm", target), target.resource_id)
        if why:
            return [_skipped(why)]
        return [
            PlannedCall(
                "ssm",
                "SendCommand",
                self._params(target, ctx),
                note=f"before the security-group change; waits up to {TIMEOUT_S // 60} min",
            ),
            PlannedCall(
                "ssm",
                "GetCommandInvocation",
                {"InstanceId": target.resource_id},
                mutating=False,
                note="until the capture finishes",
            ),
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if not ctx.evidence_bucket:
            return self.nothing_to_do(ctx, "no containment.evidence_bucket configured")
        ssm = ctx.client("ssm", target)
        why = ssm_unavailable(ssm, target.resource_id)
        if why:
            return self.nothing_to_do(ctx, why)
        rec = self.recorder(ctx, state)
        with rec.guard():
            command = ssm.send_command(**self._params(target, ctx))["Command"]
            command_id = command["CommandId"]
            rec.evidence["command_id"] = command_id
            rec.evidence["location"] = f"s3://{ctx.evidence_bucket}/{volatile_prefix(target, ctx)}"
            try:
                ssm.get_waiter("command_executed").wait(
                    CommandId=command_id,
                    InstanceId=target.resource_id,
                    WaiterConfig={
                        "Delay": self.poll_seconds,
                        "MaxAttempts": max(1, TIMEOUT_S // max(1, self.poll_seconds)),
                    },
                )
            except WaiterError as exc:
                last = exc.last_response or {}
                rec.evidence["status"] = last.get("Status", "unknown")
                rec.evidence["output_tail"] = str(last.get("StandardErrorContent", ""))[-500:]
                raise
            done = ssm.get_command_invocation(CommandId=command_id, InstanceId=target.resource_id)
            rec.evidence["status"] = done.get("Status")
            rec.evidence["output_tail"] = str(done.get("StandardOutputContent", ""))[-500:]
        return rec.result(note=f"volatile state in {rec.evidence.get('location')}")


def _skipped(why: str) -> PlannedCall:
    return PlannedCall(
        "ssm", "DescribeInstanceInformation", {}, mutating=False, note=f"skipped: {why}"
    )
