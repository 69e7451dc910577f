"""Run a containment as a dependency graph: independent steps at the same time.

A step starts as soon as every step it depends on has finished. A failed step blocks only the
steps that depend on it; the rest still run. Given the results of an earlier run, only what
is not done yet runs again, on freshly read facts. Rollback walks the same graph backwards.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait

from containment.concurrency import ContextPool
from containment.context import ActionContext, retries_reported_to
from containment.errors import error_record
from containment.registry import (
    Action,
    Facts,
    PlannedCall,
    RunState,
    StepResult,
    actions_for,
    all_actions,
    deps_within,
    facts_for,
    facts_provider,
    get_action,
)
from containment.targets import Target

OnStep = Callable[[str, str, StepResult | None], None]
log = logging.getLogger(__name__)


def select_actions(target: Target, action_names: Iterable[str] | None = None) -> list[Action]:
    """The target's actions in order; with names, those plus what they depend on."""
    if action_names is None:
        return actions_for(target)
    wanted = set(action_names)
    for name in wanted:
        get_action(name)  # unknown names fail loudly
    chosen = actions_for(target, include=wanted)
    by_name = {a.name: a for a in chosen}
    keep: set[str] = set()

    def add(name: str) -> None:
        if name in keep or name not in by_name:
            return
        keep.add(name)
        for dep in by_name[name].depends_on:
            add(dep)  # ordering-only neighbours are not pulled in

    for name in wanted:
        add(name)
    return [a for a in chosen if a.name in keep]


def plan_all(
    *, target: Target, ctx: ActionContext, action_names: Iterable[str] | None = None
) -> list[tuple[Action, list[PlannedCall]]]:
    """Every selected action's planned calls, from one read-only inspection."""
    facts = facts_for(target, ctx)
    return [(a, a.calls(target, ctx, facts)) for a in select_actions(target, action_names)]


def _now(ctx: ActionContext) -> str:
    return ctx.now().isoformat()


