"""The one exception type the CLI turns into a single line and exit code 2."""


class BenchError(Exception):
    """A problem with the user's input or environment, stated with its fix.

    The message is one line: what is wrong and what to do about it. The CLI
    prints it without a traceback and exits with code 2.
    """
