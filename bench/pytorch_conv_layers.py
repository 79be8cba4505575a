"""The bf16 backward products of single layers in PyTorch, on the shapes of ternlab's kernel program
(bench/gpu_kernels.cu): what PyTorch's cuDNN path (its v8 graph API, channels_last) achieves per
layer, beside ternlab's legacy-API cuDNN survey in the same bench:gpu run. Ternary x and w (exact
in bf16), a Gaussian dy, as ternlab's products see them.

Three settings: cudnn.benchmark with any algorithm (what bench/pytorch_gxnor.py runs), benchmark
restricted to deterministic algorithms (ternlab's contract), and the heuristics without timing.
Prints one JSON object per line.
  python3 bench/pytorch_conv_layers.py [--batch 256]
"""
import argparse
import json
import sys

import torch

# name, images, height = width, c, oc, kernel, padding (stride 1), as bench/gpu_kernels.cu
SHAPES = [
    ("cifar conv2 128->128 32x32", 32, 128, 128, 3, 1),
    ("cifar conv3 128->256 16x16", 16, 128, 256, 3, 1),
    ("cifar conv4 256->256 16x16", 16, 256, 256, 3, 1),
    ("cifar conv5 256->512 8x8", 8, 256, 512, 3, 1),
    ("cifar conv6 512->512 8x8", 8, 512, 512, 3, 1),
    ("cifar fc7 8192->1024", 1, 8192, 1024, 1, 0),
    ("resnet s1 64->64 56x56", 56, 64, 64, 3, 1),
    ("resnet s4 512->512 7x7", 7, 512, 512, 3, 1),
]


def timed(f, reps=20):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        s.record()
        f()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    cl = torch.channels_last
    for mode in ("benchmark", "benchmark-deterministic", "heuristics"):
        torch.backends.cudnn.benchmark = mode != "heuristics"
        torch.backends.cudnn.deterministic = mode == "benchmark-deterministic"
        for name, hw, c, oc, k, pad in SHAPES:
            try:
                x = torch.randint(-1, 2, (a.batch, c, hw, hw), device="cuda").to(torch.bfloat16).contiguous(memory_format=cl)
                w = torch.randint(-1, 2, (oc, c, k, k), device="cuda").to(torch.bfloat16).contiguous(memory_format=cl)
                oh = hw + 2 * pad - k + 1
                dy = torch.randn(a.batch, oc, oh, oh, device="cuda").to(torch.bfloat16).contiguous(memory_format=cl)

                def back(mask):
                    return torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

                data = timed(lambda: back([True, False, False]))
                filt = timed(lambda: back([False, True, False]))
                flop = 2.0 * a.batch * oh * oh * oc * c * k * k
                print(json.dumps({"kind": "torch conv layer", "mode": mode, "shape": name, "batch": a.batch, "data_ms": data,
                                  "filter_ms": filt, "data_TFLOPS": flop / data / 1e9, "filter_TFLOPS": flop / filt / 1e9}), flush=True)
                del x, w, dy
            except Exception as e:  # report and go on with the next shape
                print(json.dumps({"kind": "torch conv layer", "mode": mode, "shape": name, "error": repr(e)[:300]}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
