"""The HTTP-mode bot with GuardDuty intake configured: token, SNS topic, local SNS certificate."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from moto import mock_aws
from pydantic import SecretStr

from bot.guardduty.publisher import CardPublisher
from bot.guardduty.sns import SnsVerifier, string_to_sign
from tests.bot.conftest import BotUnderTest

INGEST_TOKEN = "ingest-token-for-tests"
TOPIC = "arn:aws:sns:us-east-1:123456789012:guardduty-findings"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
TRUSTED_BOT = "B0CHATBOT"


@pytest.fixture(scope="session")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def sns_pem(sns_key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.now(UTC) - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(sns_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .sign(sns_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class GuardDutyBot:
    bot: BotUnderTest
    key: rsa.RSAPrivateKey
    publisher: CardPublisher
    confirmed: list[str] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"{self.bot.url}/guardduty/events"

    def post(
        self,
        payload: Any,
        *,
        token: str | None = INGEST_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        return self.session.post(self.url, data=body, headers=sent, timeout=10)

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signed = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
        raw = self.key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(raw).decode()
        return signed

    def settle(self, timeout: float = 10.0) -> None:
        assert self.publisher.wait_idle(timeout), "cards still pending"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def guardduty_bot(
    aws: None,  # first: AWS stays mocked until the bot (its card worker) has stopped
    bot_factory: Callable[..., BotUnderTest],
    sns_key: rsa.RSAPrivateKey,
    sns_pem: bytes,
) -> Callable[..., GuardDutyBot]:
    def start(
        config: dict[str, Any] | None = None,
        *,
        update_interval: float = 0.2,
        propose: bool = False,
        storm: dict[str, float] | None = None,
    ) -> GuardDutyBot:
        base: dict[str, Any] = {
            "guardduty": {"sns_topic_arns": [TOPIC], "poll_interval_seconds": 0},
            "slack": {"trusted_bot_ids": [TRUSTED_BOT]},
        }
        for section, values in (config or {}).items():
            base.setdefault(section, {}).update(values)
        bot = bot_factory(base)
        runtime = bot.runtime
        # Another feature's card refresher (blast radius of new incidents): off here, so the
        # Slack calls these tests count are GuardDuty intake's own.
        sweeper = runtime.services.impact_sweeper
        if sweeper is not None:
            sweeper.stop()
        runtime.settings.env.ingest_token = SecretStr(INGEST_TOKEN)
        confirmed: list[str] = []
        options = runtime.options
        options.sns_verifier = SnsVerifier(fetch={CERT_URL: sns_pem}.__getitem__)
        options.sns_confirm_get = confirmed.append
        options.guardduty_clients = lambda service, region: boto3.client(
            service, region_name=region or "us-east-1"
        )
        options.guardduty_propose = propose
        publisher = CardPublisher(
            runtime,
            update_interval=update_interval,
            join_quiet=60,
            storm={"window": 2.0, "refresh": 0.2, **(storm or {})},
        )
        runtime.services.publisher = publisher
        runtime.on_shutdown(publisher.stop)
        return GuardDutyBot(bot=bot, key=sns_key, publisher=publisher, confirmed=confirmed)

    return start
