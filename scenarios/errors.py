"""The error every scenario-facing step raises for bad input: the CLI prints it and exits with status 2."""


class ScenarioError(ValueError):
    """Bad scenario input; the message lists 'field.path: reason' lines."""
