#!/usr/bin/env python3
"""GXNOR in PyTorch, the baseline of `npm run bench:gpu` (issue 3).

The same algorithm and shapes as ternlab's models: ternary weights kept as int8 states (no float copy
between steps; a transient float view is made for each step's products), ternary activations
phi_1 with the rectangular window (a = 0.5) as straight-through derivative, batch norm (eps 1e-4,
momentum 0.1) trained by Adam, squared-hinge loss, and the DST update (Adam proposal, tanh(3x)
transition probability, boundary clip) written as one function. Run eagerly and under
torch.compile, with bf16 autocast and channels_last. Prints one JSON object per line.

    python3 bench/pytorch_gxnor.py [--models cifar,resnet] [--batch 256] [--steps 30] [--modes eager,compile[,compile-graphs]]
        [--kernel-profile]

--kernel-profile: after the timed steps, a few more under torch.profiler, and where the GPU time of
a step goes by kernel kind (cuDNN's forward, data-gradient and filter-gradient convolutions by
their kernel names, matrix products, Triton's fused kernels, the rest), with the largest kernels
by name so that the sorting can be checked. It tells how much of PyTorch's step is the backward
products that ternlab runs on the same cuDNN (docs/benchmarks.md: the bound on the 2x target).
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class TernaryAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 1).to(x.dtype) - (x <= -1).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        d = (x.abs() - 1).abs() <= 0.5
        return g * d.to(g.dtype)


def act(x):
    return TernaryAct.apply(x)


class GxnorNet(nn.Module):
    """Holds the int8 states as buffers; forward takes the step's float views of them."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers  # list of ("conv", name, shape, stride, pad) | ("dense", name, shape)
        for kind, name, shape, *_ in layers:
            q = torch.randint(-1, 2, shape, dtype=torch.int8)
            if kind == "conv":
                q = q.contiguous(memory_format=torch.channels_last)
            self.register_buffer("q_" + name, q)

    def states(self):
        return [getattr(self, "q_" + l[1]) for l in self.layers]


def bn(c, two_d=True):
    return (nn.BatchNorm2d if two_d else nn.BatchNorm1d)(c, eps=1e-4, momentum=0.1)


class Cifar(GxnorNet):
    def __init__(self):
        spec = [("conv", "c1", (128, 3, 3, 3)), ("conv", "c2", (128, 128, 3, 3)), ("conv", "c3", (256, 128, 3, 3)),
                ("conv", "c4", (256, 256, 3, 3)), ("conv", "c5", (512, 256, 3, 3)), ("conv", "c6", (512, 512, 3, 3)),
                ("dense", "f7", (1024, 8192)), ("dense", "f8", (10, 1024))]
        super().__init__(spec)
        self.bns = nn.ModuleList([bn(c) for c in (128, 128, 256, 256, 512, 512)] + [bn(1024, False), bn(10, False)])
        self.pool_after = {1, 3, 5}

    def forward(self, x, ws):
        h = x
        for i in range(6):
            h = F.conv2d(h, ws[i], padding=1)
            if i in self.pool_after:
                h = F.max_pool2d(h, 2)
            h = act(self.bns[i](h))
        h = h.permute(0, 2, 3, 1).flatten(1)  # NHWC flatten, as ternlab
        h = act(self.bns[6](F.linear(h, ws[6])))
        return self.bns[7](F.linear(h, ws[7]))


class ResNet18(GxnorNet):
    """Ternary except the first conv and the last dense layer (float parameters, trained by Adam)."""

    def __init__(self, classes=1000):
        spec, self.blocks = [], []
        cin = 64
        for si, oc in enumerate((64, 128, 256, 512)):
            for b in range(2):
                stride = 2 if si > 0 and b == 0 else 1
                p = f"s{si}b{b}"
                spec += [("conv", p + "c1", (oc, cin, 3, 3)), ("conv", p + "c2", (oc, oc, 3, 3))]
                down = stride != 1 or cin != oc
                if down:
                    spec.append(("conv", p + "d", (oc, cin, 1, 1)))
                self.blocks.append((stride, down, oc))
                cin = oc
        super().__init__(spec)
        self.stem = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.stem_bn = bn(64)
        self.block_bns = nn.ModuleList()
        for stride, down, oc in self.blocks:
            self.block_bns.append(nn.ModuleList([bn(oc), bn(oc)] + ([bn(oc)] if down else [])))
        self.fc = nn.Linear(512, classes, bias=False)
        self.fc_bn = bn(classes, False)

    def forward(self, x, ws):
        real = self.stem_bn(F.max_pool2d(self.stem(x), 3, 2, 1))
        tern = act(real)
        k = 0
        for (stride, down, oc), bns in zip(self.blocks, self.block_bns):
            h = act(bns[0](F.conv2d(tern, ws[k], stride=stride, padding=1)))
            r = bns[1](F.conv2d(h, ws[k + 1], padding=1))
            k += 2
            if down:
                skip = bns[2](F.conv2d(tern, ws[k], stride=stride))
                k += 1
            else:
                skip = real
            real = r + skip
            tern = act(real)
        h = F.adaptive_avg_pool2d(real, 1).flatten(1)  # the residual stream (real), as ternlab
        return self.fc_bn(self.fc(h))


