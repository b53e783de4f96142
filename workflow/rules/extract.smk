# Extract stage: per run, activations of every named layer for each analysed epoch and every
# probe set; each checkpoint is loaded once for all probe sets.


rule extract:
    input:
        checkpoints=path(layout.CHECKPOINTS),
        probes=[path(layout.PROBE, probe=probe) for probe in PROBES],
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
        # x-runtime-only settings travel as a resource: unlike params, not a rerun trigger.
        extract_runtime=as_json(study.split_runtime(CFG["extract"], "extract")[1]),
    params:
        epochs=analysed_epochs,
        probes=named_args("probe", [(p, path(layout.PROBE, probe=p)) for p in PROBES]),
        out_dir=lambda w: path(layout.RUN_ACTIVATIONS, method=w.method, seed=w.seed),
        settings=as_json(study.split_runtime(study.extract_settings(CFG), "extract")[0]),
        cache=CACHE,
    shell:
        "ssltrace extract --checkpoints-dir {input.checkpoints:q} {params.probes} "
        "--epochs {params.epochs} --out-dir {params.out_dir:q} --threads {threads} "
        "--cache-dir {params.cache:q} --settings {params.settings:q} "
        "--runtime {resources.extract_runtime:q} > {log:q} 2>&1"
