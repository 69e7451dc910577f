"""Turn every shape a GuardDuty finding arrives in into one typed NormalizedFinding.

Shapes: an EventBridge event (detail-type "GuardDuty Finding", camelCase `detail`); an SNS
notification wrapping such an event (HTTP body, or a Lambda `Records[].Sns` record); a
GetFindings response (`Findings: [...]` from boto3 in PascalCase, `findings` on the wire); and a
bare finding detail in either casing. Keys are folded to camelCase once, so each field is read
from one path whichever casing it came in. Security Hub's "Security Hub Findings - Imported"
events carry ASFF findings, which commands/findings/asff.py reads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from commands.findings import asff, coerce
from commands.findings.errors import BadFinding, Ignored

log = logging.getLogger(__name__)

FINDING_DETAIL_TYPE = "GuardDuty Finding"
GUARDDUTY_SOURCE = "aws.guardduty"
SNS_MESSAGE_TYPES = frozenset(
    {"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"}
)

Band = Literal["low", "medium", "high", "critical"]

# SNS inside SNS inside a Lambda record is as deep as real deliveries nest.
_MAX_WRAPPING = 4
_MAX_NESTING = 64
_EMPTY: Mapping[str, Any] = MappingProxyType({})  # what an absent object reads as (shared)
_PASCAL_KEY = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# Where each action type keeps the remote party (camelCase after folding).
_REMOTE_IP_ACTIONS = (
    "networkConnectionAction",
    "awsApiCallAction",
    "kubernetesApiCallAction",
    "rdsLoginAttemptAction",
)


def severity_band(severity: float) -> Band:
    """GuardDuty's bands: low 1.0-3.9, medium 4.0-6.9, high 7.0-8.9, critical 9.0-10.0."""
    if severity >= 9.0:
        return "critical"
    if severity >= 7.0:
        return "high"
    if severity >= 4.0:
        return "medium"
    return "low"


@dataclass(frozen=True, slots=True)
class NormalizedFinding:
    id: str
    type: str
    title: str
    description: str
    severity: float
    band: Band
    account_id: str | None
    region: str | None
    resource_type: str | None
    instance_id: str | None
    access_key_id: str | None
    user_name: str | None
    bucket_names: tuple[str, ...]
    cluster: str | None
    public_ips: tuple[str, ...]
    network_interface_ids: tuple[str, ...]
    remote_ip: str | None
    remote_domain: str | None
    remote_asn: int | None
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    archived: bool
    sample: bool
    tags: Mapping[str, str] = field(default_factory=dict)
    # The other resource types' identifiers (GuardDuty's resource.<type>Details).
    db_instance_id: str | None = None  # rdsDbInstanceDetails.dbInstanceIdentifier
    db_shard_group_id: str | None = None  # rdsLimitlessDbDetails (shard group, else cluster)
    lambda_function: str | None = None  # lambdaDetails.functionName (else functionArn)
    container_id: str | None = None  # containerDetails.id (else name)
    volume_ids: tuple[str, ...] = ()  # Malware Protection: the EBS volumes scanned
    object_keys: tuple[str, ...] = ()  # Malware Protection for S3: the objects scanned
    process: str | None = None  # Runtime Monitoring: the process (executable path or name)
    # accessKeyDetails.userType: IAMUser, AssumedRole, Root, Federated (what containment acts on)
    user_type: str | None = None
    # Injected by incident-bot's own drills (`"drill": true` in additionalInfo), never by AWS.
    drill: bool = False
    # How it arrived: "guardduty", or "securityhub" (ASFF, commands/findings/asff.py).
    origin: str = "guardduty"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def resource_id(self) -> str | None:
        """The id of the affected resource: what an incident is keyed on and containment targets."""
        return self._resource[1]

    @property
    def resource_kind(self) -> str | None:
        """The GuardDuty resource type `resource_id` names.

        The finding's own type, except where its identifier is another resource's: a
        Container finding without a container id is keyed on its host instance (Instance),
        and a Malware Protection for S3 finding (S3Object) on its bucket (S3Bucket), so
        they join the incident of that instance or bucket.
        """
        return self._resource[0]

    @property
    def _resource(self) -> tuple[str | None, str | None]:
        bucket = self.bucket_names[0] if self.bucket_names else None
        by_kind: dict[str, str | None] = {
            "Instance": self.instance_id,
            "AccessKey": self.access_key_id,
            "S3Bucket": bucket,
            "EKSCluster": self.cluster,
            "ECSCluster": self.cluster,
            "RDSDBInstance": self.db_instance_id,
            "RDSLimitlessDB": self.db_shard_group_id,
            "Lambda": self.lambda_function,
            "Container": self.container_id,
        }
        kind = self.resource_type
        if kind is not None and by_kind.get(kind):
            return kind, by_kind[kind]
        if kind == "Container" and self.instance_id:
            return "Instance", self.instance_id
        if kind == "S3Object" and bucket:
            return "S3Bucket", bucket
        # Unknown or empty type: the first identifier the finding carries.
        for fallback, value in by_kind.items():
            if value:
                return fallback, value
        return kind, None


