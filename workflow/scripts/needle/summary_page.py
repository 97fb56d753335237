"""The summary as a page: markdown (summary.md) and standalone HTML (summary.html), one content.

The page states how every number was made (training rule, readout, selection, intervals,
multiple comparisons, divergence), then the arms, the headline relax times (chosen on validation),
the claims with their verdicts and deciding numbers, and every comparison behind them.
A page is a list of blocks, rendered twice: ("h1" | "h2" | "p", text), ("list", items) or
("table", header, rows).
"""

from __future__ import annotations

import html

import pandas as pd

from needle import names, stats
from needle.summary import MEASURES, Summary


def page(summary: Summary, settings: dict, stamp: dict | None = None) -> list[tuple]:
    claims, arms = summary.claims, summary.arms
    blocks = [
        ("h1", f"needle summary: {settings['experiment']}"),
        ("p", settings_line(settings)),
        *([("p", provenance_line(stamp))] if stamp else []),
        ("h2", "How the numbers were made"),
        ("list", rules(settings)),
        ("h2", "Arms: readout accuracy over seeds"),
        ("table", ["arm", "t_w", "test accuracy", "validation accuracy"], _arm_rows(arms)),
        ("h2", "Headline t_w (selected on validation accuracy)"),
        *_headline(arms, settings),
        ("h2", "Claims"),
        (
            "table",
            ["claim", "statement", "verdict", "rule", "deciding numbers"],
            _claim_rows(claims),
        ),
        ("h2", "Every comparison"),
        (
            "table",
            [
                "claim",
                "comparison",
                "t_w",
                "n",
                "difference",
                "verdict",
                "Bonferroni",
                "arms",
                "notes",
            ],
            _comparison_rows(claims),
        ),
    ]
    missing = sorted(
        {run for text in claims["missing_runs"].dropna() if text for run in text.split("; ")}
    )
    if missing:
        blocks += [("h2", "Missing runs (configured, absent from the tables)"), ("list", missing)]
    return blocks


def provenance_line(stamp: dict) -> str:
    """How the run was made (stamp.json, needle/provenance.py): command, commit, machine, time."""
    minutes = stamp["wall_seconds"] / 60
    versions = ", ".join(f"{name} {version}" for name, version in stamp["versions"].items())
    return (
        f"Made by `{stamp['command']}` at commit {stamp['commit']} on {stamp['machine']} "
        f"({versions}); {stamp['jobs']} jobs that train, embed or map the landscape, "
        f"{minutes:.0f} min of wall time from the first one's start to the last one's end, "
        f"finished {stamp['finished']}."
    )


def settings_line(settings: dict) -> str:
    facts = names.DATASETS[settings["dataset"]]
    model = settings["model"] + (
        f" width {settings['width']}" if settings["model"] == "skinny" else ""
    )
    canvas = settings.get("canvas_size") or 0
    where = f"on a {canvas} x {canvas} canvas" if canvas else "as shipped"
    train = settings.get("train_size") or "all remaining"
    test = settings.get("test_size") or f"all {facts.test_images:,}"
    seeds = settings["seeds"]
    relax = settings["relax"]
    times = ", ".join(map(str, relax["relax_times"]))
    return (
        f"{facts.label} images {where}; {model}; {train} training, {settings['validation_size']} "
        f"validation and {test} test images; seeds {', '.join(map(str, seeds))} "
        f"(n = {len(seeds)}); relax arms {', '.join(relax['arms'])} at t_w = {times}."
    )


