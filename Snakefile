# needle: reproduce "Finding the Needle in the Haystack with Convolutions" (d'Ascoli et al., 2019).
# Data -> CNN (log-spaced checkpoints) -> embed as eFCN/eLCN at each relax time -> relax (with the
# CNN continued as the control) + standard FCN -> tables -> summary and figures
# -> `snakemake --report report.html`.


# The default experiment, unless --configfile names another (e.g. a preset in config/).
if "experiments" not in config:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/settings.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cnn.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/relax.smk"
include: "workflow/rules/fcn.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/publish.smk"


report: "workflow/report/workflow.rst"


rule all:
    """Every experiment's summary, figures and per-run tables, and the sweep figure if any."""
    default_target: True
    input:
        [path for name in EXPERIMENTS for path in experiment_outputs(name)],
        sweep_outputs(),
