# needle: reproduce "Finding the Needle in the Haystack with Convolutions" (d'Ascoli et al., 2019).
# Data -> CNN (log-spaced checkpoints) -> relax eFCN/eLCN per relax time + standard FCN baseline
# -> tidy metrics -> figures and summary -> `snakemake --report report.html`.


# The default experiment, unless --configfile names another (e.g. a preset in config/).
if "experiments" not in config:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cnn.smk"
include: "workflow/rules/relax.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        rules.figures.input,
