"""The default Engine: containment/'s registry plans, its executor runs and rolls back."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from commands.approvals.plans import Plan, PlanCall, PlanStep, StepCallback, blast_radius
from commands.errors import UserError
from containment.context import ActionContext
from containment.errors import error_record
from containment.registry import Facts, StepResult
from containment.targets import Target
from storage.facts import IMPACT
from storage.models import Incident

log = logging.getLogger(__name__)


def wants_volatile(asked: bool | None, severity: str, rule: str) -> bool:
    """Whether a plan captures volatile state first: as asked, else by the configured rule
    (`containment.volatile_capture`) and the incident's severity."""
    if asked is not None:
        return asked
    return rule == "always" or (rule == "high" and severity in ("high", "critical"))


class ContainmentEngine:
    """Adapts containment.registry / containment.executor to the approval flow."""

    def __init__(
        self,
        *,
        include: Sequence[str] = (),
        tag_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.include = tuple(include)  # optional actions to add (e.g. flow_logs)
        self.tag_labels = dict(tag_labels) if tag_labels else None

    def _facts(self, target: Target, ctx: ActionContext) -> Facts:
        from containment.registry import facts_for

        try:
            return facts_for(target, ctx)
        except Exception as exc:
            err = error_record(exc)
            raise UserError(
                "Could not read {resource_id} in {region} to plan its "
                "containment ({code}): check the id, region and the bot's permissions.",
                resource_id=target.resource_id,
                region=target.region,
                code=err["code"],
            ) from exc

    def plan(self, *, target: Target, ctx: ActionContext, include: Sequence[str] = ()) -> Plan:
        """`include`: optional actions this plan adds (e.g. volatile_capture), besides the
        engine's own."""
        from containment.registry import actions_for

        facts = self._facts(target, ctx)
        steps = [
            PlanStep(
                action=action.name,
                summary=action.summary,
                mutating=bool(action.mutating),
                depends_on=tuple(action.depends_on),
                after=tuple(action.after),  # ordering only
                permissions=tuple(action.permissions),
                calls=tuple(PlanCall.of(c) for c in action.calls(target, ctx, facts)),
            )
            for action in actions_for(target, include=(*self.include, *include))
        ]
        return Plan(tuple(steps), blast_radius(facts, tag_labels=self.tag_labels))

    def plan_rollback(
        self, *, target: Target, ctx: ActionContext, previous: Sequence[StepResult]
    ) -> Plan:
        from containment.registry import get_action

        steps = []
        for result in reversed(list(previous)):
            try:
                action = get_action(result.action)
            except KeyError:
                continue
            if not action.has_rollback or not result.changes:
                continue
            calls = action.rollback_calls(target, ctx, result)
            steps.append(
                PlanStep(
                    action=action.name,
                    summary=f"Undo {action.name}",
                    after=(),
                    calls=tuple(PlanCall.of(c) for c in calls),
                )
            )
        return Plan(tuple(steps))

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]:
        from containment.executor import run_plan

        results = run_plan(
            target=target,
            ctx=ctx,
            action_names=list(action_names) if action_names is not None else None,
            previous={r.action: r for r in previous},
            on_step=_adapt(on_step),
        )
        return list(results.values())

    def rollback(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]:
        from containment.executor import rollback_plan

        results = rollback_plan(
            target=target,
            ctx=ctx,
            results={r.action: r for r in previous},
            on_step=_adapt(on_step),
        )
        return list(results.values())


def _adapt(on_step: StepCallback) -> StepCallback:
    """The executor reports (name, "started" | the step's final status, result): the approval
    flow wants "started" | "finished"."""

    def callback(action: str, event: str, result: StepResult | None) -> None:
        on_step(action, "started" if event == "started" else "finished", result)

    return callback


def add_stored_impact(plan: Plan, incident: Incident, resource_id: str) -> None:
    """Add the incident's stored blast-radius estimate (owner, account, neighbours) if it
    is about this resource; no AWS call here."""
    impact = IMPACT.get(incident)
    if not impact or (impact.get("resource") or {}).get("id") != resource_id:
        return
    try:
        from commands.impact import summary_lines

        lines = list(summary_lines(impact))
    except Exception:  # an estimate in an older shape must not block the request
        log.exception("could not summarise the impact estimate of %s", incident.key)
        return
    plan.blast_radius["impact"] = lines[:15]
