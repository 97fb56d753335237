"""Settings: write an experiment's resolved settings (JSON from the workflow) as settings.json.

The summary and the figures read the training rule, readout, confidence and relax times from this
file, so they state exactly what the runs were given.
"""

import argparse
import json

from needle.atomic import atomic_write_text
from needle.config_checks import check_schema
from needle.errors import NeedleError, run_main


def parse_settings(experiment: str, text: str) -> dict:
    """The settings of one experiment, checked against the config schema, with its name added."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise NeedleError(
            f"--settings is not JSON ({error}); pass the experiment's settings"
        ) from None
    if not isinstance(settings, dict):
        raise NeedleError(f"--settings must be a JSON object, got {type(settings).__name__}")
    settings.pop("experiment", None)
    check_schema({"experiments": {experiment: settings}})
    return {**settings, "experiment": experiment}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True, help="the experiment's name")
    parser.add_argument("--settings", required=True, help="its resolved settings, as JSON text")
    parser.add_argument("--output", required=True, help="settings.json to write")
    args = parser.parse_args()
    settings = parse_settings(args.experiment, args.settings)
    atomic_write_text(args.output, json.dumps(settings, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    run_main(main)
