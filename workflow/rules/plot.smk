localrules:
    plot,


rule plot:
    """The reference chart reproduced: latency per batch size and dtype, with intervals."""
    input:
        summary="results/summary.parquet",
        reference=reference_csv,
    output:
        html="results/charts/latency.html",
        svg=report(
            "results/charts/latency.svg",
            caption="../report/latency.rst",
            category="Results",
            labels={"figure": "latency"},
        ),
        png="results/charts/latency.png",
        json="results/charts/latency.json",
    conda:
        "../../envs/analysis.yaml"
    log:
        "logs/plot.log",
    script:
        "../../scripts/plot.py"
