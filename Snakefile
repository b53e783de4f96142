# ssltrace: pretrain CNNs with self-supervised methods, checkpoint every epoch, extract every
# layer, measure few-shot structure / human alignment / representational geometry, plot.
#   snakemake --cores all                                  # paper-scale study (config.yaml)
#   snakemake --cores all --configfile presets/demo.yaml   # offline demo on synthetic data


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
