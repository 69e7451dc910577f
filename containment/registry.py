"""The action registry and the records actions exchange (plans, step results).

Each action is a small class registered by name. It declares the IAM actions it needs
(`permissions`, which feed the generated policy), the actions that must finish before it
(`depends_on`), and implements:

- `calls(target, ctx, facts)`: the exact API calls it would make, given read-only facts;
  `plan()` builds facts with describe/list/get calls only, so planning has no side effects;
- `apply(target, ctx, state)`: make the change, idempotently (a second run changes nothing),
  recording in `changes` exactly what `rollback` needs;
- `rollback(target, ctx, result)`: undo `result.changes`, where an undo makes sense.
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from containment.capabilities import Capability
from containment.context import ActionContext
from containment.errors import error_record
from containment.targets import Target, TargetKind

Status = Literal["succeeded", "failed", "skipped"]
Facts = dict[str, Any]


@dataclass(frozen=True)
class PlannedCall:
    """One API call, readable: `ec2.ModifyNetworkInterfaceAttribute(NetworkInterfaceId=...)`."""

    service: str  # boto3 service name
    operation: str  # API operation name
    params: dict[str, Any] = field(default_factory=dict)  # summary of the parameters
    mutating: bool = True
    note: str | None = None
    # The parameters as the SDK takes them, where `params` only summarises them (a policy
    # described, a lock in words). Values only known at run time stay `<placeholders>`
    # (`<now>`, `<new snapshots>`, ...) that the Step Functions export fills in
    # (commands/asl.py). None: `params` are the SDK's parameters.
    sdk: dict[str, Any] | None = None

    def __str__(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        text = f"{self.service}.{self.operation}({args})"
        return f"{text}  # {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class StepResult:
    action: str
    status: Status
    changes: dict[str, Any] = field(default_factory=dict)  # what rollback needs, JSON-safe
    evidence: dict[str, Any] = field(default_factory=dict)  # JSON-safe
    error: dict[str, Any] | None = None  # {"code", "message", "kind", "operation"?}
    state_left: dict[str, Any] | None = None  # on failure: what is (not) done
    note: str | None = None
    blocked_by: list[str] = field(default_factory=list)  # failed dependencies
    dry_run: bool = False
    planned: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def done(self) -> bool:
        """Nothing left to do for this step (a retry does not run it again)."""
        if self.status == "succeeded":
            return not self.dry_run
        return self.status == "skipped" and not self.blocked_by and not self.dry_run

    @property
    def ok_for_dependents(self) -> bool:
        return self.status == "succeeded" or (self.status == "skipped" and not self.blocked_by)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunState:
    """What an action's apply sees: facts read in this run, facts captured before any change,
    the results of the steps it depends on, and its own earlier failed attempt (if any)."""

    facts: Facts
    captured: Facts
    results: dict[str, StepResult] = field(default_factory=dict)
    prior: StepResult | None = None


class StepRecorder:
    """Collects changes as an action makes them, so a failure still reports what it changed."""

    def __init__(self, action: str, ctx: ActionContext, prior: StepResult | None = None) -> None:
        self.action = action
        self.ctx = ctx
        self.changes: dict[str, Any] = copy.deepcopy(prior.changes) if prior else {}
        self.evidence: dict[str, Any] = {}
        self.state_left: dict[str, Any] = {}
        self.error: dict[str, Any] | None = None
        self.started_at = ctx.now().isoformat()
        self.lock = threading.Lock()

    def change(self, key: str, value: Any) -> None:
        with self.lock:
            self.changes[key] = value

    def change_item(self, group: str, key: str, value: Any) -> None:
        """Record a per-resource change; an earlier attempt's record wins (it saw the original)."""
        with self.lock:
            self.changes.setdefault(group, {}).setdefault(key, value)

    def left(self, key: str, value: Any) -> None:
        with self.lock:
            self.state_left[key] = value

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # any failure becomes the step's recorded error
            self.error = error_record(exc)

    def result(self, *, note: str | None = None, skipped: bool = False) -> StepResult:
        finished = self.ctx.now().isoformat()
        if self.error is not None:
            return StepResult(
                action=self.action,
                status="failed",
                changes=self.changes,
                evidence=self.evidence,
                error=self.error,
                state_left=self.state_left or {"note": "see changes for what was done"},
                note=note,
                started_at=self.started_at,
                finished_at=finished,
            )
        return StepResult(
            action=self.action,
            status="skipped" if skipped else "succeeded",
            changes=self.changes,
            evidence=self.evidence,
            note=note,
            started_at=self.started_at,
            finished_at=finished,
        )


