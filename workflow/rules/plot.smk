localrules:
    plot,


def plot_inputs(wildcards):
    """Each chart's tables: the summary, and the reference, shards or breakdown it draws."""
    inputs = {"summary": "results/summary.parquet"}
    if wildcards.chart == "latency":
        inputs["reference"] = reference_csv()
    elif wildcards.chart == "distributions":
        inputs["shards"] = all_shards()
    elif wildcards.chart == "breakdown":
        inputs["breakdown"] = breakdown_table()
    return inputs


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
