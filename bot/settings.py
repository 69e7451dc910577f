"""Settings: the environment (secrets, URLs) plus the YAML configuration file.

Every problem is reported as one line naming the key, e.g.
`incident-bot.yml: approvals.expire_after_minutes: Input should be a valid number`.
Secrets are SecretStr, so they never show up in logs or repr().
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from storage.timeline import TimelineKey


class SettingsError(Exception):
    """A configuration problem, already phrased as one line for the operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackConfig(_Section):
    incident_channel: str | None = None
    channel_per_incident: bool = False
    # Bot IDs (AWS Chatbot, SNS-to-Slack) whose channel messages may carry finding JSON.
    trusted_bot_ids: list[str] = Field(default_factory=list)
    # Keep to Slack's published rate limits (bot/slack_out.py `Pace`) before Slack has to
    # enforce them. Off only against an instant, unlimited test double.
    pace: bool = True


class ApprovalsConfig(_Section):
    approvers: list[str] = Field(default_factory=list)
    two_person_rule: bool = True
    expire_after_minutes: float = Field(default=30, gt=0)
    # A GuardDuty finding at or above this severity requests containment by itself; null: never.
    auto_request_min_severity: float | None = Field(default=7.0, ge=0, le=10)


class GuardDutyConfig(_Section):
    min_severity: float = Field(default=4.0, ge=0, le=10)
    poll_interval_seconds: int = Field(default=60, ge=0)
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"])
    # SNS topics whose SubscriptionConfirmation we accept.
    sns_topic_arns: list[str] = Field(default_factory=list)
    # On close, archive the incident's GuardDuty findings (guardduty:ArchiveFindings).
    archive_on_close: bool = False


class SecurityHubConfig(_Section):
    # On close, set the incident's findings' workflow status to RESOLVED in Security Hub
    # (securityhub:BatchUpdateFindings), with a note naming the incident.
    enabled: bool = False


class ContainmentConfig(_Section):
    evidence_bucket: str | None = None
    evidence_kms_key_id: str | None = None
    # Without evidence_kms_key_id: encrypt each incident's evidence under its own KMS key, so
    # the wipe's key deletion crypto-shreds that incident alone.
    per_incident_kms_key: bool = True
    dry_run: bool = False
    isolation_group_name: str = "incident-bot-isolation"
    # Networks the isolation group still admits (all protocols, inbound), so examiners can
    # reach an isolated instance for live response; empty: the group admits nothing.
    examiner_cidrs: list[str] = Field(default_factory=list)

    @field_validator("examiner_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        out = []
        for cidr in v:
            try:
                net = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR: write e.g. 198.51.100.0/24") from None
            if net.prefixlen == 0:
                raise ValueError(f"{cidr!r} admits everyone: name the examiners' networks")
            out.append(str(net))
        return out

    # Role assumed in member accounts (GuardDuty administrator setups).
    cross_account_role_name: str | None = None
    external_id: str | None = None
    flow_logs: bool = False
    # Volatile capture (SSM Run Command) before isolation: "high" adds it to the plans of high
    # and critical incidents, "always" to every instance plan, "never" only when /contain asks
    # for it (`--volatile`); `--no-volatile` leaves it out of one plan.
    volatile_capture: Literal["high", "always", "never"] = "high"
    # Timeline anchors written to the evidence bucket stay locked (compliance mode) this long.
    anchor_retention_days: int = Field(default=730, ge=1)
    # Evidence objects are written under S3 Object Lock in this mode, retained this long,
    # when their bucket has Object Lock enabled (else the bot says they are not locked).
    evidence_lock_mode: Literal["compliance", "governance"] = "compliance"
    evidence_retention_days: int = Field(default=365, ge=1)


class ContactsConfig(_Section):
    sns_topic_arn: str | None = None
    slack_usergroup: str | None = None
    emails: list[str] = Field(default_factory=list)
    # E-mails are sent through SES from this (verified) address; null: listed, not sent.
    ses_sender: str | None = None
    ses_region: str | None = None  # null: us-east-1


class OncallConfig(_Section):
    """Who is pinged while a GuardDuty incident has no owner, and how often."""

    # A Slack user-group ID (S0ONCALL): mentioned in the incident's thread until someone
    # takes it; null: no pings.
    slack_usergroup: str | None = None
    ping_every_minutes: float = Field(default=15, gt=0)


class DeadlinesConfig(_Section):
    gdpr_hours: float = Field(default=72, gt=0)
    reminder_hours_before: list[float] = Field(default_factory=lambda: [48, 24, 6, 1])
    overdue_every_hours: float = Field(default=12, gt=0)
    stale_after_hours: float = Field(default=24, gt=0)
    digest_time: str = "09:00"
    timezone: str = "UTC"
    # Resources tagged with one of these values start the regulator clock.
    personal_data_tags: dict[str, list[str]] = Field(
        default_factory=lambda: {"DataClassification": ["PII", "Confidential"]}
    )

    @field_validator("reminder_hours_before")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(h <= 0 for h in v):
            raise ValueError("every value must be greater than 0")
        return sorted(v, reverse=True)

    @field_validator("digest_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError("must be HH:MM in 24-hour time, e.g. 09:00")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown timezone (use an IANA name like Europe/Berlin)") from exc
        return v

    @property
    def digest_clock(self) -> dt.time:
        h, m = self.digest_time.split(":")
        return dt.time(int(h), int(m), tzinfo=ZoneInfo(self.timezone))


class ImpactConfig(_Section):
    tag_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "name": "Name",
            "data_classification": "DataClassification",
            "criticality": "Criticality",
            "owner": "Owner",
            "application": "Application",
        }
    )


