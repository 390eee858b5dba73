localrules:
    breakdown,


rule breakdown:
    """Where a forward's time goes: every cell's profiled parts (config key breakdown),
    averaged over repeats. Cells that were not timed (oom, unsupported) have none."""
    input:
        all_breakdown_cells,
    output:
        parquet=BREAKDOWN_TABLES[0],
        csv=report(
            BREAKDOWN_TABLES[1],
            caption="../report/breakdown.rst",
            category="Results",
            labels={"table": "breakdown"},
        ),
    conda:
        "../../envs/analysis.yaml"
    log:
        "logs/breakdown.log",
    script:
        "../../scripts/breakdown.py"
