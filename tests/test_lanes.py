"""Which GPU each job of a multi-GPU run asks for, and the order jobs start in (qbench.lanes)."""

import collections

import pytest

from qbench.lanes import lane_of, lanes_in_use, plan

DTYPES = ("fp16", "w8a8")
BATCHES = (128, 256, 512, 1024)


def sweep(repeats):
    """The default sweep's jobs in the workflow's order: repeats outermost, dtypes innermost."""
    return [((d, b, r), i, r) for r in range(repeats) for i, b in enumerate(BATCHES) for d in DTYPES]


def test_one_gpu_at_a_time_keeps_the_sweep_order_in_lane_zero():
    jobs = sweep(5)
    got = plan(jobs, 5, 1)
    assert [got[key] for key, _, _ in jobs] == [(i, 0) for i in range(len(jobs))]


@pytest.mark.parametrize("repeats", [2, 4, 5, 7])
def test_two_lanes_block_by_repeat_balance_cells_and_share_the_work(repeats):
    got = plan(sweep(repeats), repeats, 2)
    lane = {key: lane for key, (_, lane) in got.items()}
    # a block: every dtype of one (batch, repeat) on one card
    for b in BATCHES:
        for r in range(repeats):
            assert len({lane[(d, b, r)] for d in DTYPES}) == 1
    # each cell's repeats spread over both cards, as evenly as the count allows
    for d in DTYPES:
        for b in BATCHES:
            n = collections.Counter(lane[(d, b, r)] for r in range(repeats))
            assert abs(n[0] - n[1]) <= 1
    # both lanes carry the same number of jobs
    per_lane = collections.Counter(lane.values())
    assert per_lane[0] == per_lane[1]
    # ranks alternate lanes and are a permutation
    order = sorted(got, key=lambda k: got[k][0])
    assert sorted(rank for rank, _ in got.values()) == list(range(len(got)))
    assert [lane[k] for k in order] == [i % 2 for i in range(len(order))]


def test_side_by_side_jobs_are_the_same_cell_where_repeats_pair_up():
    """Jobs of equal length run together, so the lanes keep pace: with 5 repeats the
    first 4 pair up (0 with 1, 2 with 3); the fifth's blocks alternate lanes."""
    got = plan(sweep(5), 5, 2)
    order = sorted(got, key=lambda k: got[k][0])
    pairs = [order[i:i + 2] for i in range(0, len(order), 2)]
    for a, b in pairs[:16]:
        assert a[:2] == b[:2] and {a[2], b[2]} in ({0, 1}, {2, 3})
    assert [lane_of(4, block, 5, 2) for block in range(4)] == [0, 1, 0, 1]
    # dtypes still interleave in start order
    assert [k[0] for k in order[:4]] == ["fp16", "fp16", "w8a8", "w8a8"]


@pytest.mark.parametrize("resource, visible, expected", [(None, 2, 2), (1, 2, 1), (4, 2, 2), (2, 0, 1), (None, 0, 1)])
def test_lanes_in_use(resource, visible, expected):
    assert lanes_in_use(resource, visible) == expected
