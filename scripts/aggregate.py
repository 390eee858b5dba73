"""rule aggregate: validate all shards, write the summary as Parquet and CSV, the list
of shards left out (empty unless aggregate.on_bad_shard is skip), and log the repeats advice."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

import logging  # noqa: E402
import sys  # noqa: E402

from qbench.diagnostics import experiment_advice  # noqa: E402
from qbench.shards import ShardError, collect_shards  # noqa: E402
from qbench.stats import StatsConfig, summarize  # noqa: E402

log = logging.getLogger("qbench.aggregate")
try:
    samples, skipped = collect_shards(
        list(snakemake.input), dict(snakemake.params.expected_hashes), snakemake.params.on_bad_shard
    )
except ShardError as exc:
    # the user's view: one line naming the file and the problem, and what to do
    log.error("%s", exc)
    log.error(
        "delete the file and run snakemake again to measure it anew, or set config key "
        "aggregate.on_bad_shard: skip to leave bad shards out (listed in %s)",
        snakemake.output.skipped,
    )
    sys.exit(1)
for row in skipped.itertuples():
    log.warning("left out %s: %s", row.path, row.problem)
skipped.to_csv(snakemake.output.skipped, index=False)
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