class ForensicsConfig(_Section):
    vpc_cidr: str = "10.99.0.0/16"
    ami_id: str | None = None  # in the forensic account when account_id is set
    instance_type: str = "t3.medium"
    # The forensic account: snapshots are shared with it and copied under its own KMS key,
    # evidence objects go to its bucket, the clean room is built there. null: the bot's own.
    account_id: str | None = None
    role_name: str | None = None  # assumed there; null: containment.cross_account_role_name
    external_id: str | None = None  # null: containment.external_id
    evidence_bucket: str | None = None  # in the forensic account; null: containment's name
    kms_key_id: str | None = None  # for the snapshot copies; null: its default EBS key

    @field_validator("account_id", mode="before")
    @classmethod
    def _account(cls, v: Any) -> Any:
        if v is None:
            return None
        text = str(v).strip()
        if not re.fullmatch(r"\d{12}", text):
            raise ValueError("must be a 12-digit AWS account id, quoted: '111122223333'")
        return text


class WipeConfig(_Section):
    kms_pending_days: int = Field(default=30, ge=7, le=30)


class DrillsConfig(_Section):
    """`/incident drill` rehearses against these sandbox resources (never production)."""

    region: str | None = None  # default: the first guardduty.regions entry
    instance_id: str | None = None
    access_key_id: str | None = None
    user_name: str | None = None
    # false: drill containment runs as a dry run; true: the sandbox really gets isolated.
    allow_changes: bool = False


