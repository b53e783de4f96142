# Figures stage: drawn from study tables only, so a style change reruns figures and nothing else.


rule figure_fewshot_error_vs_layer:
    input:
        f"{R}/tables/fewshot.tsv",
    output:
        report(
            expand(
                f"{R}/figures/fig5_fewshot_error_vs_layer.{{fmt}}",
                fmt=CFG["figures"]["formats"],
            ),
            caption="../report/fig5_fewshot_error_vs_layer.rst",
            category="Seed 000: few-shot learning",
        ),
    log:
        f"{LOGS}/figures/fig5_fewshot_error_vs_layer.log",
    params:
        stem=f"{R}/figures/fig5_fewshot_error_vs_layer",
        settings=as_json(CFG["figures"]),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace figure --table {input:q} --metric fewshot_error --stem {params.stem:q} "
        "--title 'Few-shot error vs layer (seed 000 Fig. 5)' "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule figure_mi_vs_layer:
    input:
        f"{R}/tables/clustering.tsv",
    output:
        report(
            expand(f"{R}/figures/fig8_mi_vs_layer.{{fmt}}", fmt=CFG["figures"]["formats"]),
            caption="../report/fig8_mi_vs_layer.rst",
            category="Seed 000: few-shot learning",
        ),
    log:
        f"{LOGS}/figures/fig8_mi_vs_layer.log",
    params:
        stem=f"{R}/figures/fig8_mi_vs_layer",
        settings=as_json(CFG["figures"]),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/ssltrace.yaml"
    shell:
        "ssltrace figure --table {input:q} --metric mi_bits --stem {params.stem:q} "
        "--title 'Clusters vs coarse classes (seed 000 Fig. 8)' "
        "--settings {params.settings:q} > {log:q} 2>&1"
