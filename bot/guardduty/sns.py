"""Amazon SNS message authenticity: signature verification and subscription confirmation.

Per the SNS developer guide ("Verifying the signatures of Amazon SNS messages"): build the
canonical string from the message's own fields, fetch the signing certificate only from an SNS
host over HTTPS, and check the RSA signature (SignatureVersion 1: SHA1, 2: SHA256). Lambda
records spell the certificate field `SigningCertUrl`; HTTP bodies spell it `SigningCertURL`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger(__name__)

# sns.<region>.amazonaws.com, and .com.cn for the China partitions.
_SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d+\.amazonaws\.com(?:\.cn)?$")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_FIELDS_BY_TYPE = {
    "Notification": _NOTIFICATION_FIELDS,
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
}
_MAX_CERT_BYTES = 64 * 1024
_FETCH_TIMEOUT_SECONDS = 5.0

CertificateFetcher = Callable[[str], bytes]


class SnsRejected(Exception):
    """The message is not an authentic SNS message we accept; the text is one line."""


def is_sns_message(payload: Any) -> bool:
    """SNS-shaped (signed or not): such a payload is only accepted after `verify`."""
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("Type"), str)
        and payload["Type"] in _FIELDS_BY_TYPE
        and "TopicArn" in payload
    )


def signing_cert_url(message: Mapping[str, Any]) -> str:
    url = message.get("SigningCertURL", message.get("SigningCertUrl"))
    if not isinstance(url, str) or not url:
        raise SnsRejected("SNS message has no SigningCertURL")
    return url


def check_sns_url(url: str, *, what: str, pem: bool) -> None:
    """Only HTTPS on a bare sns.<region>.amazonaws.com[.cn] host (no port, no user info)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if (
        parts.scheme != "https"
        or parts.netloc != host
        or not _SNS_HOST.match(host)
        or (pem and not parts.path.endswith(".pem"))
    ):
        raise SnsRejected(f"{what} is not an SNS URL: {url[:120]}")


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical `Key\\nValue\\n` string for the message's type, per the SNS docs."""
    kind = message.get("Type")
    fields = _FIELDS_BY_TYPE.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise SnsRejected(f"unknown SNS message type {kind!r}")
    lines: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue  # signed only when the message has one
        if not isinstance(value, str):
            raise SnsRejected(f"SNS {kind} field {name} must be a string")
        lines.extend((name, value))
    return ("\n".join(lines) + "\n").encode()


def fetch_certificate(url: str) -> bytes:
    """Download a signing certificate (the default fetcher)."""
    response = requests.get(url, timeout=_FETCH_TIMEOUT_SECONDS, allow_redirects=False)
    response.raise_for_status()
    if len(response.content) > _MAX_CERT_BYTES:
        raise ValueError("certificate too large")
    return response.content


class SnsVerifier:
    """Verifies SNS signatures, caching each certificate's public key by URL."""

    def __init__(self, *, fetch: CertificateFetcher = fetch_certificate, cache_size: int = 16):
        self._fetch = fetch
        self._cache_size = cache_size
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any]) -> None:
        """Return if the message is authentic; raise SnsRejected with a one-line reason if not."""
        version = message.get("SignatureVersion")
        algorithm = _HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise SnsRejected(f"unsupported SNS SignatureVersion {version!r}")
        signature = message.get("Signature")
        if not isinstance(signature, str) or not signature:
            raise SnsRejected("SNS message has no Signature")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SnsRejected("SNS Signature is not base64") from None
        url = signing_cert_url(message)
        check_sns_url(url, what="SigningCertURL", pem=True)
        data = string_to_sign(message)
        key = self._public_key(url)
        try:
            key.verify(raw_signature, data, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsRejected("SNS signature does not match the message") from None

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                self._keys.move_to_end(url)
                return key
        try:
            pem = self._fetch(url)
        except Exception as exc:  # any transport failure means we cannot trust the message
            log.warning("fetching SNS certificate %s failed: %s", url, exc)
            raise SnsRejected("SNS signing certificate could not be fetched") from None
        key = _rsa_key(pem)
        with self._lock:
            self._keys[url] = key
            while len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        return key


def _rsa_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise SnsRejected("SNS signing certificate is not a PEM certificate") from None
    # A real certificate's validity is judged on the machine's clock, deliberately.
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise SnsRejected("SNS signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRejected("SNS signing certificate has no RSA key")
    return key


def confirm_subscription(
    message: Mapping[str, Any],
    *,
    allowed_topic_arns: Collection[str],
    get: Callable[[str], Any] | None = None,
) -> str:
    """Visit the SubscribeURL of a verified SubscriptionConfirmation for an allowed topic.

    Returns the topic ARN. Topics not configured are refused, so a stranger's topic cannot
    subscribe the endpoint to its traffic.
    """
    if message.get("Type") != "SubscriptionConfirmation":
        raise SnsRejected("not an SNS SubscriptionConfirmation")
    topic = message.get("TopicArn")
    if not isinstance(topic, str) or topic not in allowed_topic_arns:
        raise SnsRejected(f"SNS topic {str(topic)[:200]} is not configured")
    url = message.get("SubscribeURL")
    if not isinstance(url, str):
        raise SnsRejected("SubscriptionConfirmation has no SubscribeURL")
    check_sns_url(url, what="SubscribeURL", pem=False)
    visit = get or _get
    try:
        visit(url)
    except Exception as exc:
        log.warning("confirming SNS subscription to %s failed: %s", topic, exc)
        raise SnsRejected("SNS subscription could not be confirmed") from None
    log.info("confirmed SNS subscription to %s", topic)
    return topic


def _get(url: str) -> None:
    response = requests.get(url, timeout=_FETCH_TIMEOUT_SECONDS, allow_redirects=False)
    response.raise_for_status()
