"""One exception type for bad input, so stage scripts can print a one-line message and exit."""


class NeedleError(ValueError):
    """Bad input (config, checkpoint, dataset, CLI). The message is one line: what is wrong and
    how to fix it."""
