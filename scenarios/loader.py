"""Reading a scenario file: YAML in, a validated and checked `Scenario` out (scenarios/checks.py: files,
model against fleet, cohort, deadline), or a `ScenarioError` naming each bad field.

Overrides (`--set fleet.size=5000`) are applied to the YAML tree before validation, so they are checked
exactly like the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scenarios.checks import check_scenario
from scenarios.errors import ScenarioError
from scenarios.schema import Scenario

BUILTIN_DIR = Path(__file__).parent


def resolve_scenario_path(name: str | Path) -> Path:
    """A path, or the name of a built-in scenario ('quickstart')."""
    path = Path(name)
    if path.exists():
        return path
    builtin = BUILTIN_DIR / f"{Path(name).stem}.yaml"
    if not path.suffix and builtin.exists():
        return builtin
    raise ScenarioError(f"{name}: no such scenario file")


def load_scenario(name: str | Path, overrides: list[str] = ()) -> Scenario:
    path = resolve_scenario_path(name)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ScenarioError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except RecursionError:
        raise ScenarioError(f"{path}: YAML nested too deeply") from None
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror or err}") from None
    if tree is None:  # a truncated write or the wrong file far more often than a wish for every default
        raise ScenarioError(f"{path}: the file holds no scenario (it is empty, or only comments); write {{}} to "
                            "run every default")
    if not isinstance(tree, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(tree, item)
    scenario = parse_scenario(tree, source=str(path))
    check_scenario(scenario, source=str(path))
    return scenario


def load_run_scenario(run_dir: Path, overrides: list[str] = ()) -> Scenario:
    """The scenario a run folder was written by (its scenario.resolved.yaml), for going on with it."""
    path = Path(run_dir) / "scenario.resolved.yaml"
    if not path.is_file():
        raise ScenarioError(f"--resume: {run_dir} is not a run folder (it has no scenario.resolved.yaml)")
    if (Path(run_dir) / "summary.json").exists():
        raise ScenarioError(f"--resume: the run in {run_dir} is complete (it has its summary.json)")
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    tree.pop("git_sha", None)
    for item in overrides:
        apply_override(tree, item)
    return parse_scenario(tree, source=str(path))


def parse_scenario(tree: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(tree)
    except ValidationError as err:
        raise ScenarioError(format_errors(err, source)) from None


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def apply_override(tree: dict[str, Any], item: str) -> None:
    """'a.b.c=value' sets tree[a][b][c] = value, the value read as YAML (so 5 is an int, [1,2] a list)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ScenarioError(f"override {item!r}: expected section.field=value")
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ScenarioError(f"override {item!r}: {part} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ScenarioError(f"override {item!r}: the value is not valid YAML: {err}") from None
