localrules:
    plot,


rule plot:
    """One chart (latency: the reference chart reproduced; speedup; distributions;
    breakdown) as offline HTML, SVG, PNG and Vega-Lite JSON."""
    input:
        unpack(plot_inputs),
    output:
        html="results/charts/{chart}.html",
        svg=report(
            "results/charts/{chart}.svg",
            caption="../report/chart.rst",
            category="Charts",
            labels={"figure": "{chart}"},
        ),
        png="results/charts/{chart}.png",
        json="results/charts/{chart}.json",
    wildcard_constraints:
        chart="latency|speedup|distributions|breakdown",
    conda:
        "../../envs/analysis.yaml"
    log:
        "logs/plot/{chart}.log",
    script:
        "../../scripts/plot.py"
