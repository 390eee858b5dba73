import multiprocessing as mp
import os
import time

import pytest
import torch

from qbench.device import DeviceError, gpu_lock, is_throttled, resolve_device


def _hold(lock_dir, names, release, queue):
    with gpu_lock(lock_dir, names, poll_s=0.02) as index:
        queue.put((index, time.monotonic()))
        release.wait(60)
    queue.put(("released", time.monotonic()))


def test_each_job_gets_its_own_gpu_and_a_third_waits(tmp_path):
    """Three processes, two (named) GPUs: two run at once on different GPUs, the third
    starts only when one of them has released its GPU. (The first two hold their GPUs until
    told: a slow process start must not let one finish before the other begins.)"""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    names = ["GPU-aaaa", "GPU-bbbb"]
    hold, go = ctx.Event(), ctx.Event()
    go.set()  # the third releases at once
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), names, hold, q)) for _ in range(2)]
    for p in procs:
        p.start()
    first = [q.get(timeout=60), q.get(timeout=60)]
    assert sorted(i for i, _ in first) == [0, 1]  # never two jobs on one GPU
    third = ctx.Process(target=_hold, args=(str(tmp_path), names, go, q))
    third.start()
    time.sleep(1.0)
    assert q.empty()  # both GPUs held: the third has none
    hold.set()
    events = [q.get(timeout=60) for _ in range(4)]
    for p in procs + [third]:
        p.join(timeout=60)
    got = [t for i, t in events if i in (0, 1)]
    released = [t for i, t in events if i == "released"]
    assert len(got) == 1 and got[0] >= min(released[:2]) - 0.05  # the third waited for a release
    assert (tmp_path / "GPU-aaaa.lock").exists()


def test_lock_is_freed_when_a_job_dies(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    never = ctx.Event()  # kept referenced: the child opens its semaphore after start()
    p = ctx.Process(target=_hold, args=(str(tmp_path), ["g0"], never, q))
    p.start()
    assert q.get(timeout=60)[0] == 0
    p.kill()
    p.join()
    with gpu_lock(tmp_path, ["g0"], poll_s=0.01) as index:  # the kernel dropped the dead job's lock
        assert index == 0


def test_no_gpu_to_lock():
    with pytest.raises(DeviceError, match="no GPU to lock"):
        with gpu_lock("/tmp", []):
            pass


@pytest.mark.parametrize(
    "reading, expected",
    [
        ({"sm_clock_mhz": 1350.0, "clock_event_reasons": 0x4}, False),  # power cap at the steady clock: real speed
        ({"sm_clock_mhz": 1000.0, "clock_event_reasons": 0x4}, True),  # a dip under 75% of the steady 1350
        ({"sm_clock_mhz": 1350.0, "clock_event_reasons": 0x40}, True),  # HW thermal slowdown
        ({"sm_clock_mhz": 1350.0, "clock_event_reasons": 0x80}, True),  # HW power brake
        ({"sm_clock_mhz": None, "clock_event_reasons": None}, None),  # nothing read (CPU)
    ],
)
def test_throttled_samples(reading, expected):
    assert is_throttled(reading, 1350.0, 0.75) == expected


def test_cuda_requested_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="device is 'cuda' but torch sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def _hold_preferring(lock_dir, names, prefer, release, queue):
    with gpu_lock(lock_dir, names, poll_s=0.02, prefer=prefer) as index:
        queue.put(index)
        release.wait(60)


@pytest.mark.parametrize("prefer, order", [(0, [0, 1]), (1, [1, 0]), (3, [1, 0])])
def test_jobs_start_on_the_gpu_their_repeat_prefers(tmp_path, prefer, order):
    """Two jobs asking together take the GPUs from `prefer` on (the repeat index), so a
    dtype's repeats rotate over the GPUs instead of always landing on the same one."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    names = ["GPU-aaaa", "GPU-bbbb"]
    release = ctx.Event()  # the first job holds its GPU until the second has one
    procs = [ctx.Process(target=_hold_preferring, args=(str(tmp_path), names, prefer, release, q)) for _ in range(2)]
    procs[0].start()
    got = [q.get(timeout=60)]
    procs[1].start()
    got.append(q.get(timeout=60))
    release.set()
    for p in procs:
        p.join(timeout=60)
    assert got == order


@pytest.mark.parametrize(
    "files, visible, expected",
    [
        (["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"], None, ["0", "1"]),
        (["nvidia0", "nvidia1"], "1", ["1"]),
        (["nvidia0", "nvidia1"], "1,0", ["1", "0"]),
        (["nvidia0", "nvidia1"], "GPU-aa, GPU-bb", ["GPU-aa", "GPU-bb"]),
        (["nvidia0", "nvidia1"], "0,x,1", ["0"]),  # like CUDA: an unparsable entry ends the list
        (["nvidia0", "nvidia1"], "", []),
        (["nvidia0"], "0,1", ["0"]),  # no more than there are device files
        (["nvidiactl"], None, []),
    ],
)
def test_visible_gpu_entries_without_the_driver(monkeypatch, files, visible, expected):
    from qbench import visible_gpus

    monkeypatch.setattr(visible_gpus.os, "listdir", lambda d: files)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus.visible_gpu_entries() == expected


def test_a_job_sees_the_gpu_it_locked_alone(tmp_path, monkeypatch):
    """Several GPUs visible and CUDA not started: the job locks one GPU by its visible
    entry and points CUDA_VISIBLE_DEVICES at it, so it runs on cuda:0 whichever it got
    (one Inductor cache for every GPU); a second job at the same time gets the other."""
    from qbench import device

    monkeypatch.setattr(device, "visible_gpu_entries", lambda: ["3", "5"])
    monkeypatch.setattr(device.torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with device.job_gpu(tmp_path, prefer=1) as (index, gpu):
        assert (index, gpu) == (1, torch.device("cuda", 0))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["visible-3.lock", "visible-5.lock"]
        with device.job_gpu(tmp_path, prefer=1) as (other, _):
            assert other == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"  # given back for a caller that goes on


def test_a_job_in_a_process_with_cuda_started_keeps_the_index(tmp_path, monkeypatch):
    """CUDA already started (CUDA_VISIBLE_DEVICES is read once): lock by UUID and use
    cuda:<index>, as before."""
    from qbench import device

    monkeypatch.setattr(device, "visible_gpu_entries", lambda: ["0", "1"])
    monkeypatch.setattr(device.torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(device.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(device, "gpu_uuid", lambda i: f"uuid-{i}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with device.job_gpu(tmp_path, prefer=1) as (index, gpu):
        assert (index, gpu) == (1, torch.device("cuda", 1))
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
        assert sorted(p.name for p in tmp_path.iterdir()) == ["uuid-0.lock", "uuid-1.lock"]


def test_a_job_waits_for_its_lanes_gpu_then_takes_another(tmp_path):
    """With patience, a job asks only for its preferred GPU at first; once the patience is
    spent it takes any free one. Without, it takes a free one at once."""
    names = ["GPU-aaaa", "GPU-bbbb"]
    with gpu_lock(tmp_path, names, poll_s=0.02, prefer=1) as held:
        assert held == 1
        t0 = time.monotonic()
        with gpu_lock(tmp_path, names, poll_s=0.02, prefer=1) as other:
            assert other == 0 and time.monotonic() - t0 < 0.5
        t0 = time.monotonic()
        with gpu_lock(tmp_path, names, poll_s=0.02, prefer=1, patience_s=0.6) as other:
            assert other == 0 and time.monotonic() - t0 >= 0.6
