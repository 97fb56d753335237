# Tables: the experiment's per-run outputs gathered (tidy metrics, one row per run with its readout,
# landscape, embedding records), parameter counts, and the summary that decides each claim.


rule aggregate_metrics:
    input:
        runs=lambda wildcards: [path for *_, path in run_tables(wildcards.experiment)],
        embedding=lambda wildcards: embedding_records(wildcards.experiment),
        landscape=lambda wildcards: landscape_tables(wildcards.experiment),
    output:
        metrics="results/{experiment}/metrics.csv",
        runs="results/{experiment}/runs.csv",
        landscape="results/{experiment}/landscape.csv",
        embedding="results/{experiment}/embedding.csv",
    log:
        "logs/{experiment}/aggregate_metrics.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=4096,
        runtime=15,
    params:
        script=stage_script("aggregate_metrics.py"),
        dataset=lambda wildcards: settings(wildcards)["dataset"],
        model=lambda wildcards: settings(wildcards)["model"],
        readout_epochs=lambda wildcards: settings(wildcards)["comparison"][
            "readout_epochs"
        ],
        runs=run_words,
        landscape=lambda wildcards, input: optional_words(
            "--landscape", input.landscape
        ),
        embedding=lambda wildcards, input: optional_words(
            "--embedding", input.embedding
        ),
    shell:
        "python {params.script:q} --experiment {wildcards.experiment:q}"
        " --dataset {params.dataset:q} --model {params.model:q}"
        " --readout-epochs {params.readout_epochs:q} {params.runs:q}"
        " {params.landscape:q} {params.embedding:q}"
        " --metrics-output {output.metrics:q} --runs-output {output.runs:q}"
        " --landscape-output {output.landscape:q} --embedding-output {output.embedding:q}"
        " > {log:q} 2>&1"


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
        runtime=10,
    params:
        script=stage_script("parameter_counts.py"),
        dataset=lambda wildcards: settings(wildcards)["dataset"],
        canvas_size=lambda wildcards: settings(wildcards)["canvas_size"],
        model=model_args,
    shell:
        "python {params.script:q} --experiment {wildcards.experiment:q}"
        " --dataset {params.dataset:q} --canvas-size {params.canvas_size:q} {params.model:q}"
        " --output {output:q} > {log:q} 2>&1"


rule summarize:
    input:
        settings="results/{experiment}/settings.json",
        runs="results/{experiment}/runs.csv",
        embedding="results/{experiment}/embedding.csv",
        landscape="results/{experiment}/landscape.csv",
        stamp="results/{experiment}/stamp.json",
    output:
        csv=report(
            "results/{experiment}/summary.csv",
            category="{experiment}",
            labels={"table": "claims"},
        ),
        arms=report(
            "results/{experiment}/arms.csv",
            category="{experiment}",
            labels={"table": "arms"},
        ),
        markdown="results/{experiment}/summary.md",
        html=report(
            "results/{experiment}/summary.html",
            caption="../report/summary.rst",
            category="{experiment}",
            labels={"table": "summary"},
        ),
    log:
        "logs/{experiment}/summarize.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=10,
    params:
        script=stage_script("summarize.py"),
    shell:
        "python {params.script:q} --settings {input.settings:q} --runs {input.runs:q}"
        " --embedding {input.embedding:q} --landscape {input.landscape:q}"
        " --stamp {input.stamp:q} --csv {output.csv:q} --arms {output.arms:q} --markdown {output.markdown:q}"
        " --html {output.html:q} > {log:q} 2>&1"


rule metrics:
    """Named target: the tables of every experiment (all training included)."""
    input:
        expand(
            "results/{experiment}/{table}.csv",
            experiment=EXPERIMENTS,
            table=["metrics", "runs", "landscape", "embedding", "parameter_counts"],
        ),
