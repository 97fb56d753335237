"""One exception type for bad input, so stage scripts can print a one-line message and exit."""


class NeedleError(ValueError):
    """Bad input (config, checkpoint, dataset, CLI). The message is one line: what is wrong and
    how to fix it."""


def run_main(main) -> None:
    """Run ``main()``; bad input ends the process with one line on stderr and exit status 2."""
    import sys

    try:
        main()
    except NeedleError as error:
        print(f"needle: error: {error}", file=sys.stderr)
        sys.exit(2)
