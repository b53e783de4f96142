# Pretrain stage: one job per run (method x seed), a checkpoint for every epoch (0 = init).
# The resume state lives in {run}/.state, outside the declared outputs, because Snakemake deletes
# a failed job's outputs; checkpoints/ holds hard links to the stored epochs. A run with
# train.processes N > 1 asks for N GPUs and is started by torchrun (src/ssltrace/training/ddp.py).


rule pretrain:
    input:
        dataset=dataset_file(),
        split=path(layout.SPLIT),
    output:
        checkpoints=directory(path(layout.CHECKPOINTS)),
        table=path(layout.TRAIN_LOG),
    log:
        f"{LOGS}/pretrain/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 4
    resources:
        gpu=run_processes,
        mem_mb=16000,
        runtime=pretrain_runtime,
        # x-runtime-only settings travel as a resource: unlike params, not a rerun trigger.
        train_runtime=run_runtime,
    params:
        settings=run_settings,
        out_dir=lambda w: path(layout.RUN, method=w.method, seed=w.seed),
        launcher=run_launcher,
    shell:
        "{params.launcher} pretrain --dataset {input.dataset:q} --split {input.split:q} "
        "--out-dir {params.out_dir:q} --threads {threads} "
        "--settings {params.settings:q} --runtime {resources.train_runtime:q} > {log:q} 2>&1"