def rules(settings: dict) -> list[str]:
    """Plain statements of every rule behind the numbers."""
    optimiser, comparison = settings["optimiser"], settings["comparison"]
    k = comparison["readout_epochs"]
    confidence = comparison["confidence"]
    chance = 1 / names.DATASETS[settings["dataset"]].num_classes
    if settings["validation_size"] > 0:
        selection = (
            f"Selection: only the validation split ({settings['validation_size']} images held out "
            "from the training set) selects anything: the headline t_w of each relax arm has the "
            "highest mean validation accuracy (a diverged run counted at chance). The test set "
            "selects nothing."
        )
    else:
        selection = (
            "Selection: there is no validation split (validation_size 0), so no headline t_w is "
            "reported. The test set selects nothing."
        )
    return [
        f"Training rule ({comparison['training_rule']}): every arm trains with one optimiser, "
        f"plain SGD with lr {optimiser['lr']:g}, momentum {optimiser['momentum']:g}, weight decay "
        f"{optimiser['weight_decay']:g} and batch {optimiser['batch_size']}; epochs: CNN "
        f"{settings['cnn']['epochs']}, standard FCN {settings['fcn']['epochs']}, every relax arm "
        f"and the control {settings['relax']['epochs']} after t_w.",
        f"Readout: a run's accuracy is the mean of its accuracy over its last {k} logged "
        f"epoch{'s' if k > 1 else ''} after its start (readout_epochs = {k}; 1 is the paper's "
        "final accuracy). "
        + (
            "The test set is evaluated after every epoch."
            if comparison.get("test_every_epoch", True)
            else "The test set is evaluated only at each run's start and over its readout epochs "
            "(test_every_epoch off), so it cannot select an epoch."
        ),
        selection,
        f"Intervals: two-sided {100 * confidence:g} % Student-t intervals over seeds; n is the "
        "number of seeds. Fewer than 2 seeds give no interval, and every verdict stays undecided.",
        "Verdicts: each claim is decided on paired per-seed differences (same seed = same "
        "training subset, placement and batch order): holds when the interval lies above 0, "
        "fails when it lies below 0, undecided otherwise; not tested when its arms or relax "
        "times are not configured.",
        "Multiple comparisons: a claim for every t_w holds when every unadjusted interval lies "
        "above 0 (an intersection-union test needs no adjustment) and fails when some "
        f"Bonferroni-adjusted interval (confidence 1 - {1 - confidence:g} / m over its m relax "
        "times) lies below 0; a claim for some t_w holds when some Bonferroni-adjusted interval "
        "lies above 0 and fails when every unadjusted interval lies below 0.",
        "Divergence: diverged runs are left out of every mean (and counted beside its n) and "
        f"counted against their arm in every verdict: in a paired difference a diverged run's "
        f"accuracy is chance ({chance:g}) and its deviation 1.0.",
    ]


# -- cells -----------------------------------------------------------------------------------------
def _missing(value) -> bool:
    return value is None or pd.isna(value)


def percent(mean) -> str:
    """'76.1 %' from a fraction."""
    return "none" if _missing(mean) else f"{100 * mean:.1f} %"


def percent_interval(mean, low, high) -> str:
    """'76.1 [75.2, 77.0] %' from fractions; '76.1 % (no interval)' below two seeds."""
    if _missing(mean) or _missing(low):
        return percent(mean) + ("" if _missing(mean) else " (no interval)")
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}] %"


def _units(measure: str) -> tuple[float, str, int]:
    """Scale, unit and decimals of a difference: accuracies in percentage points."""
    return (100, " points", 1) if measure == MEASURES["test_accuracy"] else (1, "", 3)


def bounds(low, high, measure: str) -> str:
    """'[+3.6, +5.2] points'; 'no interval' below two seeds."""
    scale, unit, digits = _units(measure)
    if _missing(low):
        return "no interval"
    return f"[{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]{unit}"


def difference(mean, low, high, measure: str) -> str:
    """'+4.4 [+3.6, +5.2] points' for accuracies; three decimals for other measures."""
    if _missing(mean):
        return "none"
    scale, unit, digits = _units(measure)
    if _missing(low):
        return f"{scale * mean:+.{digits}f}{unit} (no interval)"
    return f"{scale * mean:+.{digits}f} {bounds(low, high, measure)}"


