# Figures and summary: drawn from the tidy tables alone, so they redraw in seconds without training.

FIGURES = [
    "accuracy_vs_relax_time.png",
    "learning_curves.png",
    "deviation.png",
    "landscape.png",
    "projection_probe.png",
]


rule plot_figures:
    input:
        metrics="results/{experiment}/metrics.csv",
        landscape="results/{experiment}/landscape.csv",
        parameter_counts="results/{experiment}/parameter_counts.csv",
    output:
        [
            report(
                f"results/{{experiment}}/figures/{name}",
                caption=f"../report/{name.removesuffix('.png')}.rst",
                category="{experiment}",
                labels={"figure": name.removesuffix(".png").replace("_", " ")},
            )
            for name in FIGURES
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
        mem_mb=2048,
        runtime=15,
    params:
        script=stage_script("plot_figures.py"),
        outdir=lambda wildcards: f"results/{wildcards.experiment}/figures",
    shell:
        "python {params.script} --metrics {input.metrics}"
        " --landscape {input.landscape} --parameter-counts {input.parameter_counts}"
        " --outdir {params.outdir} > {log} 2>&1"


rule summarize:
    input:
        metrics="results/{experiment}/metrics.csv",
    output:
        csv="results/{experiment}/summary.csv",
        markdown=report(
            "results/{experiment}/summary.md",
            caption="../report/summary.rst",
            category="{experiment}",
            labels={"figure": "summary"},
        ),
    log:
        "logs/{experiment}/summarize.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=15,
    params:
        script=stage_script("summarize.py"),
    shell:
        "python {params.script} --metrics {input.metrics}"
        " --csv {output.csv} --markdown {output.markdown} > {log} 2>&1"


rule figures:
    """Named target: every figure and summary (redrawn from the tables when those are newer)."""
    input:
        expand(
            "results/{experiment}/figures/{name}",
            experiment=EXPERIMENTS,
            name=FIGURES + ["parameter_counts.md"],
        ),
        expand("results/{experiment}/summary.md", experiment=EXPERIMENTS),
