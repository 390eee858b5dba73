localrules:
    aggregate,


rule aggregate:
    """Validate every shard and reduce them to one row per (workload, dtype, batch)."""
    input:
        all_shards,
    output:
        parquet="results/summary.parquet",
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Results",
            labels={"table": "summary"},
        ),
    params:
        baseline=config["baseline"],
        stats=config["stats"],
    conda:
        "../../envs/analysis.yaml"
    log:
        "logs/aggregate.log",
    script:
        "../../scripts/aggregate.py"
