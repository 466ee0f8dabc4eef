"""Scenario files: the schema, loading and validation, the built-in scenarios, and the command line."""
