"""The one error type the CLI turns into a one-line message and exit code 2."""


class UsageError(Exception):
    """Bad user input: names what is wrong and what is allowed."""
