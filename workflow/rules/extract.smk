# Extract stage: per run and probe set, activations of every named layer for each analysed epoch.


rule extract:
    input:
        checkpoints=f"{R}/runs/{{method}}/seed{{seed}}/checkpoints",
        probe=f"{R}/probes/{{probe}}.npz",
    output:
        activations_dir(),
    log:
        f"{LOGS}/extract/{{method}}_seed{{seed}}_{{probe}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=minutes(60),
    params:
        epochs=analysed_epochs,
        settings=extract_settings(),
        cache=CACHE,
    shell:
        "ssltrace extract --checkpoints-dir {input.checkpoints:q} --probe {input.probe:q} "
        "--epochs {params.epochs} --out-dir {output:q} --threads {threads} "
        "--cache-dir {params.cache:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"
