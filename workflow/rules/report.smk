localrules:
    report,


rule report:
    """One self-contained HTML file to hand to colleagues."""
    input:
        summary="results/summary.parquet",
        shards=all_shards,
        skipped="results/skipped_shards.csv",
        specs=expand("results/charts/{chart}.json", chart=chart_names()),
        svgs=expand("results/charts/{chart}.svg", chart=chart_names()),
        reference=reference_csv,
    output:
        report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
            labels={"document": "qbench report"},
        ),
    params:
        config=config,
        command=run_command(),
    conda:
        "../../envs/analysis.yaml"
    log:
        "logs/report.log",
    script:
        "../../scripts/report.py"
