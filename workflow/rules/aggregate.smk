localrules:
    aggregate,


rule aggregate:
    """Validate every shard and reduce them to one row per (workload, dtype, batch).
    A bad shard stops it, or with aggregate.on_bad_shard: skip is left out and listed."""
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
        skipped="results/skipped_shards.csv",
    params:
        baseline=config["baseline"],
        stats=config["stats"],
        expected_hashes=expected_hashes,
        on_bad_shard=config["aggregate"]["on_bad_shard"],
    conda:
        "../../envs/analysis.yaml"
    log:
        "logs/aggregate.log",
    script:
        "../../scripts/aggregate.py"
