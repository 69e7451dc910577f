"""The default Engine: containment/'s registry plans, its executor runs and rolls back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from commands.approvals.plans import StepCallback, blast_radius
from commands.errors import UserError
from containment.context import ActionContext
from containment.errors import error_record
from containment.targets import Target


def _call(call: Any) -> dict[str, Any]:
    from containment.jsonsafe import jsonable

    return {
        "text": str(call),
        "service": getattr(call, "service", None),
        "operation": getattr(call, "operation", None),
        "mutating": bool(getattr(call, "mutating", True)),
        # The parameters themselves, for `incident-bot plan --format asl` (commands/asl.py).
        "params": jsonable(dict(getattr(call, "params", None) or {})),
    }


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

    def _facts(self, target: Target, ctx: ActionContext) -> dict[str, Any]:
        from containment.registry import facts_for

        try:
            return facts_for(target, ctx)
        except Exception as exc:
            err = error_record(exc)
            raise UserError(
                f"Could not read {target.resource_id} in {target.region} to plan its "
                f"containment ({err['code']}): check the id, region and the bot's permissions."
            ) from exc

    def plan(self, *, target: Target, ctx: ActionContext) -> dict[str, Any]:
        from containment.registry import actions_for

        facts = self._facts(target, ctx)
        steps = []
        for action in actions_for(target, include=self.include):
            steps.append(
                {
                    "action": action.name,
                    "summary": action.summary,
                    "mutating": bool(action.mutating),
                    "depends_on": list(action.depends_on),
                    "after": list(action.after),  # ordering only
                    "permissions": list(action.permissions),
                    "calls": [_call(c) for c in action.calls(target, ctx, facts)],
                }
            )
        return {"steps": steps, "blast_radius": blast_radius(facts, tag_labels=self.tag_labels)}

    def plan_rollback(
        self, *, target: Target, ctx: ActionContext, previous: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        from containment.registry import StepResult, get_action

        steps = []
        for data in reversed(list(previous)):
            result = StepResult.from_dict(dict(data))
            try:
                action = get_action(result.action)
            except KeyError:
                continue
            if not action.has_rollback or not result.changes:
                continue
            calls = action.rollback_calls(target, ctx, result)
            steps.append(
                {
                    "action": action.name,
                    "summary": f"Undo {action.name}",
                    "mutating": True,
                    "depends_on": [],
                    "after": [],
                    "calls": [_call(c) for c in calls],
                }
            )
        return {"steps": steps, "blast_radius": {}}

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[Mapping[str, Any]],
        on_step: StepCallback,
    ) -> list[dict[str, Any]]:
        from containment.executor import run_plan

        return _results(
            run_plan(
                target=target,
                ctx=ctx,
                action_names=list(action_names) if action_names is not None else None,
                previous=_previous(previous),
                on_step=_adapt(on_step),
            )
        )

    def rollback(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        previous: Sequence[Mapping[str, Any]],
        on_step: StepCallback,
    ) -> list[dict[str, Any]]:
        from containment.executor import rollback_plan

        return _results(
            rollback_plan(
                target=target, ctx=ctx, results=_previous(previous), on_step=_adapt(on_step)
            )
        )


def _previous(previous: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from containment.registry import StepResult

    return {str(p["action"]): StepResult.from_dict(dict(p)) for p in previous}


def _as_dict(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return dict(result)
    return dict(result.to_dict())


def _results(out: Any) -> list[dict[str, Any]]:
    if isinstance(out, Mapping):
        out = out.values()
    elif hasattr(out, "results"):
        out = out.results
        if isinstance(out, Mapping):
            out = out.values()
    return [_as_dict(r) for r in out]


def _adapt(on_step: StepCallback) -> Any:
    """The executor's on_step(name, event, StepResult | None), where event is "started" or
    the step's final status, as StepCallback(name, "started" | "finished", result dict)."""

    def callback(action: str, event: str, result: Any) -> None:
        phase = "started" if event == "started" else "finished"
        on_step(action, phase, _as_dict(result) if result is not None else None)

    return callback
