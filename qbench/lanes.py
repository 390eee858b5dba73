"""Which GPU each measurement job of a multi-GPU run asks for, and the order jobs start in.

Two H100s of one machine, both at their 700 W cap, differed by 1.0-1.7% on every cell
(2026-11-26: the cooler card held a 20-35 MHz higher clock). When jobs took whichever GPU
was free, fp16 ran 4 of 5 repeats of a cell on one card and w8a8 4 of 5 on the other, so
the card difference posed as a dtype effect. So a run that uses K GPUs at once gives each
job a lane (a GPU), such that
- all dtypes of one (workload, batch, repeat) share a lane: each repeat's comparison is
  made on one card (a block);
- each cell's repeats are spread over the lanes, and the lanes carry equal work: the
  first K*floor(R/K) repeats go round-robin by repeat; a leftover repeat's blocks go
  round-robin by block;
- jobs start lane by lane in turn (rank = position in its lane * K + lane), and the two
  jobs that run side by side are the same cell's repeats where possible, so the lanes
  keep pace with each other.
With one GPU at a time (K = 1), every job is in lane 0, in the sweep's own order.
"""

from __future__ import annotations

from typing import Hashable, Sequence


def lane_of(rep: int, block: int, repeats: int, lanes: int) -> int:
    """The lane of repeat `rep` of block `block` (the index of its workload and batch)."""
    if lanes <= 1:
        return 0
    paired = repeats - repeats % lanes  # repeats that fill every lane evenly
    return rep % lanes if rep < paired else (block + rep) % lanes


def plan(jobs: Sequence[tuple[Hashable, int, int]], repeats: int, lanes: int) -> dict[Hashable, tuple[int, int]]:
    """`jobs`: (key, block, rep) in the sweep's order. Returns key -> (rank, lane); jobs
    start by rank, lowest first."""
    lanes = max(1, lanes)
    per_lane: list[list[Hashable]] = [[] for _ in range(lanes)]
    for key, block, rep in jobs:
        per_lane[lane_of(rep, block, repeats, lanes)].append(key)
    return {key: (pos * lanes + lane, lane) for lane, keys in enumerate(per_lane) for pos, key in enumerate(keys)}


def lanes_in_use(gpu_resource: int | None, visible_gpus: int) -> int:
    """How many GPUs the run measures on at once: `--resources gpu=N` (None: not given,
    every visible GPU), no more than the GPUs this machine shows; at least one."""
    n = visible_gpus if gpu_resource is None else min(int(gpu_resource), visible_gpus)
    return max(1, n)