def counts(n, diverged=0, missing=0) -> str:
    parts = [f"n = {int(n)}"]
    if diverged:
        parts.append(f"{int(diverged)} diverged")
    if missing:
        parts.append(f"{int(missing)} missing")
    return f"({', '.join(parts)})"


def _time(value) -> str:
    return "" if _missing(value) else str(int(value))


# -- tables ----------------------------------------------------------------------------------------
def _arm_rows(arms: pd.DataFrame) -> list[list[str]]:
    return [
        [
            names.ARM_LABELS[row.arm],
            _time(row.relax_time),
            _test_cell(row),
            percent_interval(
                row.validation_accuracy, row.validation_accuracy_low, row.validation_accuracy_high
            ),
        ]
        for row in arms.itertuples()
    ]


def _test_cell(row) -> str:
    """'76.1 [75.2, 77.0] % (n = 4, 1 diverged)' for one row of arms.csv."""
    interval = percent_interval(row.test_accuracy, row.test_accuracy_low, row.test_accuracy_high)
    return f"{interval} {counts(row.n, row.n_diverged, row.n_missing)}"


def _headline(arms: pd.DataFrame, settings: dict) -> list[tuple]:
    if settings["validation_size"] <= 0:
        return [
            (
                "p",
                "No validation split: no headline t_w is reported (the test set selects nothing).",
            )
        ]
    chosen = arms[arms["selected_on_validation"].astype(bool)]
    if chosen.empty:
        return [("p", "No relax arm has a validation readout for every run: nothing selected.")]
    return [
        (
            "list",
            [
                f"{names.ARM_LABELS[row.arm]}: t_w = {_time(row.relax_time)}, validation "
                f"{percent(row.validation_accuracy)}; its test accuracy {_test_cell(row)}"
                for row in chosen.itertuples()
            ],
        )
    ]


def _claim_rows(claims: pd.DataFrame) -> list[list[str]]:
    rows = []
    for claim in names.CLAIMS:
        group = claims[claims["claim"] == claim]
        if group.empty:
            continue
        first = group.iloc[0]
        rule = "" if first["claim_verdict"] == stats.NOT_TESTED else first["claim_rule"]
        rows.append([claim, first["statement"], first["claim_verdict"], rule, deciding(group)])
    return rows


def deciding(group: pd.DataFrame) -> str:
    """The numbers that decide one claim, in words."""
    first = group.iloc[0]
    verdict, rule = first["claim_verdict"], first["claim_rule"]
    if verdict == stats.NOT_TESTED:
        return first["note"]
    if first["claim"] == "1":
        return "; ".join(
            f"{row.comparison}: largest fp64 difference {row.exactness_fp64:.1e} of the logit "
            f"scale (tolerance {row.exactness_tolerance:.0e}), fp32 {row.exactness_fp32:.1e}, "
            f"over {int(row.n)} embeddings"
            for row in group.itertuples()
        )
    if len(group) == 1:
        text = _at(first)
    elif rule == stats.EVERY and verdict == stats.HOLDS:
        text = f"every interval above 0; the lowest: {_at(_extreme(group, 'ci_low', lowest=True))}"
    elif rule == stats.EVERY and verdict == stats.FAILS:
        text = f"{_adjusted(_extreme(group, 'adjusted_ci_high', lowest=True))} lies below 0"
    elif rule == stats.EVERY:
        text = f"not every interval above 0: {_at(_extreme(group, 'ci_low', lowest=True))}"
    elif verdict == stats.HOLDS:
        text = f"{_adjusted(_extreme(group, 'adjusted_ci_low', lowest=False))} lies above 0"
    elif verdict == stats.FAILS:
        text = (
            f"every interval below 0; the highest: {_at(_extreme(group, 'ci_high', lowest=False))}"
        )
    else:
        best = _extreme(group, "adjusted_ci_low", lowest=False)
        text = f"no Bonferroni interval above 0; the highest: {_adjusted(best)}"
    if first["claim"] == "3":
        text += (
            f"; the standard FCN's own deviation {first['first_mean']:.3f}; the eFCN's pooled "
            f"deviation {group['pooled_deviation'].max():.3f} at most, its off-subspace share of "
            f"the displacement {group['displacement_offsubspace'].max():.2f} at most"
        )
    return text


