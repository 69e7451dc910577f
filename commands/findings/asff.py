"""Security Hub findings (the AWS Security Finding Format, ASFF) read into NormalizedFindings, so
findings imported into Security Hub (EventBridge detail-type "Security Hub Findings -
Imported", source "aws.securityhub", `detail.findings: [...]`) open and join incidents like
GuardDuty's own.

A GuardDuty finding seen through Security Hub keeps GuardDuty's id (taken from its ARN, the
ASFF `Id`), so it lands on the same row whichever way it arrives first. Other products' findings
keep their ASFF `Id`. The raw ASFF is stored: the write-back on close finds `Id` and
`ProductArn` there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from commands.findings import coerce
from commands.findings.errors import BadFinding

SECURITYHUB_SOURCE = "aws.securityhub"
IMPORTED_DETAIL_TYPE = "Security Hub Findings - Imported"
_GUARDDUTY_ID = re.compile(r"^arn:aws[a-z-]*:guardduty:[^:]+:\d{12}:detector/[^/]+/finding/(.+)$")
# ASFF severity labels -> a GuardDuty-scale number in the same band.
LABEL_SEVERITY = {"INFORMATIONAL": 0.0, "LOW": 3.0, "MEDIUM": 5.0, "HIGH": 8.0, "CRITICAL": 9.0}
# ASFF resource types -> GuardDuty's resource types (what incidents are keyed on).
RESOURCE_TYPES = {
    "AwsEc2Instance": "Instance",
    "AwsIamAccessKey": "AccessKey",
    "AwsS3Bucket": "S3Bucket",
    "AwsLambdaFunction": "Lambda",
    "AwsRdsDbInstance": "RDSDBInstance",
    "AwsEksCluster": "EKSCluster",
    "AwsEcsCluster": "ECSCluster",
}


def _obj(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadFinding(f"{where}{key} must be a JSON object")
    return value


def _severity(f: Mapping[str, Any], product_name: str) -> float:
    severity = _obj(f, "Severity", "")
    if product_name == "GuardDuty" and severity.get("Product") is not None:
        value = coerce.number(severity["Product"], "Severity.Product")  # GuardDuty's own scale
    elif isinstance(severity.get("Label"), str) and severity["Label"].upper() in LABEL_SEVERITY:
        value = LABEL_SEVERITY[severity["Label"].upper()]
    elif severity.get("Normalized") is not None:
        value = coerce.number(severity["Normalized"], "Severity.Normalized") / 10
    else:
        raise BadFinding("finding has no Severity.Label or Severity.Normalized")
    if not 0.0 <= value <= 10.0:
        raise BadFinding(f"severity must be between 0 and 10, got {value:g}")
    return value


def _tail(value: Any, sep: str) -> str | None:
    return value.rsplit(sep, 1)[-1] if isinstance(value, str) and sep in value else None


def _resource_fields(resources: list[Any]) -> dict[str, Any]:
    """The first resource the bot can act on, in NormalizedFinding's fields."""
    out: dict[str, Any] = {"resource_type": None, "tags": {}}
    for index, r in enumerate(resources):
        if not isinstance(r, Mapping):
            raise BadFinding(f"Resources[{index}] must be a JSON object")
        kind = RESOURCE_TYPES.get(str(r.get("Type")))
        if kind is None:
            continue
        rid, details = r.get("Id"), _obj(r, "Details", f"Resources[{index}].")
        where = f"Resources[{index}].Id"
        if kind == "Instance":
            out["instance_id"] = coerce.identifier(_tail(rid, "/") or rid, where)
        elif kind == "AccessKey":
            key = _obj(details, "AwsIamAccessKey", "Details.")
            out["access_key_id"] = coerce.identifier(
                key.get("AccessKeyId") or _tail(rid, ":"), where
            )
            out["user_name"] = coerce.identifier(
                key.get("PrincipalName") or key.get("UserName"), "PrincipalName"
            )
            out["user_type"] = coerce.optional_text(key.get("PrincipalType"), "PrincipalType")
        elif kind == "S3Bucket":
            out["bucket_names"] = tuple(filter(None, [coerce.identifier(_tail(rid, ":"), where)]))
        elif kind == "Lambda":
            out["lambda_function"] = coerce.identifier(_tail(rid, ":") or rid, where)
        elif kind == "RDSDBInstance":
            db = _obj(details, "AwsRdsDbInstance", "Details.")
            out["db_instance_id"] = coerce.identifier(
                db.get("DBInstanceIdentifier") or _tail(rid, ":"), where
            )
        else:
            out["cluster"] = coerce.identifier(_tail(rid, "/") or rid, where)
        out["resource_type"] = kind
        tags = r.get("Tags")
        if isinstance(tags, Mapping):
            out["tags"] = {str(k): str(v) for k, v in tags.items()}
        out["region"] = coerce.identifier(r.get("Region"), "Resources.Region", limit=30)
        return out
    return out


