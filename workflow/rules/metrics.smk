# Metrics: one tidy table per experiment (every run, epoch, metric and layer) + parameter counts.


rule aggregate_metrics:
    input:
        runs=lambda wildcards: [path for *_, path in run_metrics(wildcards.experiment)],
        landscape=landscape_tables,
    output:
        metrics="results/{experiment}/metrics.csv",
        landscape="results/{experiment}/landscape.csv",
    log:
        "logs/{experiment}/aggregate_metrics.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=15,
    params:
        script=stage_script("aggregate_metrics.py"),
        dataset=lambda wildcards: experiment(wildcards)["dataset"],
        model=lambda wildcards: experiment(wildcards)["model"],
        runs=run_arguments,
    shell:
        "python {params.script} --experiment {wildcards.experiment}"
        " --dataset {params.dataset} --model {params.model} {params.runs}"
        " --landscape {input.landscape} --output {output.metrics}"
        " --landscape-output {output.landscape} > {log} 2>&1"


rule parameter_counts:
    output:
        "results/{experiment}/parameter_counts.csv",
    log:
        "logs/{experiment}/parameter_counts.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=15,
    params:
        script=stage_script("parameter_counts.py"),
        dataset=lambda wildcards: experiment(wildcards)["dataset"],
        canvas_size=lambda wildcards: experiment(wildcards)["canvas_size"],
        model=model_args,
    shell:
        "python {params.script} --experiment {wildcards.experiment}"
        " --dataset {params.dataset} --canvas-size {params.canvas_size} {params.model}"
        " --output {output} > {log} 2>&1"


rule metrics:
    """Named target: the tidy tables of every experiment (all training included)."""
    input:
        expand("results/{experiment}/metrics.csv", experiment=EXPERIMENTS),
        expand("results/{experiment}/parameter_counts.csv", experiment=EXPERIMENTS),