def _extreme(group: pd.DataFrame, column: str, *, lowest: bool) -> pd.Series:
    """The row with the lowest (or highest) ``column``; rows without an interval come last."""
    return group.sort_values(column, ascending=lowest, na_position="last").iloc[0]


def _at(row: pd.Series) -> str:
    """'t_w = 2: efcn - fcn +4.4 [+3.6, +5.2] points (n = 5)'."""
    where = "" if _missing(row["relax_time"]) else f"t_w = {_time(row['relax_time'])}: "
    change = difference(row["mean_difference"], row["ci_low"], row["ci_high"], row["measure"])
    seeds = counts(row["n"], row["n_diverged"], row["n_missing"])
    return f"{where}{row['comparison']} {change} {seeds}"


def _adjusted(row: pd.Series) -> str:
    interval = bounds(row["adjusted_ci_low"], row["adjusted_ci_high"], row["measure"])
    return f"t_w = {_time(row['relax_time'])}: the Bonferroni interval {interval}"


def _comparison_rows(claims: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in claims.itertuples():
        if row.claim_verdict == stats.NOT_TESTED or row.claim == "1":
            continue
        if row.measure == MEASURES["test_accuracy"]:
            means = f"{percent(row.first_mean)} vs {percent(row.second_mean)}"
        elif _missing(row.first_mean):
            means = ""
        else:
            means = f"{row.first_mean:.3f} vs {row.second_mean:.3f}"
        notes = [row.note] if row.note else []
        if row.claim == "3":
            notes.append(
                f"eFCN pooled deviation {row.pooled_deviation:.3f}, off-subspace share "
                f"{row.displacement_offsubspace:.2f}"
            )
        rows.append(
            [
                row.claim,
                row.comparison,
                _time(row.relax_time),
                counts(row.n, row.n_diverged, row.n_missing).strip("()"),
                difference(row.mean_difference, row.ci_low, row.ci_high, row.measure),
                row.verdict,
                f"{100 * row.adjusted_confidence:.4g} %: "
                + bounds(row.adjusted_ci_low, row.adjusted_ci_high, row.measure),
                means,
                "; ".join(notes),
            ]
        )
    return rows


# -- rendering -------------------------------------------------------------------------------------
def markdown(blocks: list[tuple], heading_level: int = 1) -> str:
    """Markdown of the page; "h1" becomes a heading of ``heading_level`` (a README section: 3)."""

    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = []
    for kind, *content in blocks:
        if kind in ("h1", "h2"):
            level = heading_level + (kind == "h2")
            lines += [f"{'#' * level} {content[0]}", ""]
        elif kind == "p":
            lines += [content[0], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in content[0]] + [""]
        elif kind == "table":
            header, rows = content
            lines.append("| " + " | ".join(map(cell, header)) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 75em; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.holds { background: #dff0d8; } .fails { background: #f2dede; }
.undecided { background: #fcf8e3; } .not-tested { color: #777; }
"""


def html_page(blocks: list[tuple]) -> str:
    """A standalone HTML document (inline style, no external resource)."""

    def cell(tag: str, text) -> str:
        text = str(text)
        kind = f' class="{text.replace(" ", "-")}"' if text in stats.VERDICTS else ""
        return f"<{tag}{kind}>{html.escape(text)}</{tag}>"

    title = next(content[0] for kind, *content in blocks if kind == "h1")
    body = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "list":
            body.append(
                "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in content[0]) + "</ul>"
            )
        elif kind == "table":
            header, rows = content
            head = "<tr>" + "".join(cell("th", text) for text in header) + "</tr>"
            rows = "".join(
                "<tr>" + "".join(cell("td", text) for text in row) + "</tr>" for row in rows
            )
            body.append(f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
