# Landscape: loss and accuracy along straight lines between eFCN and FCN solutions (claim 6).


rule landscape:
    input:
        unpack(landscape_inputs),
    output:
        "results/{experiment}/seed{seed}/landscape.csv",
    log:
        "logs/{experiment}/seed{seed}/landscape.log",
    benchmark:
        "results/{experiment}/benchmarks/seed{seed}/landscape.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards: landscape_mb(settings(wildcards)),
        runtime=240,
        gpu=GPUS_PER_JOB,
    params:
        script=stage_script("landscape.py"),
        data=data_args,
        model=model_args,
        device=config["device"],
        relax_times=lambda wildcards: [str(time) for time in landscape_times(wildcards)],
        cnn_checkpoints=lambda wildcards: [
            checkpoint_file(wildcards, time) for time in landscape_times(wildcards)
        ],
        points=lambda wildcards: settings(wildcards)["landscape"]["points"],
        examples=lambda wildcards: settings(wildcards)["landscape"]["examples"],
        eval_batch_size=lambda wildcards: settings(wildcards)["eval_batch_size"],
    shell:
        "python {params.script:q} {params.data:q} {params.model:q}"
        " --device {params.device:q} --threads {threads:q} --experiment {wildcards.experiment:q}"
        " --relax-times {params.relax_times:q} --cnn-checkpoints {params.cnn_checkpoints:q}"
        " --efcn-finals {input.efcn_finals:q} --fcn-final {input.fcn_final:q}"
        " --points {params.points:q} --examples {params.examples:q}"
        " --eval-batch-size {params.eval_batch_size:q} --output {output:q} > {log:q} 2>&1"
