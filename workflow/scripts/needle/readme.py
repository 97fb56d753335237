"""The README's results block, written from a published run's tables (docs/results/<experiment>/).

No number in the README is typed by hand: `snakemake --cores 2 publish --configfile <preset>` copies a run's
small tables to docs/results/<experiment>/ and rewrites the block between the markers from them;
tests/test_readme.py fails when the README and those tables disagree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from needle import names, summary_page, tables
from needle.errors import NeedleError
from needle.summary import MEASURES, Summary

BEGIN = "<!-- results of {folder}: begin (written by snakemake publish; do not edit by hand) -->"
END = "<!-- results: end -->"
BLOCK = re.compile(
    r"<!-- results of (?P<folder>\S+): begin \(written by snakemake publish; do not edit by "
    r"hand\) -->\n.*?<!-- results: end -->\n",
    re.DOTALL,
)
LEFT_OUT = ("Every comparison",)  # the full table stays in the published summary.md


def block(folder: str | os.PathLike, readme: str | os.PathLike) -> str:
    """The markdown block for the run published in ``folder``, with links relative to ``readme``."""
    folder = Path(folder)
    settings = tables.read_settings(folder / "settings.json")
    stamp = tables.read_stamp(folder / "stamp.json")
    summary = Summary(
        tables.read_claims(folder / "summary.csv"), tables.read_arm_summary(folder / "arms.csv")
    )
    blocks, skipping = [], False
    for item in summary_page.page(summary, settings, stamp):
        if item[0] == "h2":
            skipping = item[1] in LEFT_OUT
        if not skipping:
            blocks.append(item)
    base = Path(readme).resolve().parent
    where = Path(os.path.relpath(folder.resolve(), base)).as_posix()
    lines = [
        BEGIN.format(folder=where),
        summary_page.markdown(blocks, heading_level=3),
        resolution(summary, len(settings["seeds"])),
        "",
        f"![Readout test accuracy against t_w]({where}/figures/accuracy_vs_relax_time.png)",
        "",
        "Every figure of this run: "
        + ", ".join(
            f"[{name.replace('_', ' ')}]({where}/figures/{name}.png)" for name in names.FIGURES
        )
        + f"; every comparison behind the verdicts: [summary]({where}/summary.md); "
        f"its tables: {where}/.",
        END,
    ]
    return "\n".join(lines) + "\n"


def resolution(summary: Summary, seeds: int) -> str:
    """Which effect sizes the run can resolve: the half-widths of its paired accuracy intervals."""
    claims = summary.claims
    accuracy = claims[(claims["measure"] == MEASURES["test_accuracy"]) & claims["ci_low"].notna()]
    if accuracy.empty:
        return (
            f"With n = {seeds} seed(s) no paired interval exists, so no accuracy claim can be "
            "decided: run more seeds."
        )
    half = 100 * (accuracy["ci_high"] - accuracy["ci_low"]) / 2
    adjusted = accuracy["adjusted_ci_low"].notna()
    adjusted_half = 100 * (accuracy["adjusted_ci_high"] - accuracy["adjusted_ci_low"]) / 2
    text = (
        f"What this run can resolve: with n = {seeds} seeds the paired accuracy intervals have "
        f"half-widths of {half.min():.1f} to {half.max():.1f} points (median "
        f"{np.median(half):.1f}): a difference clearly larger than that is decided, a smaller one "
        "stays undecided"
    )
    if adjusted.any():
        text += (
            f"; where a claim tests several relax times at once, the Bonferroni intervals are "
            f"wider (median half-width {np.median(adjusted_half[adjusted]):.1f} points)"
        )
    return text + "."


def replace(readme_text: str, new_block: str) -> str:
    """``readme_text`` with its one results block replaced by ``new_block``."""
    found = BLOCK.findall(readme_text)
    if len(found) != 1:
        raise NeedleError(
            f"README has {len(found)} results blocks, expected exactly one between "
            f"'{BEGIN.format(folder='<folder>')}' and '{END}'"
        )
    return BLOCK.sub(lambda _: new_block, readme_text)


def published_folder(readme_text: str, readme: str | os.PathLike) -> Path:
    """The docs folder whose tables the README's block was written from."""
    match = BLOCK.search(readme_text)
    if match is None:
        raise NeedleError(f"{readme} has no results block (markers '{END}')")
    return Path(readme).resolve().parent / match["folder"]
