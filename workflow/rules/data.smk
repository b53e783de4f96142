# Data stage: datasets (downloaded + verified, or generated), known/novel split, probe sets.


rule dataset:
    output:
        dataset_file(),
    log:
        f"{LOGS}/dataset.log",
    params:
        name=CFG["dataset"]["name"],
        data_dir=CFG["data_dir"],
        settings=as_json(CFG["dataset"]["options"]),
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace data --name {params.name:q} --data-dir {params.data_dir:q} "
        "--out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule human_dataset:
    output:
        human_file(),
    log:
        f"{LOGS}/human_dataset.log",
    params:
        name=CFG["human"]["name"],
        data_dir=CFG["data_dir"],
        settings=as_json(CFG["human"]["options"]),
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace data --human --name {params.name:q} --data-dir {params.data_dir:q} "
        "--out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule split:
    input:
        dataset_file(),
    output:
        f"{R}/splits/split.json",
    log:
        f"{LOGS}/split.log",
    params:
        settings=as_json(CFG["split"]),
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace split --dataset {input:q} --out {output:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule probe_novel:
    input:
        dataset=dataset_file(),
        split=f"{R}/splits/split.json",
    output:
        f"{R}/probes/novel.npz",
    log:
        f"{LOGS}/probe_novel.log",
    params:
        settings=as_json(CFG["probes"]["novel"]),
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace probe --kind novel --dataset {input.dataset:q} --split {input.split:q} "
        "--out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule probe_human:
    input:
        human_file(),
    output:
        f"{R}/probes/human.npz",
    log:
        f"{LOGS}/probe_human.log",
    params:
        settings=as_json(CFG["probes"]["human"]),
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace probe --kind human --dataset {input:q} --out {output:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"
