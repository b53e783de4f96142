# Figures stage: drawn from study tables, per-run matrix files and training logs only, so a
# style change (the `figures` config section, a param of these rules alone) reruns figures and
# nothing else. Each figure is `{R}/figures/<paper>/<name>.<fmt>`; the first browser-viewable
# format goes into the Snakemake report, under one category per seed paper.
rule figure_fewshot_error_matrices:
    input:
        **figure_runs("errors", "{R}/metrics/fewshot/{method}/seed{seed}_errors.npz"),
    output:
        **figure_outputs(
            "seed000/fig04_fewshot_error_matrices",
            "seed000_fig04_fewshot_error_matrices.rst",
            SEED000,
        ),
    log:
        f"{LOGS}/figures/seed000_fig04_fewshot_error_matrices.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        name="fewshot_error_matrices",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_fewshot_error_vs_layer:
    input:
        table=f"{R}/tables/fewshot.tsv",
    output:
        **figure_outputs(
            "seed000/fig05_fewshot_error_vs_layer",
            "seed000_fig05_fewshot_error_vs_layer.rst",
            SEED000,
        ),
    log:
        f"{LOGS}/figures/seed000_fig05_fewshot_error_vs_layer.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="fewshot_error_vs_layer",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_dendrograms:
    input:
        **figure_runs(
            "clusters", "{R}/metrics/clustering/{method}/seed{seed}_clusters.npz"
        ),
        table=f"{R}/tables/clustering.tsv",
    output:
        **figure_outputs(
            "seed000/fig06_dendrograms", "seed000_fig06_dendrograms.rst", SEED000
        ),
    log:
        f"{LOGS}/figures/seed000_fig06_dendrograms.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="dendrograms",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_correspondence:
    input:
        **figure_runs(
            "clusters", "{R}/metrics/clustering/{method}/seed{seed}_clusters.npz"
        ),
        table=f"{R}/tables/clustering.tsv",
    output:
        **figure_outputs(
            "seed000/fig07_correspondence", "seed000_fig07_correspondence.rst", SEED000
        ),
    log:
        f"{LOGS}/figures/seed000_fig07_correspondence.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="correspondence",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_mi_vs_layer:
    input:
        table=f"{R}/tables/clustering.tsv",
    output:
        **figure_outputs(
            "seed000/fig08_mi_vs_layer", "seed000_fig08_mi_vs_layer.rst", SEED000
        ),
    log:
        f"{LOGS}/figures/seed000_fig08_mi_vs_layer.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="mi_vs_layer",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_human_confusion:
    input:
        **figure_runs(
            "confusion", "{R}/metrics/human/{method}/seed{seed}_confusion.npz"
        ),
        table=f"{R}/tables/human.tsv",
    output:
        **figure_outputs(
            "seed000/fig09_human_confusion",
            "seed000_fig09_human_confusion.rst",
            SEED000,
        ),
    log:
        f"{LOGS}/figures/seed000_fig09_human_confusion.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="human_confusion",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_spearman_vs_layer:
    input:
        table=f"{R}/tables/human.tsv",
    output:
        **figure_outputs(
            "seed000/fig10_spearman_vs_layer",
            "seed000_fig10_spearman_vs_layer.rst",
            SEED000,
        ),
    log:
        f"{LOGS}/figures/seed000_fig10_spearman_vs_layer.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="spearman_vs_layer",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_rdm_stability:
    input:
        table=f"{R}/tables/trajectory.tsv",
    output:
        **figure_outputs(
            "seed001/fig01_rdm_stability", "seed001_fig01_rdm_stability.rst", SEED001
        ),
    log:
        f"{LOGS}/figures/seed001_fig01_rdm_stability.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="rdm_stability",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_category_dissimilarity:
    input:
        table=f"{R}/tables/trajectory.tsv",
    output:
        **figure_outputs(
            "seed001/fig02_category_dissimilarity",
            "seed001_fig02_category_dissimilarity.rst",
            SEED001,
        ),
    log:
        f"{LOGS}/figures/seed001_fig02_category_dissimilarity.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="category_dissimilarity",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(rdm_metric=CFG["trajectory"]["rdm_metric"]),
    shell:
        FIGURE_SHELL


rule figure_rdm_snapshots:
    input:
        **figure_runs("rdms", "{R}/metrics/trajectory/{method}/seed{seed}_rdms.npz"),
    output:
        **figure_outputs("seed001/rdm_snapshots", "seed001_rdm_snapshots.rst", SEED001),
    log:
        f"{LOGS}/figures/seed001_rdm_snapshots.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        name="rdm_snapshots",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(rdm_metric=CFG["trajectory"]["rdm_metric"]),
    shell:
        FIGURE_SHELL


rule figure_geometry_accuracy:
    input:
        table=f"{R}/tables/geometry.tsv",
    output:
        **figure_outputs(
            "seed004/fig02_geometry_accuracy",
            "seed004_fig02_geometry_accuracy.rst",
            SEED004,
        ),
    log:
        f"{LOGS}/figures/seed004_fig02_geometry_accuracy.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="geometry_accuracy",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_loss_and_accuracy:
    input:
        **figure_runs("log", "{R}/runs/{method}/seed{seed}/train_log.tsv"),
        table=f"{R}/tables/geometry.tsv",
    output:
        **figure_outputs(
            "seed004/fig03_loss_and_accuracy",
            "seed004_fig03_loss_and_accuracy.rst",
            SEED004,
        ),
    log:
        f"{LOGS}/figures/seed004_fig03_loss_and_accuracy.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="loss_and_accuracy",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_geometry_layers:
    input:
        table=f"{R}/tables/geometry.tsv",
    output:
        **figure_outputs(
            "seed004/fig05_geometry_layers",
            "seed004_fig05_geometry_layers.rst",
            SEED004,
        ),
    log:
        f"{LOGS}/figures/seed004_fig05_geometry_layers.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="geometry_layers",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_cdnv_vs_epoch:
    input:
        table=f"{R}/tables/geometry.tsv",
    output:
        **figure_outputs("seed004/cdnv_vs_epoch", "seed004_cdnv_vs_epoch.rst", SEED004),
    log:
        f"{LOGS}/figures/seed004_cdnv_vs_epoch.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="cdnv_vs_epoch",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL


rule figure_training_curves:
    input:
        **figure_runs("log", "{R}/runs/{method}/seed{seed}/train_log.tsv"),
    output:
        **figure_outputs("training/training_curves", "training_curves.rst", TRAINING),
    log:
        f"{LOGS}/figures/training_curves.log",
    conda:
        "../../envs/ssltrace.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="training_curves",
        inputs=figure_args,
        stem=figure_stem,
        settings=figure_settings(),
    shell:
        FIGURE_SHELL
