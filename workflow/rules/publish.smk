# Provenance and publishing: how a run was made (stamp.json), and a finished run's small tables
# copied to docs/ with the README's results block rewritten from them (`snakemake publish`).


rule stamp:
    input:
        settings="results/{experiment}/settings.json",
        # runs.csv is rebuilt whenever a run is: the stamp then reads the benchmark records
        # there are. They are not inputs themselves, so a missing record never reruns training.
        runs="results/{experiment}/runs.csv",
    output:
        "results/{experiment}/stamp.json",
    log:
        "logs/{experiment}/stamp.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=5,
    params:
        script=stage_script("stamp.py"),
        benchmarks=lambda wildcards, input: os.path.join(
            os.path.dirname(input.runs), "benchmarks"
        ),
        configfiles=[os.path.relpath(path) for path in workflow.configfiles],
    shell:
        "python {params.script:q} --settings {input.settings:q}"
        " --benchmarks {params.benchmarks:q} --configfile {params.configfiles:q}"
        " --output {output:q} > {log:q} 2>&1"


rule publish:
    """Named target: publish the config's one experiment into docs/ and the README."""
    input:
        tables=published_tables,
    output:
        f"docs/results/{PUBLISHED}/stamp.json",
    log:
        f"logs/{PUBLISHED}/publish.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=4096,
        runtime=15,
    params:
        script=stage_script("publish.py"),
        results=lambda wildcards, input: os.path.dirname(input.tables[0]),
        docs=lambda wildcards, output: os.path.dirname(output[0]),
        readme=str(Path(workflow.basedir) / "README.md"),
    shell:
        "python {params.script:q} --results {params.results:q} --docs {params.docs:q}"
        " --readme {params.readme:q} > {log:q} 2>&1"
