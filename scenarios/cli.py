"""The `fedfleet` command.

    fedfleet run SCENARIO.yaml [--out DIR] [--seed N] [--workers N] [--address ADDR] [--set a.b=v ...]
    fedfleet build-base [--out DIR]

Exit status: 0 done, 2 bad input (the message names the field and the reason), 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scenarios.loader import ScenarioError, load_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedfleet", description="Emulate federated LoRA fine-tuning on an edge fleet.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario and write its run folder")
    run.add_argument("scenario", help="a scenario YAML file, or the name of a built-in one (quickstart)")
    run.add_argument("--out", type=Path, help="run folder to create (default: output.dir/NAME-seedN-TIME)")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--workers", type=int, help="override runtime.workers (Ray actors that train)")
    run.add_argument("--address", help="attach to this Ray cluster ('auto' or host:port)")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override any scenario field, e.g. --set fleet.size=5000 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    base = sub.add_parser("build-base", help="pretrain the built-in base model on the public plays")
    base.add_argument("--out", type=Path, help="model folder (default: the built-in one, replaced)")
    base.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "build-base":
        return build_base(args)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for field, value in (("seed", args.seed), ("runtime.workers", args.workers), ("runtime.address", args.address)):
        if value is not None:
            overrides.append(f"{field}={value}")
    try:
        scenario = load_scenario(args.scenario, overrides)
        # Imported here so that a bad scenario is reported in a second, before torch and Ray load.
        from scenarios.runner import RunOptions, run_scenario

        run_dir = run_scenario(scenario, RunOptions(out=args.out, progress=not args.quiet))
    except ScenarioError as err:
        print(f"fedfleet: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}")
    print(f"report:     {run_dir / 'report.html'}")
    return 0


def build_base(args: argparse.Namespace) -> int:
    from fleet.base_model import BUILTIN_DIR, pretrain
    from fleet.data import DEFAULT_PUBLIC_PLAYS, public_text

    pretrain(args.out or BUILTIN_DIR, public_text(DEFAULT_PUBLIC_PLAYS), seed=args.seed)
    return 0


def entry() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())


if __name__ == "__main__":
    entry()
