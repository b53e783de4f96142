# Data stage: datasets (downloaded + verified, or generated), known/novel split, probe sets.


# Cheap bookkeeping runs where Snakemake runs (downloads need the login node's network).
localrules:
    dataset,
    human_dataset,
    split,
    probe_novel,
    probe_human,
    probe_rdm,
    probe_known,
    collect_table,
    neural_simulated,
    probe_neural,


rule dataset:
    output:
        dataset_file(),
    log:
        f"{LOGS}/dataset.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=minutes(60),
    params:
        name=CFG["dataset"]["name"],
        data_dir=CFG["data_dir"],
        settings=as_json(CFG["dataset"]["options"]),
    shell:
        "ssltrace data --name {params.name:q} --data-dir {params.data_dir:q} "
        "--out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule human_dataset:
    output:
        human_file(),
    log:
        f"{LOGS}/human_dataset.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    params:
        name=CFG["human"]["name"],
        data_dir=CFG["data_dir"],
        settings=as_json(CFG["human"]["options"]),
    shell:
        "ssltrace data --human --name {params.name:q} --data-dir {params.data_dir:q} "
        "--out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule split:
    input:
        dataset_file(),
    output:
        path(layout.SPLIT),
    log:
        f"{LOGS}/split.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    params:
        settings=as_json(CFG["split"]),
    shell:
        "ssltrace split --dataset {input:q} --out {output:q} "
        "--settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


# One rule per probe kind (ssltrace.layout.PROBES), all from this template; the neural probe
# set, drawn from the neural and behaviour datasets, has its own rule below.
for kind in [k for k in PROBES if k != "neural"]:

    rule:
        name:
            f"probe_{kind}"
        input:
            **probe_input(kind),
        output:
            path(layout.PROBE, probe=kind),
        log:
            f"{LOGS}/probe_{kind}.log",
        conda:
            "../../envs/ssltrace.yaml"
        threads: 1
        resources:
            mem_mb=8000 if kind == "sample" else 4000,
            runtime=minutes(30 if kind == "sample" else 10),
        params:
            kind=kind,
            split=probe_args,
            settings=as_json(study.probe_settings(CFG, kind)),
        shell:
            "ssltrace probe --kind {params.kind} --dataset {input.dataset:q} {params.split} "
            "--out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


# A simulated neural dataset (neural.datasets.<name>: simulated), from the synthetic images.
rule neural_simulated:
    output:
        path(layout.NEURAL),
    log:
        f"{LOGS}/neural_simulated/{{neural}}.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    params:
        settings=as_json(CFG["neural"]["simulated"]),
    shell:
        "ssltrace simulate-neural --out {output:q} --settings {params.settings:q} "
        "--threads {threads} > {log:q} 2>&1"


# The neural probe set: every neural and behaviour dataset's images, resized once, with the
# responses and choice counts the analyses score against.
rule probe_neural:
    input:
        unpack(neural_inputs),
    output:
        path(layout.PROBE, probe="neural"),
    log:
        f"{LOGS}/probe_neural.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=minutes(30),
    params:
        files=neural_args,
        settings=as_json(study.probe_settings(CFG, "neural")),
    shell:
        "ssltrace neural-probe {params.files} --out {output:q} "
        "--settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
