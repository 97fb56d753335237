# The standard FCN: the eFCN's layer shapes, freshly initialised, trained with the shared optimiser.


rule train_fcn:
    input:
        ready=dataset_ready,
    output:
        metrics="results/{experiment}/seed{seed}/fcn/metrics.csv",
        final=final_weights("results/{experiment}/seed{seed}/fcn/final.pt"),
    log:
        "logs/{experiment}/seed{seed}/train_fcn.log",
    benchmark:
        "results/{experiment}/benchmarks/seed{seed}/train_fcn.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards: training_mb(settings(wildcards), names.FCN),
        runtime=720,
        gpu=GPUS_PER_JOB,
    params:
        script=stage_script("train_fcn.py"),
        data=data_args,
        model=model_args,
        optimiser=optimiser_args,
        divergence=divergence_args,
        device=config["device"],
        fan_in=lambda wildcards: settings(wildcards)["fcn_init_fan_in"],
        epochs=lambda wildcards: settings(wildcards)["fcn"]["epochs"],
        resume_dir=lambda wildcards: f"{seed_dir(wildcards)}/fcn/resume",
    shell:
        "python {params.script:q} {params.data:q} {params.model:q} {params.optimiser:q}"
        " {params.divergence:q} --device {params.device:q} --threads {threads:q}"
        " --fan-in {params.fan_in:q} --epochs {params.epochs:q} --metrics {output.metrics:q}"
        " --final-weights {output.final:q} --resume-dir {params.resume_dir:q} > {log:q} 2>&1"