def asff_fields(
    f: Any, *, region: str | None = None, account_id: str | None = None
) -> dict[str, Any]:
    """One ASFF finding as NormalizedFinding's fields (normalize.py adds the band and builds
    it; this module does not import it, so the two stay out of an import cycle)."""
    if not isinstance(f, Mapping):
        raise BadFinding(f"finding must be a JSON object, got {type(f).__name__}")
    asff_id = coerce.identifier(f.get("Id"), "Id", limit=512)
    if not asff_id:
        raise BadFinding("finding has no Id")
    gd = _GUARDDUTY_ID.match(asff_id)
    finding_id = coerce.identifier(gd.group(1) if gd else asff_id, "Id")
    assert finding_id is not None
    types = f.get("Types")
    first_type = types[0] if isinstance(types, list) and types else None
    finding_type = coerce.identifier(
        _tail(first_type, "/") or first_type or f.get("GeneratorId"), "Types"
    )
    if not finding_type:
        raise BadFinding("finding has no Types")
    product = str(f.get("ProductName") or "")
    product_fields = _obj(f, "ProductFields", "")
    severity = _severity(f, product)
    resources = f.get("Resources")
    if resources is not None and not isinstance(resources, list):
        raise BadFinding("Resources must be a list")
    fields = _resource_fields(resources or [])
    count = product_fields.get("aws/guardduty/service/count")
    sample = product_fields.get("aws/guardduty/service/additionalInfo/sample")
    return dict(
        id=finding_id,
        type=finding_type,
        title=coerce.optional_text(f.get("Title"), "Title") or finding_type,
        description=coerce.optional_text(f.get("Description"), "Description") or "",
        severity=severity,
        account_id=coerce.identifier(f.get("AwsAccountId"), "AwsAccountId", limit=20) or account_id,
        region=coerce.identifier(f.get("Region"), "Region", limit=30)
        or fields.pop("region", None)
        or region,
        resource_type=fields.pop("resource_type"),
        instance_id=fields.pop("instance_id", None),
        access_key_id=fields.pop("access_key_id", None),
        user_name=fields.pop("user_name", None),
        user_type=fields.pop("user_type", None),
        bucket_names=fields.pop("bucket_names", ()),
        cluster=fields.pop("cluster", None),
        public_ips=(),
        network_interface_ids=(),
        remote_ip=None,
        remote_domain=None,
        remote_asn=None,
        count=coerce.count(count, "count") if count is not None else 1,
        first_seen=coerce.optional_timestamp(f.get("FirstObservedAt"), "FirstObservedAt"),
        last_seen=coerce.optional_timestamp(f.get("LastObservedAt"), "LastObservedAt"),
        created_at=coerce.optional_timestamp(f.get("CreatedAt"), "CreatedAt"),
        updated_at=coerce.optional_timestamp(f.get("UpdatedAt"), "UpdatedAt"),
        archived=f.get("RecordState") == "ARCHIVED",
        sample=sample is not None and str(sample).strip().lower() == "true",
        tags=fields.pop("tags"),
        db_instance_id=fields.pop("db_instance_id", None),
        lambda_function=fields.pop("lambda_function", None),
        origin="securityhub",
        raw=f,
    )


def imported_findings(
    detail: Mapping[str, Any], *, region: str | None, account_id: str | None
) -> list[dict[str, Any]]:
    findings = detail.get("findings")
    if not isinstance(findings, list):
        raise BadFinding("detail.findings must be a list")
    out = []
    for index, item in enumerate(findings):
        try:
            out.append(asff_fields(item, region=region, account_id=account_id))
        except BadFinding as exc:
            raise BadFinding(f"findings[{index}]: {exc.reason}") from None
    return out
