rule measure:
    """Time one cell (workload, dtype, batch) in one fresh process: one repeat. The process
    is a child of the machine's fork server (measure.fork_server), forked before any CUDA
    call, or the job's own. A job that dies (killed, a driver hiccup) is tried again, up
    to twice; the shard records which attempt measured it. With config key breakdown on,
    it also profiles a few forwards and writes where their time went beside the shard."""
    output:
        SHARD,
        **measure_extra_outputs(),
    params:
        cell=cell_config,
        breakdown_forwards=breakdown_forwards,
        lock_dir=".qbench-cache/gpu-locks",
        compile_cache=".qbench-cache/inductor",
    priority: measure_priority
    resources:
        gpu=1,
        runtime=30,
        mem_mb=16000,
        # not a limit: how the script learns its attempt number (scripts get no `attempt`)
        qbench_attempt=lambda wildcards, attempt: attempt,
        # nor these: the job's GPU lane and how many GPUs the run uses at once (qbench.lanes)
        qbench_gpu_lane=measure_lane,
        qbench_gpu_lanes=GPU_LANES,
    retries: 2
    conda:
        "../../envs/measure.yaml"
    log:
        "logs/measure/{workload}/dtype={dtype}/batch={batch}/rep={rep}.log",
    script:
        "../../scripts/measure.py"
