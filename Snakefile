# qbench: does W8A8 quantization make this model faster on this GPU, and how sure are we?
#
#   snakemake --cores 1 --resources gpu=1                        # the default experiment
#   snakemake --cores 2 --resources gpu=1 --configfile config/cpu.yaml   # no GPU
#
# A file given with --configfile is a whole experiment (keys it leaves out take the
# schema's defaults); it is not merged into config/config.yaml.

from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/breakdown.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/summary.csv",
        chart_files(),
        "results/report.html",
    default_target: True
