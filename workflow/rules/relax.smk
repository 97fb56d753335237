# Relax: from the CNN at relax time t_w, train on for relax.epochs with the shared optimiser: as its
# eFCN or eLCN (the embed rule's output), or as the CNN itself (cnn_continued, the control arm).


rule relax:
    input:
        ready=dataset_ready,
        start=relax_start,
    output:
        metrics="results/{experiment}/seed{seed}/{arm}/relax_at_epoch{relax_time}/metrics.csv",
        final=final_weights(
            "results/{experiment}/seed{seed}/{arm}/relax_at_epoch{relax_time}/final.pt"
        ),
    log:
        "logs/{experiment}/seed{seed}/relax_{arm}_at_epoch{relax_time}.log",
    benchmark:
        "results/{experiment}/benchmarks/seed{seed}/relax_{arm}_at_epoch{relax_time}.tsv"
    wildcard_constraints:
        arm="|".join(names.RELAX_ARMS),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards: training_mb(settings(wildcards), wildcards.arm),
        runtime=720,
        gpu=GPUS_PER_JOB,
    params:
        script=stage_script("relax.py"),
        data=data_args,
        model=model_args,
        optimiser=optimiser_args,
        divergence=divergence_args,
        device=config["device"],
        start=relax_start_file,
        epochs=lambda wildcards: settings(wildcards)["relax"]["epochs"],
        resume_dir=lambda wildcards: f"{run_dir(wildcards)}/resume",
    shell:
        "python {params.script:q} {params.data:q} {params.model:q} {params.optimiser:q}"
        " {params.divergence:q} --device {params.device:q} --threads {threads:q}"
        " --arm {wildcards.arm:q} --relax-time {wildcards.relax_time:q}"
        " --start {params.start:q} --epochs {params.epochs:q} --metrics {output.metrics:q}"
        " --final-weights {output.final:q} --resume-dir {params.resume_dir:q} > {log:q} 2>&1"
