# CNN: one training job per experiment and seed, keeping every log-spaced checkpoint (the relax times).


rule train_cnn:
    input:
        ready=dataset_ready,
    output:
        checkpoints=directory("results/{experiment}/seed{seed}/cnn/checkpoints"),
        metrics="results/{experiment}/seed{seed}/cnn/metrics.csv",
    log:
        "logs/{experiment}/seed{seed}/train_cnn.log",
    benchmark:
        "results/{experiment}/benchmarks/seed{seed}/train_cnn.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards: training_mb(settings(wildcards), names.CNN),
        runtime=360,
        gpu=GPUS_PER_JOB,
    params:
        script=stage_script("train_cnn.py"),
        data=data_args,
        model=model_args,
        optimiser=optimiser_args,
        divergence=divergence_args,
        device=config["device"],
        epochs=lambda wildcards: settings(wildcards)["cnn"]["epochs"],
        checkpoint_points=lambda wildcards: settings(wildcards)["cnn"][
            "checkpoint_points"
        ],
        resume_dir=lambda wildcards: f"{seed_dir(wildcards)}/cnn/resume",
    shell:
        "python {params.script:q} {params.data:q} {params.model:q} {params.optimiser:q}"
        " {params.divergence:q} --device {params.device:q} --threads {threads:q}"
        " --epochs {params.epochs:q} --checkpoint-points {params.checkpoint_points:q}"
        " --checkpoint-dir {output.checkpoints:q} --metrics {output.metrics:q}"
        " --resume-dir {params.resume_dir:q} > {log:q} 2>&1"


rule cnn:
    """Named target: every CNN with all its checkpoints."""
    input:
        [
            f"results/{name}/seed{seed}/cnn/metrics.csv"
            for name in EXPERIMENTS
            for seed in EXPERIMENTS[name]["seeds"]
        ],
