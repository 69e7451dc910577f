"""parliament (the IAM linter) through its Python API, community auditors included.

Its command line refuses `--file` when standard input is not a terminal (as under CI).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import parliament
from parliament import analyze_policy_string, enhance_finding, override_config

_COMMUNITY = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"


@functools.cache
def _community_config() -> dict[str, Any]:
    override_config(_COMMUNITY)  # the severities the CLI uses with --include-community-auditors
    return parliament.config


def findings(policy: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(severity, issue, detail) of every finding, detail the escalation type if any."""
    analyzed = analyze_policy_string(
        json.dumps(policy, indent=2),
        include_community_auditors=True,
        config=_community_config(),
    )
    out = []
    for raw in analyzed.findings:
        f = enhance_finding(raw)
        kind = (f.location or {}).get("type") or "-"
        out.append((str(f.severity), str(f.issue), str(kind)))
    return sorted(set(out))


@functools.cache
def access_levels() -> dict[str, str]:
    """`service:Action` -> AWS's access level (Read, List, Write, Tagging, Permissions
    management), from the Service Authorization Reference parliament ships."""
    path = Path(parliament.__file__).parent / "iam_definition.json"
    levels = {}
    for service in json.loads(path.read_text()):
        for p in service["privileges"]:
            levels[f"{service['prefix']}:{p['privilege']}"] = p["access_level"]
    return levels
