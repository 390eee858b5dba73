"""rule aggregate: validate all shards, write the summary as Parquet and CSV."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

from qbench.shards import read_shards  # noqa: E402
from qbench.stats import StatsConfig, summarize  # noqa: E402

samples = read_shards(list(snakemake.input))
summary = summarize(samples, snakemake.params.baseline, StatsConfig.from_dict(snakemake.params.stats))
summary.to_parquet(snakemake.output.parquet, index=False)
summary.to_csv(snakemake.output.csv, index=False, float_format="%.6g")
