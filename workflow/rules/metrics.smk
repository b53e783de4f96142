# Metrics stage: per-run tidy tables and matrices, then one study table per analysis.


rule fewshot:
    input:
        f"{R}/activations/{{method}}/seed{{seed}}/novel",
    output:
        table=f"{R}/metrics/fewshot/{{method}}/seed{{seed}}.tsv",
        matrices=f"{R}/metrics/fewshot/{{method}}/seed{{seed}}_errors.npz",
    log:
        f"{LOGS}/fewshot/{{method}}_seed{{seed}}.log",
    params:
        epochs=analysed_epochs,
        settings=as_json(CFG["fewshot"]),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace fewshot --activations-dir {input:q} --epochs {params.epochs} "
        "--table {output.table:q} --matrices {output.matrices:q} --method {wildcards.method} "
        "--seed {wildcards.seed} --probe novel --threads {threads} "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule human_alignment:
    input:
        activations=f"{R}/activations/{{method}}/seed{{seed}}/human",
        probe=f"{R}/probes/human.npz",
    output:
        table=f"{R}/metrics/human/{{method}}/seed{{seed}}.tsv",
        matrices=f"{R}/metrics/human/{{method}}/seed{{seed}}_confusion.npz",
    log:
        f"{LOGS}/human/{{method}}_seed{{seed}}.log",
    params:
        epochs=analysed_epochs,
        settings=as_json({**CFG["fewshot"], **CFG["human_alignment"]}),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace human --activations-dir {input.activations:q} --epochs {params.epochs} "
        "--probe-file {input.probe:q} --table {output.table:q} "
        "--matrices {output.matrices:q} --method {wildcards.method} --seed {wildcards.seed} "
        "--threads {threads} --settings {params.settings:q} > {log:q} 2>&1"


rule clustering:
    input:
        f"{R}/metrics/fewshot/{{method}}/seed{{seed}}_errors.npz",
    output:
        table=f"{R}/metrics/clustering/{{method}}/seed{{seed}}.tsv",
        clusters=f"{R}/metrics/clustering/{{method}}/seed{{seed}}_clusters.npz",
    log:
        f"{LOGS}/clustering/{{method}}_seed{{seed}}.log",
    params:
        settings=as_json(CFG["clustering"]),
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace cluster --matrices {input:q} --table {output.table:q} "
        "--clusters {output.clusters:q} --method {wildcards.method} --seed {wildcards.seed} "
        "--probe novel --settings {params.settings:q} > {log:q} 2>&1"


rule collect_table:
    input:
        lambda w: per_run(f"{R}/metrics/{w.analysis}/{{method}}/seed{{seed}}.tsv"),
    output:
        f"{R}/tables/{{analysis}}.tsv",
    log:
        f"{LOGS}/collect/{{analysis}}.log",
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace collect --out {output:q} {input:q} > {log:q} 2>&1"