class AppConfig(_Section):
    slack: SlackConfig = Field(default_factory=SlackConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    guardduty: GuardDutyConfig = Field(default_factory=GuardDutyConfig)
    securityhub: SecurityHubConfig = Field(default_factory=SecurityHubConfig)
    containment: ContainmentConfig = Field(default_factory=ContainmentConfig)
    contacts: ContactsConfig = Field(default_factory=ContactsConfig)
    oncall: OncallConfig = Field(default_factory=OncallConfig)
    deadlines: DeadlinesConfig = Field(default_factory=DeadlinesConfig)
    impact: ImpactConfig = Field(default_factory=ImpactConfig)
    forensics: ForensicsConfig = Field(default_factory=ForensicsConfig)
    wipe: WipeConfig = Field(default_factory=WipeConfig)
    drills: DrillsConfig = Field(default_factory=DrillsConfig)

    @model_validator(mode="after")
    def _forensic_role(self) -> AppConfig:
        f = self.forensics
        if f.account_id and not (f.role_name or self.containment.cross_account_role_name):
            raise ValueError(
                "forensics.account_id needs a role to assume there: set forensics.role_name"
            )
        if f.account_id and not (f.evidence_bucket or self.containment.evidence_bucket):
            raise ValueError(
                "forensics.account_id needs the forensic account's bucket: set "
                "forensics.evidence_bucket"
            )
        return self


class EnvSettings(BaseSettings):
    """What comes from the environment (DESIGN.md's table)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET"
    )
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(
        default="https://slack.com/api/", validation_alias="INCIDENT_BOT_SLACK_API_URL"
    )
    database_url: str = Field(default="sqlite:///incident-bot.db", validation_alias="DATABASE_URL")
    config_path: Path = Field(
        default=Path("incident-bot.yml"),
        validation_alias=AliasChoices("INCIDENT_BOT_CONFIG"),
    )
    ingest_token: SecretStr | None = Field(
        default=None, validation_alias="INCIDENT_BOT_INGEST_TOKEN"
    )
    # Keys the timeline's hash chains; never stored in the database. Unset: unkeyed mode.
    timeline_key: SecretStr | None = Field(
        default=None, validation_alias="INCIDENT_BOT_TIMELINE_KEY"
    )

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token", "ingest_token")
    @classmethod
    def _credential(cls, v: SecretStr | None) -> SecretStr | None:
        # A blank secret used to start a bot that refused every request (or, for the ingest
        # token, accepted a blank password); whitespace around one never survives a header.
        if v is None:
            return v
        value = v.get_secret_value()
        if not value.strip():
            raise ValueError("is set but empty; set the real value or unset the variable")
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        return v

    @field_validator("timeline_key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (e.g. from `openssl rand -hex 32`)")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"https?://", v):
            raise ValueError("must be an http(s) URL")
        return v if v.endswith("/") else v + "/"

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not re.match(r"(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError("must be a sqlite:/// or postgresql:// SQLAlchemy URL")
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v.removeprefix("postgresql://")
        return v


ENV_NAMES = {
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN",
    "slack_api_url": "INCIDENT_BOT_SLACK_API_URL",
    "database_url": "DATABASE_URL",
    "config_path": "INCIDENT_BOT_CONFIG",
    "ingest_token": "INCIDENT_BOT_INGEST_TOKEN",
    "timeline_key": "INCIDENT_BOT_TIMELINE_KEY",
}


class Settings(BaseModel):
    env: EnvSettings
    config: AppConfig

    # Shortcuts for the values most code needs.
    @property
    def database_url(self) -> str:
        return self.env.database_url

    def timeline_key(self) -> TimelineKey | None:
        """The key for timeline chains (None: unkeyed mode, chains are plain SHA-256)."""
        from storage.timeline import TimelineKey

        secret = self.env.timeline_key
        return TimelineKey.from_secret(secret.get_secret_value()) if secret else None

    def require_slack(self) -> None:
        """Raise SettingsError naming what `run` still needs."""
        missing = []
        if self.env.slack_bot_token is None:
            missing.append("SLACK_BOT_TOKEN")
        if self.env.slack_app_token is None and self.env.slack_signing_secret is None:
            missing.append("SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode)")
        if missing:
            raise SettingsError(
                "missing Slack credentials: set " + " and ".join(missing) + " in the environment"
            )
        if not self.config.slack.incident_channel:
            raise SettingsError(
                f"{self.env.config_path}: slack.incident_channel: required "
                "(the channel ID incidents are posted to, e.g. C0INCIDENT)"
            )


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against the README's configuration reference)"
    elif err["type"] == "missing":
        msg = "required"
    value = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden") and isinstance(value, str | int | float):
        msg += f" (got {value!r})"
    if not loc:  # a rule across sections: its message names the keys
        return str(msg).removeprefix("Value error, ")
    return f"{loc}: {msg}"


def load_env(environ: dict[str, str] | None = None) -> EnvSettings:
    environ = dict(os.environ if environ is None else environ)
    data = {k: environ[v] for k, v in ENV_NAMES.items() if v in environ}
    try:
        return EnvSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ENV_NAMES.get(str(err["loc"][0]), str(err["loc"][0]))
        raise SettingsError(f"{name}: {err['msg']} (check the environment)") from None


def load_config(path: Path, *, explicit: bool) -> AppConfig:
    if not path.exists():
        if explicit:
            raise SettingsError(f"INCIDENT_BOT_CONFIG: {path} does not exist")
        return AppConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SettingsError(f"{path}:{where} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: must be a mapping of sections (slack:, approvals:, ...)")
    try:
        return AppConfig.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(f"{path}: {_describe(exc.errors()[0])}") from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    env = load_env(environ)
    config = load_config(env.config_path, explicit="INCIDENT_BOT_CONFIG" in environ)
    return Settings(env=env, config=config)
