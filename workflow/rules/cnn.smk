# CNN: one training job per experiment and seed, keeping every log-spaced checkpoint (the relax times).


rule train_cnn:
    input:
        dataset_ready,
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
        mem_mb=lambda wildcards: training_mem_mb(wildcards, "cnn"),
        runtime=240,
        gpu=TRAINING_GPU,
    params:
        script=stage_script("train_cnn.py"),
        data=data_args,
        model=model_args,
        optimiser=lambda wildcards: optimiser_args(wildcards, "cnn"),
        checkpoint_points=lambda wildcards: experiment(wildcards)["cnn"][
            "checkpoint_points"
        ],
        resume_dir=lambda wildcards: f"{run_dir(wildcards)}/cnn/resume",
        runtime=lambda wildcards, threads: runtime_args(threads),
    shell:
        "python {params.script} {params.data} {params.model}"
        " {params.optimiser} {params.runtime} --checkpoint-points {params.checkpoint_points}"
        " --checkpoint-dir {output.checkpoints} --metrics {output.metrics}"
        " --resume-dir {params.resume_dir} > {log} 2>&1"


rule cnn:
    """Named target: every CNN with all its checkpoints."""
    input:
        [
            f"results/{name}/seed{seed}/cnn/metrics.csv"
            for name in EXPERIMENTS
            for seed in EXPERIMENTS[name]["seeds"]
        ],
