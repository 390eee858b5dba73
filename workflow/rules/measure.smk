rule measure:
    """Time one cell (workload, dtype, batch) in one fresh process: one repeat. The process
    is a child of the machine's fork server (measure.fork_server), forked before any CUDA
    call, or the job's own. A job that dies (killed, a driver hiccup) is tried again, up
    to twice; the shard records which attempt measured it. With config key breakdown on,
    it also profiles a few forwards and writes where their time went beside the shard."""
    output:
        shard=SHARD,
        **measure_extra_outputs(),
    params:
        python=measure_python(),
        script=str(Path(workflow.basedir) / "scripts/measure.py"),
        request=measure_request,
    priority: measure_priority
    resources:
        gpu=1,
        runtime=30,
        mem_mb=16000,
        # not limits: the job's attempt number, its GPU lane and how many GPUs the run
        # uses at once (qbench.lanes), passed to its command
        qbench_attempt=lambda wildcards, attempt: attempt,
        qbench_gpu_lane=measure_lane,
        qbench_gpu_lanes=GPU_LANES,
    retries: MEASURE_RETRIES
    conda:
        "../../envs/measure.yaml"
    log:
        "logs/measure/{workload}/dtype={dtype}/batch={batch}/rep={rep}.log",
    shell:
        measure_command()
