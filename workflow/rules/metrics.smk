# Metrics stage: per-run tidy tables and matrices, then one study table per analysis.


rule fewshot:
    input:
        f"{R}/activations/{{method}}/seed{{seed}}/novel",
    output:
        table=f"{R}/metrics/fewshot/{{method}}/seed{{seed}}.tsv",
        matrices=f"{R}/metrics/fewshot/{{method}}/seed{{seed}}_errors.npz",
    log:
        f"{LOGS}/fewshot/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=minutes(60),
    params:
        cache=CACHE,
        epochs=analysed_epochs,
        settings=as_json(CFG["fewshot"]),
    shell:
        "ssltrace fewshot --activations-dir {input:q} --epochs {params.epochs} "
        "--table {output.table:q} --matrices {output.matrices:q} --method {wildcards.method} "
        "--seed {wildcards.seed} --probe novel --threads {threads} "
        "--settings {params.settings:q} --cache-dir {params.cache:q} > {log:q} 2>&1"


rule human_alignment:
    input:
        activations=f"{R}/activations/{{method}}/seed{{seed}}/human",
        probe=f"{R}/probes/human.npz",
    output:
        table=f"{R}/metrics/human/{{method}}/seed{{seed}}.tsv",
        matrices=f"{R}/metrics/human/{{method}}/seed{{seed}}_confusion.npz",
    log:
        f"{LOGS}/human/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=minutes(60),
    params:
        cache=CACHE,
        epochs=analysed_epochs,
        settings=as_json({**CFG["fewshot"], **CFG["human_alignment"]}),
    shell:
        "ssltrace human --activations-dir {input.activations:q} --epochs {params.epochs} "
        "--probe-file {input.probe:q} --table {output.table:q} "
        "--matrices {output.matrices:q} --method {wildcards.method} --seed {wildcards.seed} "
        "--threads {threads} --settings {params.settings:q} --cache-dir {params.cache:q} > {log:q} 2>&1"


rule clustering:
    input:
        f"{R}/metrics/fewshot/{{method}}/seed{{seed}}_errors.npz",
    output:
        table=f"{R}/metrics/clustering/{{method}}/seed{{seed}}.tsv",
        clusters=f"{R}/metrics/clustering/{{method}}/seed{{seed}}_clusters.npz",
    log:
        f"{LOGS}/clustering/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        settings=as_json(CFG["clustering"]),
    shell:
        "ssltrace cluster --matrices {input:q} --table {output.table:q} "
        "--clusters {output.clusters:q} --method {wildcards.method} --seed {wildcards.seed} "
        "--probe novel --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule trajectory:
    input:
        f"{R}/activations/{{method}}/seed{{seed}}/rdm",
    output:
        table=f"{R}/metrics/trajectory/{{method}}/seed{{seed}}.tsv",
        rdms=f"{R}/metrics/trajectory/{{method}}/seed{{seed}}_rdms.npz",
    log:
        f"{LOGS}/trajectory/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        cache=CACHE,
        epochs=analysed_epochs,
        settings=as_json(CFG["trajectory"]),
    shell:
        "ssltrace trajectory --activations-dir {input:q} --epochs {params.epochs} "
        "--table {output.table:q} --rdms {output.rdms:q} --method {wildcards.method} "
        "--seed {wildcards.seed} --settings {params.settings:q} --cache-dir {params.cache:q} --threads {threads} > {log:q} 2>&1"


rule geometry:
    input:
        known=f"{R}/activations/{{method}}/seed{{seed}}/known",
        sample=f"{R}/activations/{{method}}/seed{{seed}}/sample",
    output:
        f"{R}/metrics/geometry/{{method}}/seed{{seed}}.tsv",
    log:
        f"{LOGS}/geometry/{{method}}_seed{{seed}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=minutes(120),
    params:
        cache=CACHE,
        epochs=analysed_epochs,
        settings=as_json(CFG["geometry"]),
    shell:
        "ssltrace geometry --known-dir {input.known:q} --sample-dir {input.sample:q} "
        "--epochs {params.epochs} --table {output:q} --method {wildcards.method} "
        "--seed {wildcards.seed} --threads {threads} "
        "--settings {params.settings:q} --cache-dir {params.cache:q} > {log:q} 2>&1"


rule collect_table:
    input:
        lambda w: per_run(f"{R}/metrics/{w.analysis}/{{method}}/seed{{seed}}.tsv"),
    output:
        f"{R}/tables/{{analysis}}.tsv",
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
