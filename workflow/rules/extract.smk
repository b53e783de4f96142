# Extract stage: per run, activations of every named layer for each analysed epoch and every
# probe set; each checkpoint is loaded once for all probe sets.


rule extract:
    input:
        checkpoints=f"{R}/runs/{{method}}/seed{{seed}}/checkpoints",
        probes=expand(f"{R}/probes/{{probe}}.npz", probe=PROBES),
    output:
        **{probe: activations_dir(probe) for probe in PROBES},
    log:
        f"{LOGS}/extract/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=minutes(60),
    params:
        epochs=analysed_epochs,
        probes=" ".join(
            f"--probe {shlex.quote(f'{probe}={R}/probes/{probe}.npz')}"
            for probe in PROBES
        ),
        out_dir=lambda w: f"{R}/activations/{w.method}/seed{w.seed}",
        settings=extract_settings(),
        cache=CACHE,
    shell:
        "ssltrace extract --checkpoints-dir {input.checkpoints:q} {params.probes} "
        "--epochs {params.epochs} --out-dir {params.out_dir:q} --threads {threads} "
        "--cache-dir {params.cache:q} --settings {params.settings:q} > {log:q} 2>&1"
