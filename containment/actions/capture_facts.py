"""The shared shape of a capture step for the non-EC2 kinds: read the resource once (planning
and the run share the read), keep it as the step's evidence, change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from botocore.exceptions import ClientError

from containment.context import ActionContext
from containment.errors import error_code, is_not_found
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

T = TypeVar("T")


def absent_as_none(read: Callable[[], T], *codes: str) -> T | None:
    """The read's answer, or None when AWS says the thing is not there (not an error here:
    a user without a console password, a bucket without a policy)."""
    try:
        return read()
    except ClientError as exc:
        if is_not_found(exc) or error_code(exc) in codes:
            return None
        raise


class CaptureFacts(Action):
    """Subclasses set `reads` (the operations `read` makes, for the plan) and implement
    `read`; the executor shares the facts it returns with every later step."""

    mutating = False
    provides_facts = True
    reads: ClassVar[tuple[tuple[str, str], ...]] = ()

    def read(self, target: Target, ctx: ActionContext) -> Facts:
        raise NotImplementedError

    def inspect(self, target: Target, ctx: ActionContext) -> Facts:
        return {"captured_at": ctx.now().isoformat(), **self.read(target, ctx)}

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        return [
            PlannedCall(service, op, {"target": target.resource_id}, mutating=False)
            for service, op in self.reads
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        rec = self.recorder(ctx, state)
        with rec.guard():
            if not state.facts:
                state.facts.update(self.inspect(target, ctx))
            rec.evidence.update(state.facts)
        return rec.result()


def planned(service: str, operation: str, **params: Any) -> PlannedCall:
    return PlannedCall(service, operation, params)
