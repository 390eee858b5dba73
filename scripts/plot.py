"""rule plot: the reference chart, reproduced from the summary."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from qbench.charts import latency_chart, save_chart  # noqa: E402

summary = pd.read_parquet(snakemake.input.summary)
reference = pd.read_csv(snakemake.input.reference[0]) if snakemake.input.reference else None
chart = latency_chart(summary, reference)
save_chart(chart, Path(snakemake.output.svg).with_suffix(""))
