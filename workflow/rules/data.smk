# Data: make each dataset's raw files available once (Debian package, cache or torchvision download).


rule prepare_data:
    output:
        ready=f"{as_pattern(DATA_DIR)}/{{dataset}}.ready",
    log:
        "logs/prepare_data/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        script=stage_script("prepare_data.py"),
        data_dir=lambda wildcards, output: Path(output.ready).parent,
    shell:
        "python {params.script:q} --dataset {wildcards.dataset:q}"
        " --data-dir {params.data_dir:q} --done {output.ready:q} > {log:q} 2>&1"
