"""rule report: the self-contained HTML report."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from qbench.report import render_report  # noqa: E402
from qbench.shards import read_shards  # noqa: E402

inputs = snakemake.input
charts = {
    Path(spec).stem: {"spec": json.loads(Path(spec).read_text()), "svg": Path(svg).read_text()}
    for spec, svg in zip(inputs.specs, inputs.svgs)
}
reference = inputs.reference[0] if inputs.reference else None
# the shards aggregate left out (aggregate.on_bad_shard: skip) are left out here too
skipped = pd.read_csv(inputs.skipped)
html = render_report(
    pd.read_parquet(inputs.summary),
    read_shards([p for p in inputs.shards if p not in set(skipped["path"])]),
    charts,
    dict(snakemake.params.config),
    snakemake.params.command,
    reference=pd.read_csv(reference) if reference else None,
    reference_note=f"Reference figures from {snakemake.params.config['reference']} (config key reference)."
    if reference
    else "",
    skipped=skipped,
)
Path(snakemake.output[0]).write_text(html)
