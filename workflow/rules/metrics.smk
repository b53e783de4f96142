# Metrics stage: one rule per registered analysis (ssltrace.analysis), all from this template:
# a per-run tidy table plus the analysis's matrix files, then one study table per analysis.
for analysis_name in ANALYSIS_NAMES:
    cls = ANALYSES.get(analysis_name)

    rule:
        name:
            analysis_name
        input:
            **analysis_inputs(cls),
        output:
            **analysis_outputs(cls),
        log:
            f"{LOGS}/{analysis_name}/{{method}}_seed{{seed}}.log",
        conda:
            "../../envs/ssltrace.yaml"
        threads: 1
        resources:
            **job_resources(cls.resources),
        params:
            name=analysis_name,
            io=analysis_args(cls),
            epochs=analysed_epochs,
            settings=as_json(cls.config_settings(CFG)),
            cache=CACHE,
        shell:
            "ssltrace analyse {params.name} {params.io} --epochs {params.epochs} "
            "--table {output.table:q} --method {wildcards.method} --seed {wildcards.seed} "
            "--threads {threads} --settings {params.settings:q} --cache-dir {params.cache:q} "
            "> {log:q} 2>&1"


rule collect_table:
    input:
        lambda w: per_run(layout.fill(layout.METRIC_TABLE, analysis=w.analysis)),
    output:
        path(layout.STUDY_TABLE),
    log:
        f"{LOGS}/collect/{{analysis}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    shell:
        "ssltrace collect --out {output:q} {input:q} > {log:q} 2>&1"


# Study-level t-test matrices between methods (seed 003 ED Figs. 1, 8; ssltrace.analysis.ttests)
if "predictivity" in ANALYSIS_NAMES:

    rule predictivity_ttests:
        input:
            per_run(
                layout.fill(
                    layout.METRIC_ARRAYS, analysis="predictivity", array="scores"
                )
            ),
        output:
            path(layout.STUDY_ARRAYS, analysis="predictivity", array="ttests"),
        log:
            f"{LOGS}/ttests/predictivity.log",
        conda:
            "../../envs/ssltrace.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=minutes(10),
        params:
            runs=run_named_args,
        shell:
            "ssltrace ttests neural {params.runs} --out {output:q} > {log:q} 2>&1"


if "behaviour" in ANALYSIS_NAMES:

    rule behaviour_ttests:
        input:
            path(layout.STUDY_TABLE, analysis="behaviour"),
        output:
            path(layout.STUDY_ARRAYS, analysis="behaviour", array="ttests"),
        log:
            f"{LOGS}/ttests/behaviour.log",
        conda:
            "../../envs/ssltrace.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=minutes(10),
        shell:
            "ssltrace ttests behaviour --input {input:q} --out {output:q} > {log:q} 2>&1"