class Action:
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    kinds: ClassVar[tuple[TargetKind, ...]] = ("instance",)
    permissions: ClassVar[tuple[str, ...]] = ()
    # Which capability's policy grants `permissions` (containment/capabilities.py).
    capability: ClassVar[Capability] = "contain"
    depends_on: ClassVar[tuple[str, ...]] = ()  # must have succeeded (their output is needed)
    # Must have finished, successfully or not: ordering only. A failed LB deregistration must
    # not keep the instance from being isolated.
    after: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[bool] = False  # included only when asked for by name
    mutating: ClassVar[bool] = True  # False: runs for real in dry-run (reads only)
    provides_facts: ClassVar[bool] = False

    def inspect(self, target: Target, ctx: ActionContext) -> Facts:
        raise NotImplementedError

    def unavailable(self, facts: Facts) -> dict[str, Any] | None:
        """For fact providers: an error record when the target can no longer be contained."""
        return None

    def plan(self, target: Target, ctx: ActionContext) -> list[PlannedCall]:
        """The calls apply would make now. Reads (describe/get/list) only; no side effects."""
        return self.calls(target, ctx, facts_for(target, ctx))

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        raise NotImplementedError

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        raise NotImplementedError

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        return None

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return []

    @property
    def has_rollback(self) -> bool:
        return type(self).rollback is not Action.rollback

    def recorder(self, ctx: ActionContext, state: RunState | None = None) -> StepRecorder:
        return StepRecorder(self.name, ctx, state.prior if state else None)

    def nothing_to_do(self, ctx: ActionContext, note: str) -> StepResult:
        now = ctx.now().isoformat()
        return StepResult(
            action=self.name, status="skipped", note=note, started_at=now, finished_at=now
        )


_REGISTRY: dict[str, Action] = {}
_loaded = False
_load_lock = threading.Lock()


def _ensure_loaded() -> None:
    """Build the registry from `containment.actions.ACTIONS` (imported here, by name: the
    action modules import this one)."""
    global _loaded
    with _load_lock:
        if not _loaded:
            actions = importlib.import_module("containment.actions").ACTIONS
            for cls in actions:
                if cls.name in _REGISTRY:
                    raise ValueError(f"containment action {cls.name!r} listed twice")
                _REGISTRY[cls.name] = cls()
            _loaded = True


def all_actions() -> list[Action]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def get_action(name: str) -> Action:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown containment action {name!r}") from None


def actions_for(target: Target, *, include: Iterable[str] = ()) -> list[Action]:
    """The target kind's actions in dependency order; optional ones only when included."""
    _ensure_loaded()
    wanted = set(include)
    chosen = {
        a.name: a
        for a in _REGISTRY.values()
        if target.kind in a.kinds and (not a.optional or a.name in wanted)
    }
    return topological(chosen)


def topological(chosen: dict[str, Action]) -> list[Action]:
    """Registration order, moved only as far as dependencies require."""
    order: list[Action] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(action: Action) -> None:
        if action.name in placed:
            return
        if action.name in visiting:
            raise ValueError(f"dependency cycle through {action.name!r}")
        visiting.add(action.name)
        for dep in (*action.depends_on, *action.after):
            if dep in chosen:
                visit(chosen[dep])
        visiting.discard(action.name)
        placed.add(action.name)
        order.append(action)

    for action in chosen.values():
        visit(action)
    return order


def deps_within(action: Action, names: Iterable[str]) -> tuple[str, ...]:
    """Every step in `names` this action waits for (hard and ordering-only)."""
    present = set(names)
    return tuple(d for d in (*action.depends_on, *action.after) if d in present)


def facts_provider(target: Target) -> Action:
    for action in all_actions():
        if action.provides_facts and target.kind in action.kinds:
            return action
    raise LookupError(f"no capture action for {target.kind}")


def facts_for(target: Target, ctx: ActionContext) -> Facts:
    provider: Callable[[Target, ActionContext], Facts] = facts_provider(target).inspect
    return ctx.cached_inspection(target, provider)
