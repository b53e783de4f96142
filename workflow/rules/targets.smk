# Random targets (seed 004 §5): the target networks are runs `target_<network>` of the pretrain
# rule; this rule turns every epoch of each into a label set for the known probe images.


rule target_labels:
    input:
        **target_checkpoints(),
        probe=path(layout.PROBE, probe="known"),
    output:
        path(layout.TARGET_LABELS),
    log:
        f"{LOGS}/target_labels/target_labels.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=minutes(60),
        # x-runtime-only settings travel as a resource: unlike params, not a rerun trigger.
        targets_runtime=as_json(target_labels_settings()[1]),
    params:
        targets=named_args("target", target_checkpoints().items()),
        settings=as_json(target_labels_settings()[0]),
        cache=CACHE,
    shell:
        "ssltrace target-labels {params.targets} --probe {input.probe:q} "
        "--out {output:q} --settings {params.settings:q} --cache-dir {params.cache:q} "
        "--runtime {resources.targets_runtime:q} --threads {threads} > {log:q} 2>&1"
