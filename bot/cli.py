"""The `incident-bot` command line (DESIGN.md's Process section).

Bad configuration or arguments, and a database that is missing, unreachable or not migrated,
print one line naming the problem and exit 2. Only `db upgrade` (and `run`, which upgrades on
start) may create the database.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from bot.settings import Settings, SettingsError, load_settings
from storage.errors import StorageError

if TYPE_CHECKING:
    from storage.db import Database
    from storage.models import Incident

log = logging.getLogger("incident_bot")


class Fail(click.ClickException):
    """An operator error: one line, exit 2."""

    exit_code = 2


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise Fail(str(exc)) from None


def _database(settings: Settings) -> Database:
    """The configured database, once it is known to exist and be migrated (or Fail)."""
    from bot.clock import SystemClock
    from storage.db import Database
    from storage.migrate import require_schema

    require_schema(settings.database_url)
    return Database(settings.database_url, clock=SystemClock())


class _Cli(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        # Storage phrases its own operator errors; here they become the usual one line, exit 2.
        try:
            return super().invoke(ctx)
        except StorageError as exc:
            raise Fail(str(exc)) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """incident-bot: security incident response on AWS, from Slack."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic and botocore chatter drowns the one line an operator needs.
    for noisy in ("alembic", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@cli.command()
@click.option("--http", "force_http", is_flag=True, help="HTTP mode even with SLACK_APP_TOKEN.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def run(force_http: bool, host: str, port: int, workers: int) -> None:
    """Run the bot: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode."""
    settings = _settings()
    try:
        settings.require_slack()
    except SettingsError as exc:
        raise Fail(str(exc)) from None
    from storage.migrate import upgrade

    upgrade(settings.database_url)
    try:
        from bot.server import serve
    except ImportError as exc:  # pragma: no cover - until the Slack app lands
        raise Fail(f"the Slack app is not available in this build ({exc})") from None
    try:
        serve(settings=settings, force_http=force_http, host=host, port=port, workers=workers)
    except SettingsError as exc:
        raise Fail(str(exc)) from None


class _DrillCommand(click.Command):
    """`drill --help` names the scenarios (read when help is asked, not at every start)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from commands.drills.scenarios import SCENARIOS

        with formatter.section("Scenarios"):
            formatter.write_dl([(s.name, s.title) for s in SCENARIOS.values()])
        super().format_epilog(ctx, formatter)


@cli.command(cls=_DrillCommand)
@click.option(
    "--scenario",
    default="ec2-c2",
    show_default=True,
    help="Which incident to rehearse (see Scenarios below).",
)
@click.option("--list", "list_only", is_flag=True, help="Print the scenario names and exit.")
@click.option("--db", "db_path", default=None, help="Keep the drill's SQLite database here.")
@click.option(
    "--fail",
    "faults",
    multiple=True,
    metavar="SERVICE:Operation",
    help="Chaos drill: make this AWS call fail with AccessDenied (e.g. ec2:CreateSnapshots).",
)
def drill(scenario: str, list_only: bool, db_path: str | None, faults: tuple[str, ...]) -> None:
    """Run a whole incident offline: no Slack token, no AWS account."""
    if list_only:  # DESIGN.md: one name a line, for scripts
        from commands.drills.scenarios import SCENARIOS

        click.echo("\n".join(SCENARIOS))
        return
    from bot.drill.runner import run_drill

    root = logging.getLogger()
    if root.level == logging.INFO:  # the transcript is the output; -v brings the logs back
        root.setLevel(logging.WARNING)
    for fault in faults:
        if ":" not in fault:
            raise Fail(f"--fail {fault}: use SERVICE:Operation, e.g. ec2:CreateSnapshots")
    sys.exit(run_drill(scenario=scenario, db_path=db_path, faults=list(faults)))


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    settings = _settings()
    from storage.migrate import upgrade

    upgrade(settings.database_url, revision=revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.option("--revision", default="base", show_default=True)
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION."""
    settings = _settings()
    from storage.migrate import downgrade

    downgrade(settings.database_url, revision=revision)
    click.echo(f"database at {revision}")


def _load_incident(key: str) -> tuple[Database, Incident]:
    """The database and incident KEY, checking the key before touching the database."""
    from commands.errors import NotFound, UserError
    from commands.incidents import get_incident, require_key
    from storage.db import safe_url

    try:
        number = require_key(key)
    except UserError as exc:
        raise Fail(exc.message) from None
    database = _database(_settings())
    with database.read_session() as session:
        try:
            return database, get_incident(session=session, key=key)
        except NotFound:
            raise Fail(
                f"no incident INC-{number} in the database at {safe_url(database.url)}: "
                "check the key, or DATABASE_URL (`/incident list` in Slack shows the open ones)"
            ) from None


@cli.command()
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "csv", "html"]), default="md")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of stdout.",
)
def export(key: str, fmt: str, out_path: str | None) -> None:
    """Write incident KEY's timeline to stdout (html: the post-incident report, one
    self-contained page with its chart)."""
    from commands.exports import export_timeline

    database, incident = _load_incident(key)
    with _output(out_path) as out, database.read_session() as session:
        if fmt == "html":
            from bot.clock import SystemClock
            from commands.review.report import build_report, to_html

            report = build_report(
                session=session,
                incident=incident,
                gdpr_hours=_settings().config.deadlines.gdpr_hours,
                now=SystemClock().now(),
            )
            out.write(to_html(report))
        else:
            export_timeline(session=session, incident=incident, fmt=fmt, out=out)


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or the file at `path` (written whole: a failure leaves no half report)."""
    if path is None:
        yield sys.stdout
        return
    buffer = io.StringIO()
    yield buffer
    try:
        Path(path).write_text(buffer.getvalue(), encoding="utf-8")
    except OSError as exc:
        raise Fail(f"cannot write {path}: {exc.strerror or exc}") from None


@cli.command()
@click.option("--since", default="30d", show_default=True, help="The window: 30d, 12w, 48h.")
@click.option(
    "--out",
    "out_path",
    default="incident-bot-report.png",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Where to write the charts (PNG).",
)
def report(since: str, out_path: str) -> None:
    """Team metrics: incidents per week by severity and source, time to contain (median,
    p90), regulator clocks met or missed, drill results; printed, and plotted to --out."""
    from bot.clock import SystemClock
    from commands.errors import UserError
    from commands.review.team import parse_since, report_chart, report_lines, team_report

    try:
        window = parse_since(since)
    except UserError as exc:
        raise Fail(exc.message) from None
    settings = _settings()
    database = _database(settings)
    with database.read_session() as session:
        found = team_report(
            session=session,
            since=window,
            now=SystemClock().now(),
            gdpr_hours=settings.config.deadlines.gdpr_hours,
        )
    chart = report_chart(found)
    try:
        Path(out_path).write_bytes(chart)
    except OSError as exc:
        raise Fail(f"cannot write {out_path}: {exc.strerror or exc}") from None
    for line in report_lines(found):
        click.echo(line)
    click.echo(f"\nCharts: {out_path}")


@cli.command()
@click.argument("key")
@click.option(
    "--evidence",
    is_flag=True,
    help="Also re-read the evidence objects and compare their SHA-256 with the manifest.",
)
def verify(key: str, evidence: bool) -> None:
    """Check incident KEY's chain, its key and every anchor outside the database.

    Exit 1 if anything was tampered with (the first problem on stderr).
    """
    from bot.verify import OperatorError, verify_incident
    from commands.errors import UserError
    from commands.incidents import require_key
    from storage.db import safe_url

    try:
        number = require_key(key)
    except UserError as exc:
        raise Fail(exc.message) from None
    settings = _settings()
    database = _database(settings)
    prefix = f"INC-{number}"

    def not_found() -> Exception:
        return Fail(
            f"no incident {prefix} in the database at {safe_url(database.url)}: "
            "check the key, or DATABASE_URL (`/incident list` in Slack shows the open ones)"
        )

    try:
        verdict = verify_incident(
            settings=settings,
            database=database,
            number=number,
            key=settings.timeline_key(),
            not_found=not_found,
            evidence=evidence,
        )
    except OperatorError as exc:
        raise Fail(str(exc)) from None
    for line in verdict.lines:
        click.echo(f"{prefix}: {line}")
    for problem in verdict.problems[1:]:
        click.echo(f"{prefix}: also: {problem}", err=True)
    if verdict.problems:
        click.echo(f"{prefix}: TAMPERED: {verdict.problems[0]}", err=True)
        sys.exit(1)


@cli.command("plan")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["asl"]), default="asl", show_default=True)
def plan_cmd(key: str, fmt: str) -> None:
    """Write incident KEY's approved (or latest) containment plan as a Step Functions machine."""
    from commands.asl import export_asl
    from commands.asl_sdk import states_to_edit
    from commands.errors import NotFound

    database, incident = _load_incident(key)
    with database.read_session() as session:
        try:
            text = export_asl(session=session, incident=incident, now=database.clock.now())
        except NotFound as exc:
            raise Fail(exc.message) from None
    click.echo(text)
    edit = states_to_edit(json.loads(text))
    if edit:
        click.echo(
            f"incident-bot: {len(edit)} state(s) need editing before the machine runs "
            "(their Comment starts EDIT BEFORE RUNNING): " + ", ".join(edit),
            err=True,
        )


@cli.command()
@click.option(
    "--capability",
    type=click.Choice(["triage", "contain", "forensics", "wipe", "all"]),
    default="all",
    show_default=True,
    help="One capability's policy (triage is read-only); all is their union.",
)
def policy(capability: str) -> None:
    """Print the scoped IAM policy for one capability, or for every action the bot can take."""
    from commands.permissions import policy_document

    config = _settings().config
    kwargs: dict[str, Any] = {
        "capability": capability,
        "evidence_bucket": config.containment.evidence_bucket,
        "contacts_topic_arn": config.contacts.sns_topic_arn,
        "contacts_ses_sender": config.contacts.ses_sender,
    }
    if config.containment.cross_account_role_name:
        kwargs["cross_account_role_name"] = config.containment.cross_account_role_name
    click.echo(json.dumps(policy_document(**kwargs), indent=2))


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        rv = cli.main(args=argv, prog_name="incident-bot", standalone_mode=False)
    except click.ClickException as exc:
        # One line naming the problem; usage errors and Fail both exit 2.
        click.echo(f"incident-bot: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if isinstance(exc, Fail) else 2)
    except click.exceptions.Abort:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
