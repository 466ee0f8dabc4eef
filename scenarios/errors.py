"""The error every scenario-facing step raises for bad input: the CLI prints it and exits with status 2."""


class ScenarioError(ValueError):
    """Bad scenario input; the message lists 'field.path: reason' lines."""


class RunStopped(Exception):
    """The run stopped before its end; its folder goes on from its last checkpoint with --resume."""

    def __init__(self, run_dir, reason: str, exit_status: int):
        super().__init__(f"{reason}. The run folder {run_dir} keeps every round up to its last checkpoint; "
                         f"go on with: fedfleet run --resume {run_dir}")
        self.run_dir, self.exit_status = run_dir, exit_status
