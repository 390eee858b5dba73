import torch
from qbench import schemes, triton_kernels as tk
for qd, qm in ((torch.int8, 127.0), (torch.float8_e4m3fn, 448.0)):
    for m, k in ((3, 2048), (37, 64), (1024, 2048)):
        g = torch.Generator(device="cuda").manual_seed(m * k)
        x = (torch.randn((m, k), generator=g, device="cuda") * 3.0).half()
        x[0, 0] = 0
        q, s = tk.quantize_rows(x, qd)
        rq, rs = schemes.quantize_rows(x, qm, qd)
        d = (q.float() - rq.float()).abs()
        idx = (d > 0).nonzero()[:5]
        y = x.float() / rs
        print(qd, m, k, "differ", int((d > 0).sum()), "of", d.numel(), "max", float(d.max()),
              "scale rel err", float(((s - rs).abs() / rs).max()),
              [(float(y[i, j]), float(q[i, j].float()), float(rq[i, j].float())) for i, j in idx.tolist()])
