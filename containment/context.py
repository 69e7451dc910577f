"""Everything an action needs besides its target: incident identity, options, AWS clients."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from containment.clients import cached_client, make_client, shared_session
from containment.targets import Target

ClientHook = Callable[[BaseClient], None]
AwsRetryHook = Callable[[dict[str, Any]], None]

# Refresh assumed-role credentials this long before they expire.
_REFRESH_MARGIN = timedelta(minutes=5)

# Whose timeline an AWS retry belongs to, for clients shared by every run in the process:
# set by the executor from its context's `on_aws_retry` (containment/executor.py) and carried
# into its threads (containment.concurrency.ContextPool). A shared client's retry watcher reads
# it when the retry is sent, in the thread making the call.
_RETRIES_REPORTED_TO: ContextVar[AwsRetryHook | None] = ContextVar(
    "incident_bot_aws_retries", default=None
)


@contextmanager
def retries_reported_to(report: AwsRetryHook | None) -> Iterator[None]:
    """AWS retries of shared clients' calls made in this block (and in the threads it starts
    through ContextPool) go to `report`; None: to nobody."""
    token = _RETRIES_REPORTED_TO.set(report)
    try:
        yield
    finally:
        _RETRIES_REPORTED_TO.reset(token)


def _report_to_current_run(info: dict[str, Any]) -> None:
    report = _RETRIES_REPORTED_TO.get()
    if report is not None:
        report(info)


def shareable(hook: ClientHook) -> ClientHook:
    """Mark a client hook as holding no per-client or per-run state, so clients it was applied
    to may serve every context that has it (e.g. the in-process revoker)."""
    hook.incident_bot_shareable = True  # type: ignore[attr-defined]
    return hook


def _endpoint_settings(service: str) -> tuple[str | None, str | None]:
    """The endpoint environment a client is made with (emulators, tests): part of the shared
    clients' key, so a changed setting gets clients of its own."""
    name = service.upper().replace("-", "_")
    return os.environ.get("AWS_ENDPOINT_URL"), os.environ.get(f"AWS_ENDPOINT_URL_{name}")


