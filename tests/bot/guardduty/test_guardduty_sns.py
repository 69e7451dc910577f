"""SNS signature verification with a locally generated key and certificate."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from bot.guardduty.sns import (
    SnsRejected,
    SnsVerifier,
    check_sns_url,
    confirm_subscription,
    is_sns_message,
    string_to_sign,
)
from tests.fixture_paths import FIXTURES

SNS_DIR = FIXTURES / "sns"
CERT_URL = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"


def make_certificate(
    key: Any, *, days: int = 1, start: datetime | None = None, hash_: Any = None
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = start or datetime.now(UTC) - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(key, hash_ or hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(key: rsa.RSAPrivateKey) -> bytes:
    return make_certificate(key)


class Fetcher:
    """Serves certificates by URL and counts downloads."""

    def __init__(self, certs: dict[str, bytes]) -> None:
        self.certs = certs
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.certs[url]


def sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> dict[str, Any]:
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signed = {**message, "SignatureVersion": version}
    signature = key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def fixture(name: str) -> dict[str, Any]:
    return json.loads((SNS_DIR / name).read_text())


NOTIFICATION = fixture("awsdocs-sns__http-Notification.json")
SUBSCRIBE = fixture("awsdocs-sns__http-SubscriptionConfirmation.json")
UNSUBSCRIBE = fixture("awsdocs-sns__http-UnsubscribeConfirmation.json")


def test_canonical_notification_string_follows_the_docs() -> None:
    assert string_to_sign(NOTIFICATION).decode() == (
        "Message\nHello world!\n"
        "MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n"
        "Subject\nMy First Message\n"
        "Timestamp\n2012-05-02T00:54:06.655Z\n"
        "TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n"
        "Type\nNotification\n"
    )


def test_canonical_string_leaves_out_a_missing_or_null_subject() -> None:
    without = {k: v for k, v in NOTIFICATION.items() if k != "Subject"}
    assert string_to_sign({**NOTIFICATION, "Subject": None}) == string_to_sign(without)
    assert b"Subject" not in string_to_sign(without)


def test_canonical_confirmation_string_follows_the_docs() -> None:
    assert string_to_sign(SUBSCRIBE).decode() == (
        "Message\n" + SUBSCRIBE["Message"] + "\n"
        "MessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n"
        "SubscribeURL\n" + SUBSCRIBE["SubscribeURL"] + "\n"
        "Timestamp\n2012-04-26T20:45:04.751Z\n"
        "Token\n2336412f37...\n"
        "TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n"
        "Type\nSubscriptionConfirmation\n"
    )


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("message", [NOTIFICATION, SUBSCRIBE, UNSUBSCRIBE])
def test_signed_messages_verify(
    message: dict[str, Any], version: str, key: rsa.RSAPrivateKey, pem: bytes
) -> None:
    fetch = Fetcher({CERT_URL: pem})
    signed = sign(message, key, version)
    assert is_sns_message(signed)
    SnsVerifier(fetch=fetch).verify(signed)
    assert fetch.calls == [CERT_URL]


def test_lambda_record_casing_verifies(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    record = fixture("notify-slack__lambda-sns-record__guardduty_finding.json")["Records"][0]
    sns = {**record["Sns"], "Subject": None, "SigningCertUrl": CERT_URL}
    SnsVerifier(fetch=Fetcher({CERT_URL: pem})).verify(sign(sns, key, "2"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(Message="Goodbye world!"),
        lambda m: m.update(TopicArn="arn:aws:sns:us-west-2:123456789012:Other"),
        lambda m: m.update(Subject="Changed"),
        lambda m: m.pop("Subject"),
        lambda m: m.update(Timestamp="2012-05-02T00:54:07.655Z"),
        lambda m: m.update(SignatureVersion="2"),  # same bytes, other hash
    ],
)
def test_tampered_messages_are_refused(
    tamper: Callable[[dict[str, Any]], Any], key: rsa.RSAPrivateKey, pem: bytes
) -> None:
    message = sign(NOTIFICATION, key)
    tamper(message)
    with pytest.raises(SnsRejected, match="signature does not match"):
        SnsVerifier(fetch=Fetcher({CERT_URL: pem})).verify(message)


def test_documented_aws_signature_fails_against_a_foreign_certificate(pem: bytes) -> None:
    real = fixture(
        "awsdocs-guardduty__guardduty-announcements__new-findings__sns-notification.json"
    )
    fetch = Fetcher({real["SigningCertURL"]: pem})
    with pytest.raises(SnsRejected, match="signature does not match"):
        SnsVerifier(fetch=fetch).verify(real)


def test_another_key_is_refused(key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = sign(NOTIFICATION, other)
    with pytest.raises(SnsRejected, match="signature does not match"):
        SnsVerifier(fetch=Fetcher({CERT_URL: make_certificate(key)})).verify(message)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com:8443/cert.pem",
        "https://user@sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com/cert.txt",
        "https://s3.us-west-2.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
        "https://xsns.us-west-2.amazonaws.com/cert.pem",
        "EXAMPLE",  # the Lambda fixture's placeholder
        "",
    ],
)
def test_certificates_come_only_from_sns_hosts(
    url: str, key: rsa.RSAPrivateKey, pem: bytes
) -> None:
    fetch = Fetcher({url: pem})
    message = sign({**NOTIFICATION, "SigningCertURL": url}, key)
    with pytest.raises(SnsRejected, match="SigningCertURL"):
        SnsVerifier(fetch=fetch).verify(message)
    assert fetch.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-x.pem",
    ],
)
def test_sns_hosts_of_other_partitions_are_allowed(url: str) -> None:
    check_sns_url(url, what="SigningCertURL", pem=True)


def test_certificate_is_cached(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    fetch = Fetcher({CERT_URL: pem})
    verifier = SnsVerifier(fetch=fetch)
    for text in ("one", "two", "three"):
        verifier.verify(sign({**NOTIFICATION, "Message": text}, key))
    assert fetch.calls == [CERT_URL]


def test_cache_is_bounded(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    urls = [CERT_URL.replace(".pem", f"-{n}.pem") for n in range(3)]
    fetch = Fetcher(dict.fromkeys(urls, pem))
    verifier = SnsVerifier(fetch=fetch, cache_size=2)
    for url in [*urls, urls[0]]:
        verifier.verify(sign({**NOTIFICATION, "SigningCertURL": url}, key))
    assert fetch.calls == [*urls, urls[0]]  # the first one was evicted


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"SignatureVersion": "3"}, "unsupported SNS SignatureVersion '3'"),
        ({"SignatureVersion": 1}, "unsupported SNS SignatureVersion 1"),
        ({"Signature": ""}, "no Signature"),
        ({"Signature": "not base64!"}, "not base64"),
        ({"SigningCertURL": None}, "no SigningCertURL"),
        ({"Type": "Mystery"}, "unknown SNS message type"),
        ({"Message": {"a": 1}}, "field Message must be a string"),
    ],
)
def test_malformed_messages_are_refused(
    change: dict[str, Any], reason: str, key: rsa.RSAPrivateKey, pem: bytes
) -> None:
    message = {**sign(NOTIFICATION, key), **change}
    with pytest.raises(SnsRejected, match=reason):
        SnsVerifier(fetch=Fetcher({CERT_URL: pem})).verify(message)


def test_fetch_failures_refuse_and_are_not_cached(key: rsa.RSAPrivateKey, pem: bytes) -> None:
    calls = []

    def flaky(url: str) -> bytes:
        calls.append(url)
        if len(calls) == 1:
            raise ConnectionError("timed out")
        return pem

    verifier = SnsVerifier(fetch=flaky)
    message = sign(NOTIFICATION, key)
    with pytest.raises(SnsRejected, match="could not be fetched"):
        verifier.verify(message)
    verifier.verify(message)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        (b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "not a PEM"),
        ("expired", "not valid now"),
        ("ec", "no RSA key"),
    ],
)
def test_unusable_certificates_are_refused(
    certificate: Any, reason: str, key: rsa.RSAPrivateKey
) -> None:
    if certificate == "expired":
        certificate = make_certificate(key, start=datetime.now(UTC) - timedelta(days=10))
    elif certificate == "ec":
        certificate = make_certificate(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SnsRejected, match=reason):
        SnsVerifier(fetch=Fetcher({CERT_URL: certificate})).verify(sign(NOTIFICATION, key))


# --- subscription confirmation -------------------------------------------------------------

TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"


def test_confirms_configured_topics_only() -> None:
    visited: list[str] = []
    assert confirm_subscription(SUBSCRIBE, allowed_topic_arns=[TOPIC], get=visited.append) == TOPIC
    assert visited == [SUBSCRIBE["SubscribeURL"]]
    with pytest.raises(SnsRejected, match="is not configured"):
        confirm_subscription(SUBSCRIBE, allowed_topic_arns=["arn:other"], get=visited.append)
    assert len(visited) == 1


def test_subscribe_url_must_be_sns() -> None:
    visited: list[str] = []
    evil = {**SUBSCRIBE, "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription"}
    with pytest.raises(SnsRejected, match="SubscribeURL is not an SNS URL"):
        confirm_subscription(evil, allowed_topic_arns=[TOPIC], get=visited.append)
    assert visited == []


def test_only_subscription_confirmations_are_confirmed() -> None:
    with pytest.raises(SnsRejected, match="not an SNS SubscriptionConfirmation"):
        confirm_subscription(UNSUBSCRIBE, allowed_topic_arns=[TOPIC], get=print)


def test_failed_confirmation_is_reported() -> None:
    def down(url: str) -> None:
        raise OSError("unreachable")

    with pytest.raises(SnsRejected, match="could not be confirmed"):
        confirm_subscription(SUBSCRIBE, allowed_topic_arns=[TOPIC], get=down)