def _dry(action: Action, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
    started = _now(ctx)
    calls = action.calls(target, ctx, state.facts, state.results)
    return StepResult(
        action=action.name,
        status="skipped",
        note="dry run: no change made" if calls else "dry run: nothing to do",
        dry_run=True,
        planned=[c.to_dict() for c in calls],
        started_at=started,
        finished_at=_now(ctx),
    )


def _failed(action: str, ctx: ActionContext, exc: BaseException | dict) -> StepResult:
    now = _now(ctx)
    return StepResult(
        action=action,
        status="failed",
        error=exc if isinstance(exc, dict) else error_record(exc),
        state_left={"note": "not run, or stopped before recording its changes"},
        started_at=now,
        finished_at=now,
    )


def _blocked(action: str, ctx: ActionContext, blockers: list[str]) -> StepResult:
    now = _now(ctx)
    return StepResult(
        action=action,
        status="skipped",
        note="not run: " + ", ".join(blockers) + " did not succeed",
        blocked_by=blockers,
        started_at=now,
        finished_at=now,
    )


def _emit(on_step: OnStep | None, name: str, event: str, result: StepResult | None) -> None:
    """Report progress. A failing reporter is logged, not allowed to stop a containment
    half-way: the results returned still say everything that happened."""
    if on_step is None:
        return
    try:
        on_step(name, event, result)
    except Exception:
        log.exception("on_step(%r, %r) failed", name, event)


def run_plan(
    *,
    target: Target,
    ctx: ActionContext,
    action_names: Iterable[str] | None = None,
    previous: dict[str, StepResult] | None = None,
    on_step: OnStep | None = None,
    max_workers: int = 8,
) -> dict[str, StepResult]:
    """Run the plan's steps, each as soon as what it depends on is done. Retries of the
    calls made (in every thread of the run) are told to `ctx.on_aws_retry`."""
    with retries_reported_to(ctx.on_aws_retry):
        return _run_plan(
            target=target,
            ctx=ctx,
            action_names=action_names,
            previous=previous,
            on_step=on_step,
            max_workers=max_workers,
        )


def _run_plan(
    *,
    target: Target,
    ctx: ActionContext,
    action_names: Iterable[str] | None,
    previous: dict[str, StepResult] | None,
    on_step: OnStep | None,
    max_workers: int,
) -> dict[str, StepResult]:
    actions = select_actions(target, action_names)
    names = [a.name for a in actions]
    previous = dict(previous or {})
    done = {n: r for n, r in previous.items() if r.done and not ctx.dry_run}
    results: dict[str, StepResult] = {n: r for n, r in done.items() if n in names}
    # What earlier attempts did in steps this run leaves out (a retry plans only what is
    # left): later steps still read them, e.g. tag needs the snapshot step's snapshot ids.
    earlier = {n: r for n, r in done.items() if n not in names}
    pending = [a for a in actions if a.name not in results]
    if not pending:
        return {n: results[n] for n in names}

    provider = facts_provider(target)
    facts: Facts = {}
    if provider.name in results:
        # A retry: what the capture saw stays the truth for rollback; decisions use fresh facts.
        captured = results[provider.name].evidence
        try:
            facts.update(provider.inspect(target, ctx))
            gone = provider.unavailable(facts)
        except Exception as exc:
            gone = error_record(exc)
        if gone:
            for action in pending:
                results[action.name] = _failed(action.name, ctx, gone)
                _emit(on_step, action.name, "failed", results[action.name])
            return {n: results[n] for n in names}
    else:
        captured = facts  # filled by the capture step, before any dependent runs

    def run_one(action: Action) -> StepResult:
        _emit(on_step, action.name, "started", None)
        state = RunState(
            facts=facts,
            captured=captured,
            results={**earlier, **{n: results[n] for n in names if n in results}},
            prior=copy.deepcopy(previous.get(action.name)),
        )
        try:
            if ctx.dry_run and action.mutating:
                return _dry(action, target, ctx, state)
            return action.apply(target, ctx, state)
        except Exception as exc:  # an action bug must not hang the run
            return _failed(action.name, ctx, exc)

    # When several steps are ready, start the one with the longest chain still behind it.
    height = _heights(actions)
    running: dict[Future[StepResult], str] = {}
    waiting = sorted(pending, key=lambda a: -height[a.name])
    with ContextPool(max_workers=max_workers, thread_name_prefix="contain-step") as pool:
        while waiting or running:
            for action in list(waiting):
                deps = deps_within(action, names)
                if any(d not in results for d in deps):
                    continue
                waiting.remove(action)
                hard = set(action.depends_on)
                blockers = [d for d in deps if d in hard and not _ok(results[d], ctx)]
                if blockers:
                    results[action.name] = _blocked(action.name, ctx, blockers)
                    _emit(on_step, action.name, "skipped", results[action.name])
                    continue
                running[pool.submit(run_one, action)] = action.name
            if not running:
                if waiting and all(
                    any(d not in results for d in deps_within(a, names)) for a in waiting
                ):
                    raise RuntimeError(f"steps can never start: {[a.name for a in waiting]}")
                continue  # blocked steps may have unblocked (or blocked) others
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                result = future.result()
                results[name] = result
                _emit(on_step, name, result.status, result)
    return {n: results[n] for n in names}


def _heights(actions: list[Action]) -> dict[str, int]:
    """Steps in the longest chain from each action to the end (itself included)."""
    names = {a.name for a in actions}
    height: dict[str, int] = {}
    for action in reversed(actions):  # dependents come later in `actions`
        after_it = [
            height[b.name]
            for b in actions
            if b.name in height and action.name in deps_within(b, names)
        ]
        height[action.name] = 1 + max(after_it, default=0)
    return height


def _ok(result: StepResult, ctx: ActionContext) -> bool:
    return result.ok_for_dependents or (ctx.dry_run and result.dry_run)


def rollback_plan(
    *,
    target: Target,
    ctx: ActionContext,
    results: dict[str, StepResult],
    on_step: OnStep | None = None,
    max_workers: int = 8,
) -> dict[str, StepResult]:
    """Undo what `results` record, newest first: a step is undone after every step that
    depended on it. Steps with nothing to undo (or no undo, like snapshots) are left out.
    Retries of the calls made are told to `ctx.on_aws_retry`."""
    with retries_reported_to(ctx.on_aws_retry):
        return _rollback_plan(
            target=target, ctx=ctx, results=results, on_step=on_step, max_workers=max_workers
        )


def _rollback_plan(
    *,
    target: Target,
    ctx: ActionContext,
    results: dict[str, StepResult],
    on_step: OnStep | None,
    max_workers: int,
) -> dict[str, StepResult]:
    everything = {a.name: a for a in all_actions()}
    todo = {
        n: everything[n]
        for n, r in results.items()
        if n in everything and everything[n].has_rollback and r.changes and not r.dry_run
    }
    # Dependents, transitively, over the whole graph: undo consumers before providers.
    dependents: dict[str, set[str]] = {n: set() for n in everything}
    for a in everything.values():
        for d in (*a.depends_on, *a.after):
            if d in dependents:
                dependents[d].add(a.name)

    def later(name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for nxt in dependents.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen & set(todo)

    must_wait = {n: later(n) for n in todo}
    out: dict[str, StepResult] = {}

    def undo(action: Action) -> StepResult:
        _emit(on_step, action.name, "started", None)
        result = results[action.name]
        if ctx.dry_run:
            calls = action.rollback_calls(target, ctx, result)
            now = _now(ctx)
            return StepResult(
                action=action.name,
                status="skipped",
                dry_run=True,
                note="dry run: no change made",
                planned=[c.to_dict() for c in calls],
                started_at=now,
                finished_at=now,
            )
        try:
            undone = action.rollback(target, ctx, result)
        except Exception as exc:
            return _failed(action.name, ctx, exc)
        return undone or action.nothing_to_do(ctx, "nothing to roll back")

    running: dict[Future[StepResult], str] = {}
    waiting = list(todo)
    with ContextPool(max_workers=max_workers, thread_name_prefix="rollback") as pool:
        while waiting or running:
            for name in list(waiting):
                if must_wait[name] - set(out):
                    continue
                waiting.remove(name)
                running[pool.submit(undo, todo[name])] = name
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                out[name] = future.result()
                _emit(on_step, name, out[name].status, out[name])
    # Report in reverse containment order.
    order = [n for n in reversed(list(results)) if n in out]
    return {n: out[n] for n in order}
