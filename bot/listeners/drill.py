"""`/incident drill [scenario]`: rehearse an incident in the sandbox account, marked DRILL.

The work after the ack: request a GuardDuty sample finding where GuardDuty is enabled, then
feed the scenario's finding (built from the sandbox resources in `drills:`) through the real
intake. From there the drill is an ordinary incident marked DRILL: its card, approval and
containment (a dry run unless `drills.allow_changes`), kept out of digests, paging no one.
"""

from __future__ import annotations

from typing import Any

from bot.listeners.slash import Invocation, Reply, Subcommand, spec
from bot.views import replies
from commands.drills.sandbox_account import (
    drill_event,
    pick_scenario,
    request_sample_finding,
    sandbox_from_account,
)
from commands.drills.scenarios import SCENARIOS
from containment.clients import aws_client


def _client(inv: Invocation, service: str, region: str) -> Any:
    factory = inv.runtime.options.drill_clients
    return factory(service, region) if factory else aws_client(service, region)


def drill_cmd(inv: Invocation) -> Reply | None:
    scenario = pick_scenario(inv.args.split()[0] if inv.args.strip() else None)
    config = inv.runtime.config
    region = config.drills.region or (config.guardduty.regions or ["us-east-1"])[0]

    def work() -> Reply:
        from bot.guardduty.intake import intake
        from commands.findings.normalize import normalize

        sandbox = sandbox_from_account(
            scenario=scenario,
            config=config,
            ec2=_client(inv, "ec2", region),
            sts=_client(inv, "sts", region),
            region=region,
        )
        started = inv.runtime.now()
        event = drill_event(scenario=scenario, sandbox=sandbox, now=started)
        findings = normalize(event)
        sample = request_sample_finding(
            guardduty=_client(inv, "guardduty", region), finding_type=findings[0].type
        )
        results = intake(inv.runtime, findings)
        key = next((r.incident_key for r in results if r.incident_key), None)
        inv.incident_key = key
        if key:
            from commands.incidents import add_note, get_incident

            with inv.runtime.database.session() as session:
                incident = get_incident(session=session, key=key)
                add_note(
                    session=session,
                    incident=incident,
                    actor=inv.user_id,
                    text=f"[DRILL] {scenario.name} started at {started:%H:%M:%SZ}. {sample}",
                )
        return Reply(
            replies.drill_started(scenario.name, key, sample, real=config.drills.allow_changes)
        )

    inv.defer(f"drill {scenario.name}", work)
    return Reply(replies.drill_starting(scenario.name, scenario.title))


# `/incident` subcommands of this module, in the order `/incident help` lists them.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "drill",
        usage=f"/incident drill [{'|'.join(SCENARIOS)}]",
        summary="Rehearse an incident in the sandbox account (marked DRILL, pages no one).",
        handler=drill_cmd,
    ),
)
