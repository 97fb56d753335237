"""One exception type for bad input, so that every script ends with one line and exit status 2."""

from __future__ import annotations

import sys


class NeedleError(ValueError):
    """Bad input (config, checkpoint, dataset, CLI) or a run that cannot go on. The message is one
    line: what is wrong and how to fix it."""


def run_main(main) -> None:
    """Run ``main()``; a NeedleError ends the process with one line on stderr and exit status 2."""
    try:
        main()
    except NeedleError as error:
        print(f"needle: error: {error}", file=sys.stderr)
        sys.exit(2)
