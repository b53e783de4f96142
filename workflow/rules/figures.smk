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
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        stem=f"{R}/figures/fig5_fewshot_error_vs_layer",
        settings=as_json(CFG["figures"]),
    shell:
        "ssltrace figure --name fewshot_error_vs_layer --input table={input:q} "
        "--stem {params.stem:q} --settings {params.settings:q} > {log:q} 2>&1"


rule figure_mi_vs_layer:
    input:
        f"{R}/tables/clustering.tsv",
    output:
        report(
            expand(
                f"{R}/figures/fig8_mi_vs_layer.{{fmt}}", fmt=CFG["figures"]["formats"]
            ),
            caption="../report/fig8_mi_vs_layer.rst",
            category="Seed 000: few-shot learning",
        ),
    log:
        f"{LOGS}/figures/fig8_mi_vs_layer.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        stem=f"{R}/figures/fig8_mi_vs_layer",
        settings=as_json(CFG["figures"]),
    shell:
        "ssltrace figure --name mi_vs_layer --input table={input:q} "
        "--stem {params.stem:q} --settings {params.settings:q} > {log:q} 2>&1"
