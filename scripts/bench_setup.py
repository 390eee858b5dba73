"""Where a measurement job's fixed cost goes: times each step of one cell in this fresh
process (imports, CUDA start, build, reference forward, quantization, torch.compile's
import and first call, graph capture, one warm-up forward). Run it twice to see the warm
compile cache. Needs a CUDA GPU.

    python scripts/bench_setup.py --scheme w8a8-int8 --batch 1024
"""

import argparse
import json
import os
import time

T0 = time.perf_counter()
steps = {}


def mark(name, since=[T0]):  # noqa: B006 (a running clock)
    now = time.perf_counter()
    steps[name] = round(now - since[0], 3)
    since[0] = now


import torch  # noqa: E402

mark("import torch")
from qbench import schemes  # noqa: E402
from qbench.timing import capture_graph  # noqa: E402
from qbench.workloads import WorkloadConfig, build_model, make_input  # noqa: E402

mark("import qbench")
ap = argparse.ArgumentParser()
ap.add_argument("--scheme", default="w8a8-int8")
ap.add_argument("--batch", type=int, default=1024)
ap.add_argument("--json")
args = ap.parse_args()
wl = WorkloadConfig(name="llama-1b", model="llama")
dev = torch.device("cuda")
torch.cuda.init()
torch.empty(1, device=dev)
mark("CUDA context")
with torch.inference_mode():
    model = build_model(wl, dev, torch.float16, 0)
    torch.cuda.synchronize()
    mark("build model (random weights)")
    x = make_input(wl, args.batch, dev, torch.float16, 0)
    ref = model(x)
    torch.cuda.synchronize()
    mark("reference forward (first, eager)")
    ref = model(x)
    torch.cuda.synchronize()
    mark("reference forward (second, eager)")
    model = schemes.apply_scheme(model, args.scheme)
    torch.cuda.synchronize()
    mark("apply scheme")
import torch._dynamo  # noqa: E402,F401
import torch._inductor  # noqa: E402,F401

mark("import dynamo + inductor")
model = schemes.compile_model(model)
mark("compile_model (wrap)")
with torch.inference_mode():
    model(x)
    torch.cuda.synchronize()
    mark("first compiled call")
    graph, note = capture_graph(lambda: model(x), dev)
    mark("CUDA graph capture")
    graph.replay()
    torch.cuda.synchronize()
    mark("one replay")
steps["total"] = round(time.perf_counter() - T0, 3)
steps["cache"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")
print(json.dumps({"scheme": args.scheme, "batch": args.batch, **steps}))
if args.json:
    with open(args.json, "a") as fh:
        fh.write(json.dumps({"scheme": args.scheme, "batch": args.batch, **steps}) + "\n")
