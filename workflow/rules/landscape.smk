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
        mem_mb=lambda wildcards: training_mem_mb(wildcards, "relax"),
        runtime=120,
        gpu=TRAINING_GPU,
    params:
        script=stage_script("interpolate.py"),
        data=data_args,
        model=model_args,
        relax_times=lambda wildcards: " ".join(
            map(str, experiment(wildcards)["landscape"]["relax_times"])
        ),
        points=lambda wildcards: experiment(wildcards)["landscape"]["points"],
        examples=lambda wildcards: experiment(wildcards)["landscape"]["examples"],
        eval_batch_size=lambda wildcards: experiment(wildcards)["eval_batch_size"],
        runtime=lambda wildcards, threads: runtime_args(threads),
    shell:
        "python {params.script} {params.data} {params.model}"
        " --experiment {wildcards.experiment} --relax-times {params.relax_times}"
        " --cnn-checkpoints $(for t in {params.relax_times}; do printf '%s ' {input.checkpoints}/epoch$t.pt; done)"
        " --efcn-finals {input.efcn_finals} --fcn-final {input.fcn_final}"
        " --points {params.points} --examples {params.examples}"
        " --eval-batch-size {params.eval_batch_size} {params.runtime} --output {output} > {log} 2>&1"
