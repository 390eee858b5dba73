"""rule plot: one chart from the summary (and the reference, shards or breakdown)."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from qbench.breakdown import read_breakdown  # noqa: E402
from qbench.charts import build_chart, save_chart  # noqa: E402
from qbench.shards import read_shards  # noqa: E402

inputs = snakemake.input
chart = build_chart(
    snakemake.wildcards.chart,
    pd.read_parquet(inputs.summary),
    samples=read_shards(list(inputs.shards)) if "shards" in inputs.keys() else None,
    reference=pd.read_csv(inputs.reference[0]) if inputs.get("reference") else None,
    breakdown=read_breakdown(inputs.breakdown[0], allow_empty=True) if inputs.get("breakdown") else None,
)
save_chart(chart, Path(snakemake.output.svg).with_suffix(""))
