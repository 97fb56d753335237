# Embed: the CNN checkpoint at relax time t_w as an exactly equivalent eFCN or eLCN (claim 1), with
# a record of how exact it is. The embedded net can be large: temporary, the relax job consumes it.


rule embed:
    input:
        ready=dataset_ready,
        checkpoints="results/{experiment}/seed{seed}/cnn/checkpoints",
    output:
        embedded=temp(
            "results/{experiment}/seed{seed}/{arm}/relax_at_epoch{relax_time}/embedded.pt"
        ),
        record="results/{experiment}/seed{seed}/{arm}/relax_at_epoch{relax_time}/embedding.csv",
    log:
        "logs/{experiment}/seed{seed}/embed_{arm}_at_epoch{relax_time}.log",
    benchmark:
        "results/{experiment}/benchmarks/seed{seed}/embed_{arm}_at_epoch{relax_time}.tsv"
    wildcard_constraints:
        arm="|".join(names.EMBEDDED_ARMS),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards: embedding_mb(settings(wildcards), wildcards.arm),
        runtime=60,
        gpu=GPUS_PER_JOB,
    params:
        script=stage_script("embed.py"),
        data=data_args,
        model=model_args,
        device=config["device"],
        checkpoint=lambda wildcards: checkpoint_file(wildcards, wildcards.relax_time),
        check_images=lambda wildcards: settings(wildcards)["embedding"]["check_images"],
    shell:
        "python {params.script:q} {params.data:q} {params.model:q}"
        " --device {params.device:q} --threads {threads:q} --arm {wildcards.arm:q}"
        " --relax-time {wildcards.relax_time:q} --checkpoint {params.checkpoint:q}"
        " --check-images {params.check_images:q} --embedded {output.embedded:q}"
        " --record {output.record:q} > {log:q} 2>&1"
