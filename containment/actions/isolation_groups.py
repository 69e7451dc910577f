"""Prepare the two security groups isolation needs, in each VPC the instance has ENIs in.

- the isolation group (one per VPC, reused across incidents): no ingress, default egress
  revoked for IPv4 and IPv6, so no traffic at all;
- this incident's transit group: all traffic in and out from anywhere. Rules open to
  0.0.0.0/0 and ::/0 on all ports in both directions make flows untracked, so moving an ENI
  here first and then to the isolation group cuts connections that were already open.

Only needs the capture, so it runs while protection, snapshots, ASG and LB steps run.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from containment.actions.capture import transit_group_name
from containment.concurrency import parallel, parallel_map
from containment.context import ActionContext
from containment.errors import error_code, is_not_found
from containment.idempotency import create_once
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import INCIDENT_TAG, creation_tags, tag_dict, tag_list
from containment.targets import Target

ROLE_TAG = "incident-bot:role"
ALL_V4 = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
ALL_V6 = {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
ALL_BOTH = {**ALL_V4, **ALL_V6}


EXAMINER_NOTE = "incident-bot examiner"


def examiner_rule(cidrs: tuple[str, ...]) -> dict[str, Any] | None:
    """The one ingress permission admitting the examiner networks, or None."""
    v4 = [c for c in cidrs if ":" not in c]
    v6 = [c for c in cidrs if ":" in c]
    if not cidrs:
        return None
    rule: dict[str, Any] = {"IpProtocol": "-1"}
    if v4:
        rule["IpRanges"] = [{"CidrIp": c, "Description": EXAMINER_NOTE} for c in v4]
    if v6:
        rule["Ipv6Ranges"] = [{"CidrIpv6": c, "Description": EXAMINER_NOTE} for c in v6]
    return rule


def split_ingress(
    ingress: list[dict[str, Any]], cidrs: tuple[str, ...]
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """(the ingress rules to revoke from an isolation group, the examiner CIDRs it lacks):
    only all-protocol rules from an examiner network are kept."""
    wanted = set(cidrs)
    present: set[str] = set()
    revoke: list[dict[str, Any]] = []
    for perm in ingress:
        if perm.get("IpProtocol") != "-1":
            revoke.append(perm)
            continue
        rest = dict(perm)
        for key, field in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
            ranges = perm.get(key) or []
            present |= {r[field] for r in ranges if r.get(field) in wanted}
            extra = [r for r in ranges if r.get(field) not in wanted]
            if extra:
                rest[key] = extra
            else:
                rest.pop(key, None)
        if any(
            rest.get(k) for k in ("IpRanges", "Ipv6Ranges", "UserIdGroupPairs", "PrefixListIds")
        ):
            revoke.append(rest)
    return revoke, tuple(c for c in cidrs if c not in present)


def _create_params(ctx: ActionContext, vpc: str, role: str) -> dict[str, Any]:
    name = ctx.isolation_group_name if role == "isolation" else transit_group_name(ctx)
    desc = (
        "incident-bot isolation: no traffic in or out"
        if role == "isolation"
        else f"incident-bot {ctx.incident_key}: all-open transit group (untracks flows)"
    )
    tags = creation_tags(incident_key=ctx.incident_key, finding_id=ctx.finding_id)
    tags[ROLE_TAG] = role
    return {
        "GroupName": name,
        "Description": desc,
        "VpcId": vpc,
        "TagSpecifications": [{"ResourceType": "security-group", "Tags": tag_list(tags)}],
    }


def _needs_transit(facts: Facts, vpc: str, found: dict[str, Any]) -> bool:
    """A transit hop is needed only while some ENI in the VPC is not isolated yet."""
    iso = (found.get("isolation") or {}).get("id")
    return any(e["groups"] != [iso] for e in facts["enis"] if e["vpc_id"] == vpc)


def _vpc_calls(
    ctx: ActionContext, facts: Facts, vpc: str, found: dict[str, Any]
) -> list[PlannedCall]:
    out: list[PlannedCall] = []
    iso = found.get("isolation")
    if iso is None:
        out.append(PlannedCall("ec2", "CreateSecurityGroup", _create_params(ctx, vpc, "isolation")))
        out.append(
            PlannedCall(
                "ec2",
                "RevokeSecurityGroupEgress",
                {"GroupId": "<new isolation group>", "IpPermissions": [ALL_BOTH]},
            )
        )
        rule = examiner_rule(ctx.examiner_cidrs)
        if rule:
            out.append(_admit_examiners("<new isolation group>", rule))
    else:
        revoke, missing = split_ingress(iso["ingress"], ctx.examiner_cidrs)
        if revoke:
            out.append(
                PlannedCall(
                    "ec2",
                    "RevokeSecurityGroupIngress",
                    {"GroupId": iso["id"], "IpPermissions": revoke},
                )
            )
        rule = examiner_rule(missing)
        if rule:
            out.append(_admit_examiners(iso["id"], rule))
        if iso["egress"]:
            out.append(
                PlannedCall(
                    "ec2",
                    "RevokeSecurityGroupEgress",
                    {"GroupId": iso["id"], "IpPermissions": iso["egress"]},
                )
            )
    if found.get("transit") is None and _needs_transit(facts, vpc, found):
        out.append(PlannedCall("ec2", "CreateSecurityGroup", _create_params(ctx, vpc, "transit")))
        out.append(
            PlannedCall(
                "ec2",
                "AuthorizeSecurityGroupIngress",
                {"GroupId": "<new transit group>", "IpPermissions": [ALL_BOTH]},
            )
        )
        out.append(
            PlannedCall(
                "ec2",
                "AuthorizeSecurityGroupEgress",
                {"GroupId": "<new transit group>", "IpPermissions": [ALL_V6]},
            )
        )
    return out


def _admit_examiners(group: str, rule: dict[str, Any]) -> PlannedCall:
    return PlannedCall(
        "ec2",
        "AuthorizeSecurityGroupIngress",
        {"GroupId": group, "IpPermissions": [rule]},
        note="examiner networks (containment.examiner_cidrs): live response after isolation",
    )


def _create_group(target: Target, ctx: ActionContext, vpc: str, role: str) -> tuple[str, bool]:
    """(group id, made by this incident). CreateSecurityGroup takes no ClientToken: after a
    lost answer (or a name clash with a concurrent run) the group is looked up by name."""
    params = _create_params(ctx, vpc, role)
    ec2 = ctx.client("ec2", target)
    once = ctx.client("ec2", target, max_attempts=1)

    def find() -> tuple[str, bool] | None:
        found = ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "group-name", "Values": [params["GroupName"]]},
            ]
        )["SecurityGroups"]
        if not found:
            return None
        ours = tag_dict(found[0].get("Tags")).get(INCIDENT_TAG) == ctx.incident_key
        return found[0]["GroupId"], ours

    def create() -> tuple[str, bool]:
        try:
            return once.create_security_group(**params)["GroupId"], True
        except ClientError as exc:
            if error_code(exc) != "InvalidGroup.Duplicate":
                raise
        made = find()
        if made is None:
            raise RuntimeError(f"security group {params['GroupName']} exists but is not found")
        return made

    return create_once(
        ctx, service="ec2", operation="CreateSecurityGroup", create=create, find=find
    )


def create_isolation_group(target: Target, ctx: ActionContext, vpc: str) -> tuple[str, bool]:
    """The VPC's isolation group, created once and emptied of its default egress rule:
    (group id, made by this incident). Also for a group an earlier attempt made before its
    answer was lost, and for a re-sent revoke whose first answer was lost."""
    gid, ours = _create_group(target, ctx, vpc, "isolation")
    ec2 = ctx.client("ec2", target)
    try:
        ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[ALL_BOTH])
    except ClientError as exc:
        # No ::/0 rule (VPC without IPv6, or revoked already): revoke the IPv4 rule alone.
        if error_code(exc) != "InvalidPermission.NotFound":
            raise
        _ignore(
            ("InvalidPermission.NotFound",),
            ec2.revoke_security_group_egress,
            GroupId=gid,
            IpPermissions=[ALL_V4],
        )
    return gid, ours


def _ignore(codes: tuple[str, ...], fn: Any, **kwargs: Any) -> None:
    try:
        fn(**kwargs)
    except ClientError as exc:
        if error_code(exc) not in codes:
            raise


class IsolationGroups(Action):
    name = "isolation_groups"
    summary = "Create (or reuse) the isolation group and this incident's all-open transit group"
    permissions = (
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:RevokeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:DeleteSecurityGroup",
    )
    depends_on = ("capture",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        return [
            c for vpc, found in facts["groups"].items() for c in _vpc_calls(ctx, facts, vpc, found)
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        rec = self.recorder(ctx, state)
        ec2 = ctx.client("ec2", target)
        facts = state.facts
        groups: dict[str, dict[str, str | None]] = {}

        def admit(gid: str, cidrs: tuple[str, ...]) -> None:
            rule = examiner_rule(cidrs)
            if rule:
                _ignore(
                    ("InvalidPermission.Duplicate",),
                    ec2.authorize_security_group_ingress,
                    GroupId=gid,
                    IpPermissions=[rule],
                )
                with rec.lock:  # VPCs are prepared in parallel
                    rec.evidence.setdefault("examiner_cidrs", {})[gid] = list(cidrs)

        def isolation(vpc: str, found: dict[str, Any] | None) -> str:
            if found is None:
                gid, ours = create_isolation_group(target, ctx, vpc)
                if ours:
                    rec.change_item("created", gid, {"vpc": vpc, "role": "isolation"})
                admit(gid, ctx.examiner_cidrs)
                return gid
            gid = found["id"]
            # A reused group must still be empty (but for examiners): someone may have added
            # rules since.
            revoke, missing = split_ingress(found["ingress"], ctx.examiner_cidrs)
            if revoke:
                ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=revoke)
                rec.change_item("tightened", gid, {"ingress": revoke})
            admit(gid, missing)
            if found["egress"]:
                ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=found["egress"])
                rec.change_item("tightened", gid, {"egress": found["egress"]})
            return gid

        def transit(vpc: str, found: dict[str, Any] | None, needed: bool) -> str | None:
            if found is not None:
                return found["id"]
            if not needed:
                return None
            gid, _ = _create_group(target, ctx, vpc, "transit")  # named after this incident
            rec.change_item("created", gid, {"vpc": vpc, "role": "transit"})
            parallel(
                lambda: _ignore(
                    ("InvalidPermission.Duplicate",),
                    ec2.authorize_security_group_ingress,
                    GroupId=gid,
                    IpPermissions=[ALL_BOTH],
                ),
                lambda: _ignore(
                    ("InvalidPermission.Duplicate",),
                    ec2.authorize_security_group_egress,
                    GroupId=gid,
                    IpPermissions=[ALL_V6],
                ),
            )
            return gid

        def prepare(item: tuple[str, dict[str, Any]]) -> None:
            vpc, found = item
            iso_id, transit_id = parallel(
                lambda: isolation(vpc, found.get("isolation")),
                lambda: transit(vpc, found.get("transit"), _needs_transit(facts, vpc, found)),
            )
            groups[vpc] = {"isolation": iso_id, "transit": transit_id}

        with rec.guard():
            parallel_map(prepare, list(facts["groups"].items()))
        rec.evidence["groups"] = groups
        if rec.error:
            rec.left("ready", groups)  # VPCs whose groups are complete; "created" has the rest
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return [
            PlannedCall("ec2", "DeleteSecurityGroup", {"GroupId": gid}, note=info["role"])
            for gid, info in result.changes.get("created", {}).items()
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        created = result.changes.get("created", {})
        if not created:
            return None
        rec = self.recorder(ctx)
        ec2 = ctx.client("ec2", target)
        kept: dict[str, str] = {}

        def delete(gid: str) -> None:
            try:
                ec2.delete_security_group(GroupId=gid)
                rec.change_item("deleted", gid, created[gid]["role"])
            except ClientError as exc:
                if is_not_found(exc):
                    return
                if error_code(exc) == "DependencyViolation":
                    # Another incident's instance uses the shared isolation group now.
                    kept[gid] = "still in use"
                    return
                raise

        with rec.guard():
            parallel_map(delete, list(created))
        rec.evidence["kept"] = kept
        return rec.result()
