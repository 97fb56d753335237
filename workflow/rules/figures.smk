# Figures: drawn from the experiment's tables alone, so they redraw in seconds without training.


rule plot_figures:
    input:
        settings="results/{experiment}/settings.json",
        metrics="results/{experiment}/metrics.csv",
        runs="results/{experiment}/runs.csv",
        landscape="results/{experiment}/landscape.csv",
        parameter_counts="results/{experiment}/parameter_counts.csv",
    output:
        [
            report(
                f"results/{{experiment}}/figures/{figure}.png",
                caption=f"../report/{figure}.rst",
                category="{experiment}",
                labels={"figure": figure.replace("_", " ")},
            )
            for figure in names.FIGURES
        ],
        parameter_table=report(
            "results/{experiment}/figures/parameter_counts.md",
            caption="../report/parameter_counts.rst",
            category="{experiment}",
            labels={"figure": "parameter counts"},
        ),
    log:
        "logs/{experiment}/plot_figures.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=4096,
        runtime=15,
    params:
        script=stage_script("plot_figures.py"),
        outdir=lambda wildcards: f"results/{wildcards.experiment}/figures",
    shell:
        "python {params.script:q} --settings {input.settings:q} --metrics {input.metrics:q}"
        " --runs {input.runs:q} --landscape {input.landscape:q}"
        " --parameter-counts {input.parameter_counts:q} --outdir {params.outdir:q}"
        " > {log:q} 2>&1"


if SWEEP_SETTING:

    rule plot_sweep:
        """The experiments differ in one setting: each arm's gain over the standard FCN against it."""
        input:
            settings=expand(
                "results/{experiment}/settings.json", experiment=EXPERIMENTS
            ),
            runs=expand("results/{experiment}/runs.csv", experiment=EXPERIMENTS),
        output:
            report(
                "results/sweep/gain_vs_{setting}.png",
                caption="../report/gain_vs_setting.rst",
                category="sweep",
                labels={"figure": "gain vs {setting}"},
            ),
        log:
            "logs/sweep/plot_sweep_{setting}.log",
        wildcard_constraints:
            setting=re.escape(SWEEP_SETTING),
        conda:
            "../../envs/plot.yaml"
        threads: 1
        resources:
            mem_mb=2048,
            runtime=10,
        params:
            script=stage_script("plot_sweep.py"),
        shell:
            "python {params.script:q} --settings {input.settings:q} --runs {input.runs:q}"
            " --setting {wildcards.setting:q} --output {output:q} > {log:q} 2>&1"


rule figures:
    """Named target: every figure and summary (redrawn from the tables when those are newer)."""
    input:
        expand(
            "results/{experiment}/figures/{name}",
            experiment=EXPERIMENTS,
            name=[f"{figure}.png" for figure in names.FIGURES]
            + ["parameter_counts.md"],
        ),
        expand("results/{experiment}/summary.html", experiment=EXPERIMENTS),
        sweep_outputs(),
