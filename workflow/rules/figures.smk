# Figures stage: one rule per row of the figure table (src/ssltrace/figures/figures.yaml), all
# from this template. Figures are drawn from study tables, per-run matrix files and training
# logs only, so a style change (the `figures` config section, a param of these rules alone)
# reruns figures and nothing else. The first browser-viewable format goes into the report,
# under the row's category, with the row's caption.
for row in FIGURES:

    rule:
        name:
            row.rule
        input:
            **figure_inputs(row),
        output:
            **figure_outputs(row),
        log:
            figure_log(row),
        conda:
            "../../envs/ssltrace.yaml"
        resources:
            mem_mb=row.mem_mb,
            runtime=10,
        params:
            name=row.draw,
            inputs=figure_args,
            stem=figure_stem,
            settings=figure_settings(row),
            caption=figure_caption(row),
        shell:
            "ssltrace figure --name {params.name} {params.inputs} --stem {params.stem:q} "
            "--settings {params.settings:q} > {log:q} 2>&1"
