# Baseline: a standard FCN with the eFCN's layer shapes and PyTorch's default initialisation.


rule train_fcn:
    input:
        dataset_ready,
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
        mem_mb=lambda wildcards: training_mem_mb(wildcards, "fcn"),
        runtime=480,
        gpu=TRAINING_GPU,
    params:
        script=stage_script("train_fcn.py"),
        data=data_args,
        model=model_args,
        optimiser=lambda wildcards: optimiser_args(wildcards, "fcn"),
        resume_dir=lambda wildcards: f"{run_dir(wildcards)}/fcn/resume",
        runtime=lambda wildcards, threads: runtime_args(threads),
    shell:
        "python {params.script} {params.data} {params.model}"
        " {params.optimiser} {params.runtime} --metrics {output.metrics}"
        " --final-weights {output.final} --resume-dir {params.resume_dir} > {log} 2>&1"
