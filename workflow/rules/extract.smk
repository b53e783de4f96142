# Extract stage: per run and probe set, activations of every named layer for each analysed epoch.


rule extract:
    input:
        checkpoints=f"{R}/runs/{{method}}/seed{{seed}}/checkpoints",
        probe=f"{R}/probes/{{probe}}.npz",
    output:
        directory(f"{R}/activations/{{method}}/seed{{seed}}/{{probe}}"),
    log:
        f"{LOGS}/extract/{{method}}_seed{{seed}}_{{probe}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        epochs=analysed_epochs,
        settings=extract_settings(),
    shell:
        "ssltrace extract --checkpoints-dir {input.checkpoints:q} --probe {input.probe:q} "
        "--epochs {params.epochs} --out-dir {output:q} --threads {threads} "
        "--settings {params.settings:q} > {log:q} 2>&1"
