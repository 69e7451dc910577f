"""AWS containment actions (boto3). Knows nothing of Slack or storage.

- `targets.Target`: an instance or an access key, with region and optional account.
- `context.ActionContext`: incident key, options, clients (AssumeRole with an external id for
  other accounts; botocore standard/adaptive retries), injectable `now`.
- `registry`: one small class per action (`actions/`), each declaring its IAM permissions,
  the steps it needs (`depends_on`) or only follows (`after`), `plan`/`calls` (reads only),
  idempotent `apply` and, where it makes sense, `rollback`. `StepResult` records changes,
  evidence, errors and the state a failure left, all JSON-serialisable.
- `executor.run_plan` / `rollback_plan` / `plan_all`: the steps as a dependency graph,
  independent ones at the same time; retries run only what is left; dry runs change nothing.
- `policy.policy_document()`: the least-privilege IAM policy from every declaration.
"""
