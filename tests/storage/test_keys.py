from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select

from storage.models import Incident

WORKER = textwrap.dedent(
    """
    import sys
    from commands.incidents import open_incident
    from storage.db import Database
    from tests.clock import TEST_CLOCK

    db = Database(sys.argv[1], clock=TEST_CLOCK)
    for i in range(50):
        with db.session() as s:
            inc = open_incident(session=s, title=f"{sys.argv[2]} {i}", created_by="U1")
        print(inc.number, flush=True)
    """
)


def test_two_processes_get_100_distinct_gapless_keys(database, db_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, name], stdout=subprocess.PIPE, text=True
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    numbers = [int(x) for out in outputs for x in out.split()]
    assert sorted(numbers) == list(range(1, 101))
    with database.read_session() as s:
        stored = s.scalars(select(Incident.number)).all()
    assert sorted(stored) == list(range(1, 101))


def test_a_rolled_back_open_gives_its_number_back(database) -> None:
    from commands.errors import UserError
    from commands.incidents import open_incident

    with database.session() as s:
        open_incident(session=s, title="first", created_by="U1")
    with pytest.raises(UserError), database.session() as s:
        open_incident(session=s, title="second", created_by="U1")
        raise UserError("boom")
    with database.session() as s:
        third = open_incident(session=s, title="third", created_by="U1")
    assert third.key == "INC-2"
