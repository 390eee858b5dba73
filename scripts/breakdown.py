"""rule breakdown: every cell's profiled parts, averaged over repeats, as Parquet and CSV."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

import logging  # noqa: E402
import sys  # noqa: E402

from qbench.breakdown import BreakdownError, collect_cells, summarize_cells  # noqa: E402

log = logging.getLogger("qbench.breakdown")
try:
    cells = collect_cells(list(snakemake.input))
except BreakdownError as exc:
    log.error("%s", exc)
    log.error("delete the file and run snakemake again to measure its cell anew")
    sys.exit(1)
summary = summarize_cells(cells)
profiled = set(zip(cells["workload"], cells["dtype"], cells["batch"], cells["rep"]))
log.info("%d of %d measurement jobs profiled", len(profiled), len(snakemake.input))
if not profiled:
    log.warning("no cell was profiled (none was timed, or the profiler failed: see logs/measure/)")
summary.to_parquet(snakemake.output.parquet, index=False)
summary.to_csv(snakemake.output.csv, index=False, float_format="%.6g")
