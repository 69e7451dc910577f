"""Read every shared GuardDuty/SNS fixture file into the payloads it holds.

Each file format needs its own reader: JSON files, Panther rule YAML (`Tests[].Log`), the
stix-shifter Python test sources (outermost dict literals, read with `ast`), and raw HTTP
requests (headers, blank line, JSON body).
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import yaml

from tests.fixture_paths import FIXTURES

GUARDDUTY_DIR = FIXTURES / "guardduty"
SNS_DIR = FIXTURES / "sns"
# Keys that mark a Python dict literal as a (partial) GuardDuty finding or response.
_FINDING_KEYS = {"Findings", "Id", "Resource", "Service"}


def all_files() -> list[Path]:
    return sorted([*GUARDDUTY_DIR.iterdir(), *SNS_DIR.iterdir()])


def read_http(path: Path) -> tuple[str, dict[str, str], bytes]:
    """(request line, lower-cased headers, body) of a raw HTTP request file."""
    raw = path.read_bytes().replace(b"\r\n", b"\n")
    head, _, body = raw.partition(b"\n\n")
    request_line, *header_lines = head.decode().split("\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return request_line, headers, body


def python_dict_literals(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, value) of each outermost dict literal that looks like finding data."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, dict[str, Any]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Dict):
            try:
                value = ast.literal_eval(node)
            except ValueError:
                value = None
            if isinstance(value, dict) and _FINDING_KEYS & set(value):
                found.append((node.lineno, value))
                return  # nested dicts belong to this one
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def payloads(path: Path) -> list[tuple[str, Any]]:
    """(label, payload) for each payload the file holds."""
    name = path.name
    if name.endswith(".yml"):
        rule = yaml.safe_load(path.read_text())
        return [(test["Name"], test["Log"]) for test in rule["Tests"]]
    if name.endswith(".py.txt"):
        return [(f"line {line}", value) for line, value in python_dict_literals(path)]
    if name.endswith(".http"):
        _, _, body = read_http(path)
        return [("body", json.loads(body))]
    # .json and the GetFindings REST syntax .txt are plain JSON (some with leading spaces).
    return [("file", json.loads(path.read_text()))]


def load_json(name: str) -> Any:
    """A JSON fixture by file name, from either directory."""
    path = GUARDDUTY_DIR / name
    return json.loads((path if path.exists() else SNS_DIR / name).read_text())


def variant(detail: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of a finding detail with `a__b__c=value` paths replaced."""
    copied = copy.deepcopy(detail)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = copied
        for key in parents:
            node = node[key]
        node[leaf] = value
    return copied


def ec2_detail(**changes: Any) -> dict[str, Any]:
    """The aws-samples EC2 finding (i-05746eb48123455e0, severity 5), changed as asked."""
    return variant(load_json("automated-response-sample__guardduty_ec2_event.json"), **changes)
