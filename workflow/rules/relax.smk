# Relax: embed the CNN checkpoint at relax time t_w (eFCN or eLCN) and keep training in that space.


rule relax:
    input:
        ready=dataset_ready,
        checkpoints="results/{experiment}/seed{seed}/cnn/checkpoints",
    output:
        metrics="results/{experiment}/seed{seed}/{arm}/relax_at_epoch{relax_time}/metrics.csv",
        final=final_weights(
            "results/{experiment}/seed{seed}/{arm}/relax_at_epoch{relax_time}/final.pt"
        ),
    log:
        "logs/{experiment}/seed{seed}/relax_{arm}_at_epoch{relax_time}.log",
    benchmark:
        "results/{experiment}/benchmarks/seed{seed}/relax_{arm}_at_epoch{relax_time}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards: training_mem_mb(wildcards, "relax"),
        runtime=480,
        gpu=TRAINING_GPU,
    params:
        script=stage_script("relax.py"),
        data=data_args,
        model=model_args,
        optimiser=lambda wildcards: optimiser_args(wildcards, "relax"),
        resume_dir=lambda wildcards: f"{run_dir(wildcards)}/{wildcards.arm}/relax_at_epoch{wildcards.relax_time}/resume",
        runtime=lambda wildcards, threads: runtime_args(threads),
    shell:
        "python {params.script} {params.data} {params.model}"
        " {params.optimiser} {params.runtime} --arm {wildcards.arm}"
        " --relax-time {wildcards.relax_time} --checkpoint {input.checkpoints}/epoch{wildcards.relax_time}.pt"
        " --metrics {output.metrics} --final-weights {output.final}"
        " --resume-dir {params.resume_dir} > {log} 2>&1"