def dst_update(q, g, m, v, lr_t, m_tanh: float = 3.0, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """GXNOR's DST with Lasagne's Adam proposal; q (int8) updated in place, no float copy kept.
    lr_t is the bias-corrected α_t; the moments stay raw, as in Lasagne."""
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    dw = -lr_t * m / (v.sqrt() + eps)
    w = q.float()
    dw = torch.minimum(torch.maximum(dw, -1 - w), 1 - w)
    x = dw.abs()
    kappa = x.floor()
    tau = torch.tanh(m_tanh * (x - kappa))
    jump = kappa + (torch.rand_like(x) < tau).float()
    q.copy_(torch.clamp(w + torch.sign(dw) * jump, -1, 1).to(torch.int8))


def squared_hinge(y, labels, classes):
    t = F.one_hot(labels, classes).float() * 2 - 1
    return torch.clamp(1 - t * y.float(), min=0).pow(2).mean()


def kernel_kind(name):
    n = name.lower()
    if "wgrad" in n:
        return "conv backward filter"
    if "dgrad" in n:
        return "conv backward data"
    if "fprop" in n or ("conv" in n and "fwd" in n):
        return "conv forward"
    if "triton" in n:
        return "triton (fused elementwise)"
    if "gemm" in n or "cutlass" in n or "cublas" in n:
        return "matrix products"
    return "other"


def profile_kernels(step, steps, model_name, mode, batch):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
    by_kind, by_name = {}, {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None)
        if us is None:
            us = ev.cuda_time_total
        if not us:
            continue
        by_kind[kernel_kind(ev.key)] = by_kind.get(kernel_kind(ev.key), 0.0) + us / 1000 / steps
        by_name[ev.key] = by_name.get(ev.key, 0.0) + us / 1000 / steps
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:20]
    return {"kind": "pytorch_kernels", "model": model_name, "mode": mode, "batch": batch, "steps": steps,
            "ms_per_step_by_kind": {k: round(v, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "kernel_ms_per_step": round(sum(by_kind.values()), 3),
            "top_kernels": [{"name": k[:160], "kind": kernel_kind(k), "ms_per_step": round(v, 3)} for k, v in top]}


def bench(model_name, mode, batch, steps, warmup, kernel_profile=False):
    torch.manual_seed(0)
    if model_name == "cifar":
        net, size, classes = Cifar(), 32, 10
    else:
        net, size, classes = ResNet18(), 224, 1000
    net = net.cuda().to(memory_format=torch.channels_last)
    qs = net.states()
    ms = [torch.zeros(q.shape, device="cuda", dtype=torch.float32).contiguous(memory_format=torch.channels_last) if q.dim() == 4
          else torch.zeros(q.shape, device="cuda") for q in qs]
    vs = [torch.zeros_like(m) for m in ms]
    float_params = [p for p in net.parameters()]
    opt = torch.optim.Adam(float_params, lr=1e-3, eps=1e-8, fused=True)
    # compile-graphs: torch.compile's "reduce-overhead" mode (CUDA graphs) for the net, which removes
    # the per-kernel launch cost that bounds the compiled step at small batches; the DST update
    # mutates its inputs, which CUDA graphs skip, so it stays in the default mode
    fwd = torch.compile(net, mode="reduce-overhead") if mode == "compile-graphs" else torch.compile(net) if mode == "compile" else net
    upd = torch.compile(dst_update) if mode.startswith("compile") else dst_update
    xs = [torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last) for _ in range(4)]
    ys = [torch.randint(0, classes, (batch,), device="cuda") for _ in range(4)]
    lr_t = torch.tensor(0.01, device="cuda")

    def step(i):
        ws = [q.float().requires_grad_() for q in qs]  # the step's transient float views
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(xs[i % 4], ws)
        loss = squared_hinge(out, ys[i % 4], classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for q, w, m, v in zip(qs, ws, ms, vs):
                upd(q, w.grad, m, v, lr_t)
        opt.step()

    t0 = time.time()
    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    warm_s = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(steps):
        step(i)
    end.record()
    torch.cuda.synchronize()
    ms_step = start.elapsed_time(end) / steps
    if kernel_profile:
        print(json.dumps(profile_kernels(step, 5, model_name, mode, batch)), flush=True)
    return {"kind": "pytorch", "model": model_name, "mode": mode, "batch": batch, "ms_per_step": ms_step,
            "images_per_s": batch / ms_step * 1000, "peak_MiB": torch.cuda.max_memory_allocated() / 2**20,
            "warmup_s": warm_s}


def ceilings():
    a = torch.randint(-128, 127, (8192, 8192), dtype=torch.int8, device="cuda")
    b = torch.randint(-128, 127, (8192, 8192), dtype=torch.int8, device="cuda").t()
    for _ in range(3):
        torch._int_mm(a, b)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        torch._int_mm(a, b)
    e.record()
    torch.cuda.synchronize()
    tops = 2 * 8192**3 / (s.elapsed_time(e) / 10 / 1000) / 1e12
    # the bf16 ceiling of the backward products (bench/work.ts divides the work by it)
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    s.record()
    for _ in range(10):
        a @ b
    e.record()
    torch.cuda.synchronize()
    bf16 = 2 * 8192**3 / (s.elapsed_time(e) / 10 / 1000) / 1e12
    del a, b
    x = torch.empty(2**31, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    s.record()
    for _ in range(10):
        y.copy_(x)
    e.record()
    torch.cuda.synchronize()
    gbps = 2 * 2**31 / (s.elapsed_time(e) / 10 / 1000) / 1e9
    del x, y
    return {"kind": "ceilings", "int8_TOPS": tops, "bf16_TFLOPS": bf16, "copy_GBps": gbps, "device": torch.cuda.get_device_name(),
            "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cifar,resnet")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--kernel-profile", action="store_true")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    print(json.dumps(ceilings()), flush=True)
    for model in a.models.split(","):
        for mode in a.modes.split(","):
            try:
                print(json.dumps(bench(model, mode, a.batch, a.steps, a.warmup, a.kernel_profile)), flush=True)
            except Exception as e:  # report and go on with the next configuration
                print(json.dumps({"kind": "pytorch", "model": model, "mode": mode, "error": repr(e)[:500]}), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
