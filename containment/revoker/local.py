"""incident-bot-revoker run in this process, for moto worlds (tests, the offline drill).

moto cannot run Lambda code without Docker. `in_process_revoker(now)` is a client hook
(ActionContext.client_hooks, runtime.options.client_hooks): a Lambda client's Invoke of
incident-bot-revoker runs handler.handle here and answers in Lambda's response shape (status
200, `FunctionError` when the function raised, the JSON payload). Its IAM client acts with the
invoking client's credentials (so in the same account, as the deployed function would) and is
made outside containment.clients, so call observers see the bot's Invoke, not the function's
IAM calls. One attempt per IAM call: the deployed function's own retries are invisible to the
bot, and a failure inside it reaches the bot as the function's error.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import boto3
from botocore.awsrequest import AWSResponse
from botocore.client import BaseClient
from botocore.config import Config
from botocore.response import StreamingBody

from containment.context import shareable
from containment.revoker import FUNCTION_NAME
from containment.revoker.handler import handle

_lock = threading.Lock()
_session: boto3.Session | None = None
_iam: dict[tuple[Any, ...], Any] = {}


def _iam_client(client: BaseClient, signer: Any) -> Any:
    global _session
    creds = signer._credentials.get_frozen_credentials() if signer._credentials else None
    endpoint = client.meta.endpoint_url
    # An emulator serves every service on one URL; AWS has one per service.
    own = None if "amazonaws.com" in endpoint else endpoint
    config = client.meta.config
    key = (creds, client.meta.region_name, own, config.connect_timeout, config.read_timeout)
    with _lock:
        if key not in _iam:
            if _session is None:
                _session = boto3.Session()
            _iam[key] = _session.client(
                "iam",
                region_name=client.meta.region_name,
                endpoint_url=own,
                aws_access_key_id=creds.access_key if creds else None,
                aws_secret_access_key=creds.secret_key if creds else None,
                aws_session_token=creds.token if creds else None,
                config=Config(
                    retries={"total_max_attempts": 1},
                    connect_timeout=config.connect_timeout,
                    read_timeout=config.read_timeout,
                ),
            )
        return _iam[key]


def _function_name(url_path: str) -> str:
    name = unquote(url_path.split("/functions/", 1)[-1].split("/", 1)[0])
    return name.rsplit(":function:", 1)[-1].split(":", 1)[0]


def _answer(payload: Any, *, error: bool) -> tuple[AWSResponse, dict[str, Any]]:
    body = json.dumps(payload).encode()
    headers = {"x-amz-executed-version": "$LATEST", "content-type": "application/json"}
    if error:
        headers["x-amz-function-error"] = "Unhandled"
    parsed: dict[str, Any] = {
        "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": headers, "RetryAttempts": 0},
        "StatusCode": 200,
        "ExecutedVersion": "$LATEST",
        "Payload": StreamingBody(io.BytesIO(body), len(body)),
    }
    if error:
        parsed["FunctionError"] = "Unhandled"
    return AWSResponse("https://lambda.invalid/", 200, headers, None), parsed


def in_process_revoker(now: Callable[[], datetime]) -> Callable[[BaseClient], None]:
    """The hook; `now` is the clock the function checks `issued_before` against."""

    def hook(client: BaseClient) -> None:
        if client.meta.service_model.service_name != "lambda":
            return

        def invoke(params: dict[str, Any], request_signer: Any, **_: Any) -> Any:
            if _function_name(params.get("url_path", "")) != FUNCTION_NAME:
                return None
            body = params.get("body") or b"null"
            try:
                event = json.loads(body.read() if hasattr(body, "read") else body)
                answer = handle(event, _iam_client(client, request_signer), now())
                return _answer(answer, error=False)
            except Exception as exc:  # Lambda reports what the function raised
                return _answer(
                    {"errorMessage": str(exc), "errorType": type(exc).__name__}, error=True
                )

        # Last: hooks that record or fail calls (tests) see the Invoke first.
        client.meta.events.register_last("before-call.lambda.Invoke", invoke)

    return shareable(hook)  # nothing per client or per run: shared clients may carry it
