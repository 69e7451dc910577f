"""`POST /guardduty/events`: findings pushed by EventBridge (API destination) or SNS.

Order of checks, each refusal a 4xx with a one-line reason for the sender:
1. the ingest token: `Authorization: Bearer $INCIDENT_BOT_INGEST_TOKEN` (or HTTP Basic with
   the token as password, which is how an SNS HTTPS subscription URL carries credentials);
   without a configured token every request is refused;
2. at most 256 KB (EventBridge's and SNS's own message limit);
3. JSON;
4. SNS envelopes (HTTP body or Lambda records): a valid SNS signature, from a topic listed in
   `guardduty.sns_topic_arns`; a SubscriptionConfirmation for such a topic is confirmed;
5. the findings themselves (commands.findings.normalize); other detail-types are accepted
   and ignored (202) so EventBridge does not retry them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.guardduty.intake import intake
from bot.guardduty.sns import SnsRejected, SnsVerifier, confirm_subscription, is_sns_message
from commands.findings.errors import BadFinding, Ignored
from commands.findings.normalize import loads, normalize

if TYPE_CHECKING:
    from bot.http import HttpRequest, HttpResponse
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

PATH = "/guardduty/events"
MAX_PAYLOAD = 256 * 1024


def _reply(status: int, **body: Any) -> HttpResponse:
    from bot.http import HttpResponse

    return HttpResponse(status, {"ok": status < 300, **body})


def _refuse(status: int, reason: str) -> HttpResponse:
    return _reply(status, error=reason.splitlines()[0][:300])


def handle_events(request: HttpRequest) -> HttpResponse:
    runtime = request.runtime
    refusal = _authenticate(runtime, request.header("authorization"))
    if refusal is not None:
        return refusal
    if len(request.body) > MAX_PAYLOAD:
        return _refuse(413, f"payload is {len(request.body)} bytes; the limit is 256 KB")
    try:
        payload = loads(request.body)
    except BadFinding as exc:
        return _refuse(400, exc.reason)
    try:
        confirmed = _check_sns(runtime, payload)
    except SnsRejected as exc:
        log.warning("refused SNS message: %s", exc)
        return _refuse(403, str(exc))
    if confirmed is not None:
        return confirmed
    try:
        findings = normalize(payload)
    except Ignored as exc:
        return _reply(202, ignored=exc.reason)
    except BadFinding as exc:
        log.info("refused GuardDuty payload: %s", exc)
        return _refuse(400, exc.reason)
    results = intake(runtime, findings)
    return _reply(
        200,
        findings=len(results),
        opened=[r.incident_key for r in results if r.outcome == "opened"],
        joined=sum(r.outcome == "joined" for r in results),
        repeats=sum(r.outcome == "repeat" for r in results),
        recorded_only=sum(r.outcome == "recorded" for r in results),
    )


def _authenticate(runtime: Runtime, header: str) -> HttpResponse | None:
    secret = runtime.settings.env.ingest_token
    # Settings refuse a blank token at start; a blank one here still never matches a blank
    # password (`Authorization: Basic` of "x: ").
    if secret is None or not secret.get_secret_value().strip():
        return _refuse(401, "ingest is disabled: INCIDENT_BOT_INGEST_TOKEN is not set")
    token = secret.get_secret_value().encode()
    scheme, _, credentials = header.strip().partition(" ")
    presented = b""
    if scheme.lower() == "bearer":
        presented = credentials.strip().encode()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        presented = decoded.partition(b":")[2]
    if not header:
        return _refuse(401, "missing Authorization: Bearer <INCIDENT_BOT_INGEST_TOKEN>")
    if not presented or not hmac.compare_digest(presented, token):
        return _refuse(401, "invalid ingest token")
    return None


def verifier(runtime: Runtime) -> SnsVerifier:
    if runtime.options.sns_verifier is not None:
        return runtime.options.sns_verifier
    services = runtime.services
    with services.create_lock:
        if services.sns_verifier is None:
            services.sns_verifier = SnsVerifier()
        return services.sns_verifier


def _check_sns(runtime: Runtime, payload: Any) -> HttpResponse | None:
    """Verify SNS envelopes; answer confirmations here (None: go on to the findings)."""
    if not isinstance(payload, Mapping):
        return None
    messages: list[Mapping[str, Any]] = []
    if is_sns_message(payload):
        messages.append(payload)
    records = payload.get("Records")
    if isinstance(records, list):
        for record in records:
            sns = record.get("Sns") if isinstance(record, Mapping) else None
            if isinstance(sns, Mapping):
                if not is_sns_message(sns):
                    raise SnsRejected("Lambda record carries no signed SNS message")
                messages.append(sns)
    allowed = runtime.config.guardduty.sns_topic_arns
    for message in messages:
        verifier(runtime).verify(message)
        topic = message.get("TopicArn")
        if topic not in allowed:
            raise SnsRejected(f"SNS topic {str(topic)[:200]} is not in guardduty.sns_topic_arns")
    if len(messages) == 1 and messages[0] is payload:
        kind = payload["Type"]
        if kind == "SubscriptionConfirmation":
            topic = confirm_subscription(
                payload, allowed_topic_arns=allowed, get=runtime.options.sns_confirm_get
            )
            return _reply(200, confirmed=topic)
        if kind == "UnsubscribeConfirmation":
            log.warning("SNS topic %s unsubscribed this endpoint", payload.get("TopicArn"))
            return _reply(202, ignored="SNS UnsubscribeConfirmation")
    return None