@dataclass
class ActionContext:
    incident_key: str
    finding_id: str | None = None
    evidence_bucket: str | None = None
    evidence_kms_key_id: str | None = None  # None: the account's default aws/s3 key
    # With no configured key: encrypt evidence under a key made for this incident alone, so
    # scheduling that key's deletion crypto-shreds the incident's evidence (the wipe does).
    evidence_key_per_incident: bool = False
    evidence_prefix: str = "incidents/"
    dry_run: bool = False
    # A retry of an earlier attempt, which may have died mid-step (kill -9) after a create
    # took effect but before its step recorded it: creates AWS cannot look up cheaply (KMS
    # keys, found only by listing) look for what that attempt made before creating again.
    resuming: bool = False
    isolation_group_name: str = "incident-bot-isolation"
    # Examiner networks the isolation group still admits (containment.examiner_cidrs), so live
    # response stays possible after isolation; empty: no traffic at all.
    examiner_cidrs: tuple[str, ...] = ()
    # Per-incident all-open group that makes existing flows untracked before isolation.
    transit_group_prefix: str = "incident-bot-untracked"
    deny_all_profile_name: str = "incident-bot-deny-all"
    # Managed policy every role the bot creates carries (deploy/iam-permissions-boundary.json);
    # the generated IAM policy allows CreateRole only with it. None: create without one.
    permissions_boundary_name: str | None = "incident-bot-boundary"
    cross_account_role_name: str | None = None
    external_id: str | None = None
    # The forensic account (forensics.account_id): evidence objects go to its bucket, the
    # incident's snapshots are copied into it, the clean room is built there. None: the
    # bot's own account keeps the evidence.
    forensic_account_id: str | None = None
    forensic_role_name: str | None = None
    forensic_external_id: str | None = None
    forensic_kms_key_id: str | None = None  # None: the forensic account's default EBS key
    # Object Lock on evidence objects, when the bucket has it enabled.
    evidence_lock_mode: str = "COMPLIANCE"  # or "GOVERNANCE"
    evidence_retention_days: int = 365
    session_factory: Callable[[], boto3.Session] = shared_session
    # The caller's clock (storage/clock.py): evidence stamps, session-revocation cut-offs.
    now: Callable[[], datetime] = field(kw_only=True)
    sleep: Callable[[float], None] = time.sleep
    retry_mode: str = "standard"  # or "adaptive" (client-side rate limiting)
    max_attempts: int = 5  # attempts per call, the first included
    max_pool_connections: int = 32
    # Seconds: a call whose answer is lost is retried (and looked for) instead of hanging.
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # Told of every attempt botocore re-sends, with the failure it saw on the one before
    # (a lost answer, a 5xx, throttling): the caller records it on the timeline.
    on_aws_retry: AwsRetryHook | None = None
    # Called with every new client (tests register botocore event handlers here). Clients in
    # the bot's own account are shared with other contexts only when every hook is marked
    # `shareable`; any other hook gets this context clients of its own.
    client_hooks: tuple[ClientHook, ...] = ()

    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _base: boto3.Session | None = field(default=None, init=False, repr=False)
    _assumed: dict[tuple[str, str], tuple[dict[str, str], datetime]] = field(
        default_factory=dict, init=False, repr=False
    )
    _clients: dict[tuple[str, str, str | None, str | None, int | None], BaseClient] = field(
        default_factory=dict, init=False, repr=False
    )
    _inspections: dict[Target, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    # --- clients -------------------------------------------------------------------------

    def config(self, max_attempts: int | None = None) -> Config:
        return Config(
            # total attempts, first one included (botocore's "max_attempts" counts retries)
            retries={
                "mode": self.retry_mode,
                "total_max_attempts": max_attempts or self.max_attempts,
            },
            max_pool_connections=self.max_pool_connections,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def client(self, service: str, target: Target, *, max_attempts: int | None = None) -> Any:
        """A client acting in the target's account and region (AssumeRole when cross-account).

        `max_attempts=1` for optional evidence that is not worth retrying."""
        return self._client(service, target.region, target.account_id, max_attempts)

    def home_client(self, service: str, region: str, *, max_attempts: int | None = None) -> Any:
        """A client in the bot's own account (STS, timeline anchors)."""
        return self._client(service, region, None, max_attempts)

    def forensic_client(self, service: str, region: str, *, max_attempts: int | None = None) -> Any:
        """A client in the forensic account (AssumeRole into its role); without a forensic
        account, the bot's own account."""
        if not self.forensic_account_id:
            return self.home_client(service, region, max_attempts=max_attempts)
        return self._client(
            service, region, self.forensic_account_id, max_attempts, role=self.forensic_role()
        )

    # Where evidence objects and the per-incident evidence key live.
    evidence_client = forensic_client

    def forensic_role(self) -> tuple[str, str | None]:
        name = self.forensic_role_name or self.cross_account_role_name
        if not name:
            raise ValueError(
                "forensics.account_id is set without a role to assume there: set "
                "forensics.role_name"
            )
        return name, self.forensic_external_id or self.external_id

    def evidence_account(self) -> str:
        """Which account evidence is written in, as a plan says it."""
        if self.forensic_account_id:
            return f"forensic account {self.forensic_account_id}"
        return "the bot's own account"

    def _client(
        self,
        service: str,
        region: str,
        account_id: str | None,
        attempts: int | None = None,
        *,
        role: tuple[str, str | None] | None = None,
    ) -> Any:
        if role is None:
            if account_id and self.cross_account_role_name:
                role = (self.cross_account_role_name, self.external_id)
            else:
                account_id = None
        config = self.config(attempts)
        if (
            account_id is None
            and self.session_factory is shared_session
            and all(getattr(h, "incident_bot_shareable", False) for h in self.client_hooks)
        ):
            # The bot's own account: one client per configuration for every run in the
            # process (making one costs 3-15 ms of interpreter time, several per run). Retries
            # are told to the run making the call (retries_reported_to), not to a context.
            cfg = (
                self.retry_mode,
                attempts or self.max_attempts,
                self.max_pool_connections,
                self.connect_timeout,
                self.read_timeout,
            )
            return cached_client(
                ("context", service, region, *cfg, self.client_hooks, _endpoint_settings(service)),
                lambda: self._shared_client(service, region, config),
            )
        role_name = role[0] if role else None
        key = (service, region, account_id, role_name, attempts)
        with self._lock:
            client = self._clients.get(key)
            if client is not None and (
                account_id is None or self._fresh((account_id, role_name or ""))
            ):
                return client
            credentials = self._credentials_for(account_id, region, role)
            # boto3 sessions are not thread-safe, clients are: create under the lock.
            client = make_client(self._base_session(), service, region, config, credentials)
            self._hook(client)
            self._clients[key] = client
            return client

    def _shared_client(self, service: str, region: str, config: Config) -> BaseClient:
        client = make_client(shared_session(), service, region, config)
        watch_retries(client, _report_to_current_run)
        for hook in self.client_hooks:
            hook(client)
        return client

    def _hook(self, client: BaseClient) -> None:
        if self.on_aws_retry is not None:
            watch_retries(client, self.on_aws_retry)
        for hook in self.client_hooks:
            hook(client)

    def _base_session(self) -> boto3.Session:
        if self._base is None:
            self._base = self.session_factory()
        return self._base

    def _fresh(self, which: tuple[str, str]) -> bool:
        entry = self._assumed.get(which)
        return entry is not None and entry[1] - _REFRESH_MARGIN > self.now()

    def _credentials_for(
        self, account_id: str | None, region: str, role: tuple[str, str | None] | None
    ) -> dict[str, str] | None:
        """None for the bot's own account; else the assumed role's (cached until near expiry)."""
        if account_id is None or role is None:
            return None
        role_name, external_id = role
        which = (account_id, role_name)
        if self._fresh(which):
            return self._assumed[which][0]
        base = self._base_session()
        partition = base.get_partition_for_region(region) or "aws"
        sts = make_client(base, "sts", region, self.config())
        self._hook(sts)
        params: dict[str, Any] = {
            "RoleArn": f"arn:{partition}:iam::{account_id}:role/{role_name}",
            "RoleSessionName": self.role_session_name(),
        }
        if external_id:
            params["ExternalId"] = external_id
        creds = sts.assume_role(**params)["Credentials"]
        keys = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
        expires = creds["Expiration"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        self._assumed[which] = (keys, expires)
        return keys

    def role_session_name(self) -> str:
        return re.sub(r"[^\w+=,.@-]", "-", f"incident-bot-{self.incident_key}")[:64]

    # --- read-only inspection cache (planning) ----------------------------------------------

    def cached_inspection(
        self, target: Target, inspect: Callable[[Target, ActionContext], dict[str, Any]]
    ) -> dict[str, Any]:
        """Facts about the target, read once per context so planning N actions costs one read."""
        with self._lock:
            facts = self._inspections.get(target)
        if facts is None:
            facts = inspect(target, self)
            with self._lock:
                self._inspections[target] = facts
        return facts

    def forget_inspection(self, target: Target) -> None:
        with self._lock:
            self._inspections.pop(target, None)


_FAILURE = "incident_bot_failure"  # key in botocore's per-call request context


def watch_retries(client: BaseClient, report: AwsRetryHook) -> None:
    """Report each attempt botocore re-sends, with what went wrong with the attempt before.

    `needs-retry` sees every attempt's outcome (it may not retry); `request-created` for an
    attempt after the first is the retry actually being sent. Both see the same per-call
    context, so the failure seen is carried from one to the other."""

    def seen(
        response: Any = None,
        caught_exception: BaseException | None = None,
        request_dict: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        failure: str | None = None
        if caught_exception is not None:
            failure = type(caught_exception).__name__
        elif response is not None:
            http, parsed = response
            code = (parsed or {}).get("Error", {}).get("Code")
            if http.status_code >= 400 or code:
                failure = f"HTTP {http.status_code}" + (f" {code}" if code else "")
        if failure and request_dict is not None:
            request_dict.setdefault("context", {})[_FAILURE] = failure

    def sending(request: Any, operation_name: str | None = None, **_: Any) -> None:
        context = getattr(request, "context", None) or {}
        attempt = (context.get("retries") or {}).get("attempt", 1)
        if attempt > 1:
            report(
                {
                    "service": client.meta.service_model.service_name,
                    "operation": operation_name,
                    "attempt": attempt,
                    "after": context.get(_FAILURE, "a failed attempt"),
                }
            )

    client.meta.events.register_last("needs-retry.*.*", seen)
    client.meta.events.register_last("request-created.*.*", sending)
