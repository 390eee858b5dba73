"""rule report: the self-contained HTML report."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from qbench.report import render_report  # noqa: E402
from qbench.shards import read_shards  # noqa: E402

summary = pd.read_parquet(snakemake.input.summary)
# the shards aggregate left out (aggregate.on_bad_shard: skip) are left out here too
skipped = pd.read_csv(snakemake.input.skipped)
samples = read_shards([p for p in snakemake.input.shards if p not in set(skipped["path"])])
reference = pd.read_csv(snakemake.input.reference[0]) if snakemake.input.reference else None
html = render_report(
    summary,
    samples,
    {"latency": Path(snakemake.input.svg).read_text()},
    dict(snakemake.params.config),
    snakemake.params.command,
    reference=reference,
    reference_note=f"Reference figures from {snakemake.input.reference[0]} (config key reference)."
    if snakemake.input.reference
    else "",
)
Path(snakemake.output[0]).write_text(html)
