# Settings: each experiment's resolved settings as JSON, what the tables, summary and figures read
# (rewritten whenever a setting changes: Snakemake reruns a job whose params changed).


rule write_settings:
    output:
        "results/{experiment}/settings.json",
    log:
        "logs/{experiment}/settings.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=5,
    params:
        script=stage_script("write_settings.py"),
        settings=lambda wildcards: json.dumps(settings(wildcards), sort_keys=True),
    shell:
        "python {params.script:q} --experiment {wildcards.experiment:q}"
        " --settings {params.settings:q} --output {output:q} > {log:q} 2>&1"
