# Data stage: datasets (downloaded + verified, or generated), known/novel split, probe sets.


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
        f"{R}/splits/split.json",
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


rule probe_novel:
    input:
        dataset=dataset_file(),
        split=f"{R}/splits/split.json",
    output:
        f"{R}/probes/novel.npz",
    log:
        f"{LOGS}/probe_novel.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    params:
        settings=as_json(CFG["probes"]["novel"]),
    shell:
        "ssltrace probe --kind novel --dataset {input.dataset:q} --split {input.split:q} "
        "--out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule probe_human:
    input:
        human_file(),
    output:
        f"{R}/probes/human.npz",
    log:
        f"{LOGS}/probe_human.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    params:
        settings=as_json(CFG["probes"]["human"]),
    shell:
        "ssltrace probe --kind human --dataset {input:q} --out {output:q} "
        "--settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule probe_rdm:
    input:
        dataset_file(),
    output:
        f"{R}/probes/rdm.npz",
    log:
        f"{LOGS}/probe_rdm.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    params:
        settings=as_json({**CFG["probes"]["rdm"], "dataset": CFG["dataset"]["name"]}),
    shell:
        "ssltrace probe --kind rdm --dataset {input:q} --out {output:q} "
        "--settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule probe_known:
    input:
        dataset=dataset_file(),
        split=f"{R}/splits/split.json",
    output:
        f"{R}/probes/known.npz",
    log:
        f"{LOGS}/probe_known.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    params:
        settings=as_json(CFG["probes"]["known"]),
    shell:
        "ssltrace probe --kind known --dataset {input.dataset:q} --split {input.split:q} "
        "--out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule probe_sample:
    input:
        dataset=dataset_file(),
        split=f"{R}/splits/split.json",
    output:
        f"{R}/probes/sample.npz",
    log:
        f"{LOGS}/probe_sample.log",
    conda:
        "../../envs/ssltrace.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=minutes(30),
    params:
        settings=as_json({**CFG["probes"]["sample"], "augment": CFG["augment"]}),
    shell:
        "ssltrace probe --kind sample --dataset {input.dataset:q} --split {input.split:q} "
        "--out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
