"""rule aggregate: validate all shards, write the summary as Parquet and CSV, log the repeats advice."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

import logging  # noqa: E402

from qbench.diagnostics import experiment_advice  # noqa: E402
from qbench.shards import read_shards  # noqa: E402
from qbench.stats import StatsConfig, summarize  # noqa: E402

samples = read_shards(list(snakemake.input))
summary = summarize(samples, snakemake.params.baseline, StatsConfig.from_dict(snakemake.params.stats))
summary.to_parquet(snakemake.output.parquet, index=False)
summary.to_csv(snakemake.output.csv, index=False, float_format="%.6g")
advice = experiment_advice(summary)
if advice and advice["reachable"]:
    logging.info(
        f"repeats advice (Kalibera & Jones): {advice['repeats']} repeats x {advice['iterations']} iterations bring "
        f"every cell's interval within +-{advice['target_halfwidth']:.2%} of its mean (now {advice['current_repeats']}"
        f" x {advice['current_iterations']}; limiting cell: {advice['limiting_cell']})"
    )
elif advice:
    logging.warning(
        f"repeats advice: no design of up to 1000 repeats brings {advice['limiting_cell']} within "
        f"+-{advice['target_halfwidth']:.2%} of its mean: the cells vary too much (see cv and unstable)"
    )