def loads(body: bytes | str) -> Any:
    """Parse a request body as JSON, with a one-line reason when it is not."""
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFinding(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadFinding("malformed JSON: nested too deeply") from None
    _refuse_lone_surrogates(body, parsed)
    return parsed


# A \uD800-\uDFFF escape: JSON allows it unpaired, UTF-8 (and so the database) does not.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(body: bytes | str, parsed: Any) -> None:
    """Refuse a payload with an unpaired surrogate anywhere, also in fields never read here:
    the raw finding is stored as JSON too. Only bodies with such an escape are re-encoded."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if not _SURROGATE_ESCAPE.search(text):
        return
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadFinding("malformed JSON: an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None


def normalize(payload: Any) -> list[NormalizedFinding]:
    """Every finding in the payload, in order.

    Raises Ignored when the payload is well-formed but carries no finding (another
    `aws.guardduty` detail-type, an SNS confirmation or announcement), and BadFinding when any
    part of it is malformed: the caller stores all of them or none.
    """
    findings = _unwrap(payload, depth=0, context={})
    return findings


def normalize_finding(
    detail: Any, *, region: str | None = None, account_id: str | None = None
) -> NormalizedFinding:
    """One bare finding (camelCase or PascalCase); region/account fill in from the envelope."""
    if not isinstance(detail, Mapping):
        raise BadFinding(f"finding must be a JSON object, got {type(detail).__name__}")
    # camelCase (EventBridge, SNS, the wire API) is read as it is; only PascalCase (boto3)
    # needs its keys folded, which copies the whole finding.
    folded = _fold_keys(detail, depth=0) if _is_pascal(detail) else detail
    return _build(folded, raw=detail, region=region, account_id=account_id)


def _is_pascal(detail: Mapping[str, Any]) -> bool:
    """GuardDuty payloads use one casing throughout; the top-level keys tell which."""
    if "id" in detail or "type" in detail:  # every camelCase finding has them: skip the scan
        return False
    return any(isinstance(k, str) and _PASCAL_KEY.match(k) for k in detail)


def _unwrap(payload: Any, *, depth: int, context: dict[str, str]) -> list[NormalizedFinding]:
    if depth > _MAX_WRAPPING:
        raise BadFinding("payload is wrapped too deeply")
    if not isinstance(payload, Mapping):
        raise BadFinding(f"payload must be a JSON object, got {type(payload).__name__}")
    if "Records" in payload:
        return _lambda_records(payload["Records"], depth=depth)
    kind = payload.get("Type")
    if isinstance(kind, str) and kind in SNS_MESSAGE_TYPES and "TopicArn" in payload:
        return _sns_message(payload, depth=depth)
    if "detail" in payload or "detail-type" in payload:
        return _eventbridge(payload, context=context)
    for key in ("Findings", "findings"):
        if key in payload:
            return _get_findings_response(payload[key], key=key, context=context)
    if "findingDetails" in payload or "featureDetails" in payload:
        log.debug("ignoring GuardDuty announcement %r", payload.get("type"))
        raise Ignored(f"GuardDuty announcement {payload.get('type')!r} carries no finding")
    return [normalize_finding(payload, **context)]


def _lambda_records(records: Any, *, depth: int) -> list[NormalizedFinding]:
    if not isinstance(records, list):
        raise BadFinding("Records must be a list")
    found: list[NormalizedFinding] = []
    ignored: list[str] = []
    for index, record in enumerate(records):
        sns = record.get("Sns") if isinstance(record, Mapping) else None
        if not isinstance(sns, Mapping):
            raise BadFinding(f"Records[{index}] has no Sns message")
        try:
            found.extend(_unwrap(sns, depth=depth + 1, context={}))
        except Ignored as exc:
            ignored.append(exc.reason)
        except BadFinding as exc:
            raise BadFinding(f"Records[{index}]: {exc.reason}") from None
    if not found and ignored:
        raise Ignored(ignored[0])
    return found


def _sns_message(message: Mapping[str, Any], *, depth: int) -> list[NormalizedFinding]:
    kind = message["Type"]
    if kind != "Notification":
        log.debug("ignoring SNS %s for %s", kind, message.get("TopicArn"))
        raise Ignored(f"SNS {kind} carries no finding")
    body = message.get("Message")
    if not isinstance(body, str):
        raise BadFinding("SNS Message must be a string")
    try:
        inner = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        raise BadFinding("SNS Message is not JSON") from None
    _refuse_lone_surrogates(body, inner)
    return _unwrap(inner, depth=depth + 1, context={})


def _eventbridge(event: Mapping[str, Any], *, context: dict[str, str]) -> list[NormalizedFinding]:
    detail_type = event.get("detail-type")
    source = event.get("source")
    if detail_type is not None and not isinstance(detail_type, str):
        raise BadFinding("detail-type must be a string")
    if source is not None and not isinstance(source, str):
        raise BadFinding("source must be a string")
    if source == asff.SECURITYHUB_SOURCE:
        return _securityhub(event, detail_type, context=context)
    if source is not None and source != GUARDDUTY_SOURCE:
        log.debug("ignoring event from source %r", source)
        raise Ignored(f"event source {source!r} is not {GUARDDUTY_SOURCE}")
    if detail_type is not None and detail_type != FINDING_DETAIL_TYPE:
        log.debug("ignoring %s event %r", GUARDDUTY_SOURCE, detail_type)
        raise Ignored(f"detail-type {detail_type!r} is not a finding")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise BadFinding("event detail must be a JSON object")
    envelope = {
        "region": coerce.identifier(event.get("region"), "region", limit=30)
        or context.get("region"),
        "account_id": coerce.identifier(event.get("account"), "account", limit=20)
        or context.get("account_id"),
    }
    return [normalize_finding(detail, **{k: v for k, v in envelope.items() if v})]


def _securityhub(
    event: Mapping[str, Any], detail_type: str | None, *, context: dict[str, str]
) -> list[NormalizedFinding]:
    if detail_type != asff.IMPORTED_DETAIL_TYPE:
        log.debug("ignoring %s event %r", asff.SECURITYHUB_SOURCE, detail_type)
        raise Ignored(f"detail-type {detail_type!r} is not {asff.IMPORTED_DETAIL_TYPE!r}")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise BadFinding("event detail must be a JSON object")
    found = asff.imported_findings(
        detail,
        region=coerce.identifier(event.get("region"), "region", limit=30) or context.get("region"),
        account_id=coerce.identifier(event.get("account"), "account", limit=20)
        or context.get("account_id"),
    )
    return [NormalizedFinding(band=severity_band(f["severity"]), **f) for f in found]


def _get_findings_response(
    findings: Any, *, key: str, context: dict[str, str]
) -> list[NormalizedFinding]:
    if not isinstance(findings, list):
        raise BadFinding(f"{key} must be a list")
    result = []
    for index, item in enumerate(findings):
        try:
            result.append(normalize_finding(item, **context))
        except BadFinding as exc:
            raise BadFinding(f"{key}[{index}]: {exc.reason}") from None
    return result


def _fold_keys(value: Any, *, depth: int) -> Any:
    """A copy with PascalCase keys turned camelCase (`InstanceId` -> `instanceId`)."""
    if depth > _MAX_NESTING:
        raise BadFinding("finding is nested too deeply")
    if isinstance(value, Mapping):
        return {_camel(key): _fold_keys(item, depth=depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_fold_keys(item, depth=depth + 1) for item in value]
    return value


def _camel(key: Any) -> Any:
    if isinstance(key, str) and _PASCAL_KEY.match(key):
        return key[0].lower() + key[1:]
    return key


def _obj(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """A nested object; null or absent reads as empty, any other type is malformed."""
    value = parent.get(key)
    if value is None:
        return _EMPTY
    if type(value) is not dict and not isinstance(value, Mapping):  # JSON gives dicts: fast
        raise BadFinding(f"{where}{key} must be an object, got {type(value).__name__}")
    return value


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadFinding(f"{where}{key} must be a list, got {type(value).__name__}")
    return value


def _build(
    f: Mapping[str, Any],
    *,
    raw: Mapping[str, Any],
    region: str | None,
    account_id: str | None,
) -> NormalizedFinding:
    finding_id = coerce.identifier(f.get("id"), "id")
    if not finding_id:
        raise BadFinding("finding has no id")
    finding_type = coerce.identifier(f.get("type"), "type")
    if not finding_type:
        raise BadFinding("finding has no type")
    if f.get("severity") is None:
        raise BadFinding("finding has no severity")
    severity = coerce.number(f["severity"], "severity")
    if not 0.0 <= severity <= 10.0:
        raise BadFinding(f"severity must be between 0 and 10, got {severity:g}")

    resource = _obj(f, "resource", "")
    service = _obj(f, "service", "")
    instance = _obj(resource, "instanceDetails", "resource.")
    access_key = _obj(resource, "accessKeyDetails", "resource.")
    interfaces = [
        eni
        for eni in _list(instance, "networkInterfaces", "resource.instanceDetails.")
        if isinstance(eni, Mapping)
    ]
    buckets = [b for b in _list(resource, "s3BucketDetails", "resource.") if isinstance(b, Mapping)]
    cluster = _first_text(resource, ("eksClusterDetails", "name"), ("ecsClusterDetails", "name"))
    remote_ip, remote_domain, remote_asn = _remote_party(_obj(service, "action", "service."))
    count = 1 if service.get("count") is None else coerce.count(service["count"], "count")
    archived = service.get("archived")
    additional = _obj(service, "additionalInfo", "service.")

    return NormalizedFinding(
        id=finding_id,
        type=finding_type,
        title=coerce.optional_text(f.get("title"), "title") or finding_type,
        description=coerce.optional_text(f.get("description"), "description") or "",
        severity=severity,
        band=severity_band(severity),
        account_id=coerce.identifier(f.get("accountId"), "accountId", limit=20) or account_id,
        region=coerce.identifier(f.get("region"), "region", limit=30) or region,
        resource_type=coerce.identifier(resource.get("resourceType"), "resourceType", limit=60),
        instance_id=coerce.identifier(instance.get("instanceId"), "instanceId"),
        access_key_id=coerce.identifier(access_key.get("accessKeyId"), "accessKeyId"),
        user_name=coerce.identifier(access_key.get("userName"), "userName"),
        user_type=coerce.optional_text(access_key.get("userType"), "userType"),
        bucket_names=_texts(b.get("name") for b in buckets),
        cluster=cluster,
        public_ips=_texts(eni.get("publicIp") for eni in interfaces),
        network_interface_ids=_texts(eni.get("networkInterfaceId") for eni in interfaces),
        remote_ip=remote_ip,
        remote_domain=remote_domain,
        remote_asn=remote_asn,
        count=count,
        first_seen=coerce.optional_timestamp(service.get("eventFirstSeen"), "eventFirstSeen"),
        last_seen=coerce.optional_timestamp(service.get("eventLastSeen"), "eventLastSeen"),
        created_at=coerce.optional_timestamp(f.get("createdAt"), "createdAt"),
        updated_at=coerce.optional_timestamp(f.get("updatedAt"), "updatedAt"),
        archived=False if archived is None else coerce.boolean(archived, "archived"),
        sample=_flag(additional, "sample"),
        drill=_flag(additional, "drill"),
        tags=_tags(_list(instance, "tags", "resource.instanceDetails.")),
        db_instance_id=_first_text(resource, ("rdsDbInstanceDetails", "dbInstanceIdentifier")),
        db_shard_group_id=_first_text(
            resource,
            ("rdsLimitlessDbDetails", "dbShardGroupIdentifier"),
            ("rdsLimitlessDbDetails", "dbClusterIdentifier"),
        ),
        lambda_function=_first_text(
            resource, ("lambdaDetails", "functionName"), ("lambdaDetails", "functionArn")
        ),
        container_id=_first_text(
            resource, ("containerDetails", "id"), ("containerDetails", "name")
        ),
        volume_ids=_volume_ids(resource, service),
        object_keys=_texts(
            o.get("key")
            for b in buckets
            for o in _list(b, "s3ObjectDetails", "s3BucketDetails.")
            if isinstance(o, Mapping)
        ),
        process=_process(service),
        raw=raw,
    )


def _first_text(parent: Mapping[str, Any], *paths: tuple[str, str]) -> str | None:
    """The first non-empty text at resource.<details>.<key>, in the order given."""
    for details, key in paths:
        value = coerce.identifier(_obj(parent, details, "resource.").get(key), f"{details}.{key}")
        if value and value.strip():
            return value.strip()
    return None


def _volume_ids(resource: Mapping[str, Any], service: Mapping[str, Any]) -> tuple[str, ...]:
    """EBS volumes a Malware Protection scan looked at (resource and scan details)."""
    volumes = _obj(resource, "ebsVolumeDetails", "resource.")
    found: list[Any] = []
    for key in ("scannedVolumeDetails", "skippedVolumeDetails"):
        found.extend(
            v.get("volumeArn") or v.get("volumeId")
            for v in _list(volumes, key, "ebsVolumeDetails.")
            if isinstance(v, Mapping)
        )
    return _texts(str(v).rsplit("/", 1)[-1] for v in found if isinstance(v, str))


def _process(service: Mapping[str, Any]) -> str | None:
    """Runtime Monitoring: the process behind the finding (path, else name)."""
    process = _obj(_obj(service, "runtimeDetails", "service."), "process", "runtimeDetails.")
    for key in ("executablePath", "name"):
        value = process.get(key)
        if isinstance(value, str) and value.strip() and coerce.storable(value.strip()):
            return value.strip()
    return None


def _texts(values: Any) -> tuple[str, ...]:
    """The non-empty strings among values, in order, without duplicates (leaving out any the
    database could not store: over-long, NUL, unpaired surrogates)."""
    seen: dict[str, None] = {}
    for value in values:
        if isinstance(value, str) and value.strip() and coerce.storable(value.strip()):
            seen.setdefault(value.strip(), None)
    return tuple(seen)


def _tags(items: list[Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            value = item.get("value")
            tags[item["key"]] = value if isinstance(value, str) else ""
    return tags


def _remote_party(action: Mapping[str, Any]) -> tuple[str | None, str | None, int | None]:
    """(remote IP, remote domain, ASN) from whichever action the finding carries."""
    details: list[Mapping[str, Any]] = []
    for name in _REMOTE_IP_ACTIONS:
        remote = _obj(_obj(action, name, "service.action."), "remoteIpDetails", f"{name}.")
        if remote:
            details.append(remote)
    probe = _obj(action, "portProbeAction", "service.action.")
    for item in _list(probe, "portProbeDetails", "portProbeAction."):
        if isinstance(item, Mapping):
            remote = _obj(item, "remoteIpDetails", "portProbeDetails.")
            if remote:
                details.append(remote)
    ip = asn = None
    for remote in details:
        ip = coerce.optional_text(remote.get("ipAddressV4"), "ipAddressV4") or (
            coerce.optional_text(remote.get("ipAddressV6"), "ipAddressV6")
        )
        asn = _asn(_obj(remote, "organization", "remoteIpDetails.").get("asn"))
        if ip:
            break
    domain = coerce.optional_text(
        _obj(action, "dnsRequestAction", "service.action.").get("domain"), "domain"
    ) or coerce.optional_text(
        _obj(_obj(action, "awsApiCallAction", "service.action."), "domainDetails", "").get(
            "domain"
        ),
        "domain",
    )
    return ip, domain, asn


def _asn(value: Any) -> int | None:
    """GuardDuty writes an unknown ASN as -1 or "-1"; both read as None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    asn = coerce.integer(value, "asn")
    return None if asn < 0 else asn


def _flag(info: Mapping[str, Any], name: str) -> bool:
    """Samples (and drills) say so in `additionalInfo.<name>` or in the JSON string
    `additionalInfo.value`."""
    flag = info.get(name)
    if flag is not None and _truthy(flag):
        return True
    value = info.get("value")
    if isinstance(value, str) and name in value:
        try:
            decoded = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return False
        return isinstance(decoded, Mapping) and _truthy(decoded.get(name))
    return False


def _truthy(flag: Any) -> bool:
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")
