#!/usr/bin/env python3
"""GXNOR/DST training of the paper's CIFAR-10 net in PyTorch: an independent cross-check of ternlab.

ternlab's CUDA runner (bench/gpu_train.ts) trains this net with DST and reaches about 85 % test
accuracy in its wall-clock budget. This script is a second, independent implementation of the same
algorithm (/work/shared/ALGORITHM.md §1.1–1.4) on the same data, with the same split, augmentation,
schedule and reporting, so that the two figures can be compared: if they agree, ternlab's figure
is a property of the algorithm and not of ternlab's code. It reuses only the model and the ternary
activation of bench/pytorch_gxnor.py (the throughput baseline).

What it computes (ALGORITHM.md): ternary weights held as int8 states, no float copy between steps
(each step makes a transient float view for the products); initial states P(0) = ½, P(±1) = ¼ in
the conv layers (U(−1, 1) rounded) and ⅓ each in the dense layers (U(−1.5, 1.5) rounded); φ with
r = 1 (ties to ±1) and the rectangular window a = 0.5; conv → [max-pool] → BN → φ, last dense → BN;
BN ε 1e-4, momentum 0.1, biased batch variance (also in the running statistics, as ternlab and
Lasagne do), γ/β by Adam; squared-hinge loss; DST with Lasagne's Adam proposal
ΔW = −α_t·m/(√v + ε), α_t = η·√(1−β2^t)/(1−β1^t), boundary clip, κ = floor|ΔW|,
τ = tanh(3·(|ΔW| − κ)). `--weights float` swaps the DST weights for float weights trained by Adam
(everything else equal), to isolate what the discrete weight rule costs.

Data as ternlab reads it: class folders sorted by name, images sorted by path, labels = folder
index; 10 % held out for validation with ternlab's own stratified split (the same mulberry32
shuffle and largest-remainder quotas as src/datasets/dataset.ts, so the validation rows are the
same ones ternlab holds out). Augmentation per sample per step on the GPU: horizontal flip (p ½),
random crop of the image padded by --crop pixels. The padding is ternlab's: native/core/train.cpp
(augment_sample) pads the uint8 pixels with 0, which becomes −1 after the input scaling 2x/255 − 1;
`--crop-fill zero` pads the scaled input with 0 instead.

Command lines (the GPU machine: H200, PyTorch 2.x; data as in /work/shared/datasets/cifar10):

    python3 bench/pytorch_gxnor_train.py --data DIR --minutes 7 --batch 256 --crop 4 --out dst.json
    python3 bench/pytorch_gxnor_train.py --data DIR --minutes 7 --batch 256 --crop 4 --weights float --out float.json
    python3 bench/pytorch_gxnor_train.py --data DIR --minutes 7 --batch 256 --crop 4 --compile --out dst-compiled.json

and the CPU smoke test:

    python3 bench/pytorch_gxnor_train.py --device cpu --data DIR --limit 2000 --test-limit 1000 --val-limit 500 \\
        --minutes 0.5 --batch 100 --crop 4 --out /tmp/x.json

Prints one line per epoch (as ternlab's runner does) and a JSON summary line at the end; --out writes
{"summary": {...}, "rows": [...]} with the keys of bench/gpu_train.ts (accuracies as fractions).
"""
import argparse
import datetime
import io
import json
import math
import multiprocessing
import os
import shlex
import sys
import tarfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# act (φ with its window) is used inside Cifar.forward; named here so the dependency is explicit
from pytorch_gxnor import Cifar, act, dst_update, squared_hinge  # noqa: E402,F401

IMAGE_EXT = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


# ---------------------------------------------------------------------------------------------
# Data


def _decode(b):
    from PIL import Image

    with Image.open(io.BytesIO(b)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_image_folder(path, workers):
    """Class folders of images in a .tar / .tar.gz, laid out and ordered as ternlab's readImageFolder."""
    items = []  # (parts, bytes)
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = [p for p in m.name.replace("\\", "/").split("/") if p not in ("", ".")]
            # hidden files and archive debris are skipped, as ternlab does
            if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            if os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXT:
                continue
            items.append((parts, tf.extractfile(m).read()))
    # leading folders shared by every image are stripped while a class level remains below them
    depth = 0
    while items and all(len(p) >= depth + 3 and p[depth] == items[0][0][depth] for p, _ in items):
        depth += 1
    by_class = {}
    for parts, b in items:
        if len(parts) < depth + 2:
            raise SystemExit(f"{path}: {'/'.join(parts)} is not inside a class folder")
        by_class.setdefault(parts[depth], []).append(("/".join(parts), b))
    classes = sorted(by_class)
    blobs, labels = [], []
    for c, name in enumerate(classes):
        for _, b in sorted(by_class[name], key=lambda t: t[0]):
            blobs.append(b)
            labels.append(c)
    n = len(blobs)
    images = None
    t0 = time.time()
    step = max(1, n // 10)

    def progress(i):
        if (i + 1) % step == 0 or i + 1 == n:
            print(f"  {os.path.basename(path)}: {i + 1}/{n} decoded ({time.time() - t0:.1f}s)", flush=True)

    # fork before any CUDA work (decode runs first), so the pool is cheap and safe
    if workers > 1 and n > 2000:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for i, a in enumerate(pool.imap(_decode, blobs, chunksize=256)):
                images = _place(images, a, i, n, path)
                progress(i)
    else:
        for i, b in enumerate(blobs):
            images = _place(images, _decode(b), i, n, path)
            progress(i)
    return images, np.asarray(labels, dtype=np.int64), classes


def _place(images, a, i, n, path):
    if images is None:
        images = np.empty((n,) + a.shape, dtype=np.uint8)
    if a.shape != images.shape[1:]:
        raise SystemExit(f"{path}: image {i} is {a.shape}, the first was {images.shape[1:]}; expected one size")
    images[i] = a
    return images


def _mulberry32(seed):
    a = seed & 0xFFFFFFFF
    M = 0xFFFFFFFF

    def rand():
        nonlocal a
        a = (a + 0x6D2B79F5) & M
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & M
        t = (t ^ ((t + (((t ^ (t >> 7)) * (t | 61)) & M)) & M)) & M
        return ((t ^ (t >> 14)) & M) / 4294967296.0

    return rand


def split(labels, val_fraction, seed, classes):
    """ternlab's split (src/datasets/dataset.ts): stratified, largest-remainder quotas, per-class
    Fisher–Yates by mulberry32(seed); both halves keep the original row order."""
    count = len(labels)
    total = int(math.floor(count * val_fraction + 0.5))  # JS Math.round
    by_class = [np.flatnonzero(labels == c).tolist() for c in range(classes)]
    quota = [int(math.floor(len(r) * val_fraction)) for r in by_class]
    left = total - sum(quota)
    order = sorted(range(classes), key=lambda c: (-(len(by_class[c]) * val_fraction - quota[c]), c))
    for c in order:
        if left == 0:
            break
        if quota[c] < len(by_class[c]):
            quota[c] += 1
            left -= 1
    rand = _mulberry32(seed)
    is_val = np.zeros(count, dtype=bool)
    for c, rows in enumerate(by_class):
        r = list(rows)
        for i in range(len(r) - 1, 0, -1):
            j = int(math.floor(rand() * (i + 1)))
            r[i], r[j] = r[j], r[i]
        is_val[r[: quota[c]]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def take_stratified(rows, labels, n):
    """The first n of `rows`, taken round robin over the classes (as ternlab's `limit`), so that a
    small run still sees every class in proportion; original order kept."""
    if n is None or n >= len(rows):
        return rows
    per = {}
    for r in rows:
        per.setdefault(int(labels[r]), []).append(r)
    keys = sorted(per)
    take = {k: 0 for k in keys}
    left = n
    while left > 0:
        for k in keys:
            if left > 0 and take[k] < len(per[k]):
                take[k] += 1
                left -= 1
    return np.sort(np.concatenate([np.asarray(per[k][: take[k]], dtype=np.int64) for k in keys]))


# ---------------------------------------------------------------------------------------------
# Model and updates

SCALE = float(np.float32(2.0 / 255.0))  # ternlab's input = pixel·(2/255 as float32) − 1


def to_input(x_u8):
    return x_u8.float() * SCALE - 1.0  # NHWC float


def augment(x, gen, flip, pad, fill):
    """x: NHWC float (scaled input). Output (y, x) shows the flipped image at (y + dy, x + dx),
    dy, dx uniform in [−pad, pad], `fill` outside: ternlab's augment_sample, done as one gather."""
    B, H, W, _ = x.shape
    dev = x.device
    if pad > 0:
        x = F.pad(x, (0, 0, pad, pad, pad, pad), value=fill)
    oy = torch.randint(0, 2 * pad + 1, (B, 1), generator=gen, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (B, 1), generator=gen, device=dev)
    rows = oy + torch.arange(H, device=dev)
    cols = ox + torch.arange(W, device=dev)
    if flip:
        # flipping the padded image is flipping then padding (the padding is symmetric)
        f = torch.rand((B, 1), generator=gen, device=dev) < 0.5
        cols = torch.where(f, (W + 2 * pad - 1) - cols, cols)
    b = torch.arange(B, device=dev)[:, None, None]
    return x[b, rows[:, :, None], cols[:, None, :]]


def cutout(x, gen, size, fill):
    """A size × size square set to `fill` (ternlab: pixel 128, input 2·128/255 − 1), centred on a
    pixel drawn uniformly over the image and clipped at its edges: ternlab's augment_sample."""
    B, H, W, _ = x.shape
    dev = x.device
    cy = torch.randint(0, H, (B, 1, 1), generator=gen, device=dev) - size // 2
    cx = torch.randint(0, W, (B, 1, 1), generator=gen, device=dev) - size // 2
    ys = torch.arange(H, device=dev)[None, :, None]
    xs = torch.arange(W, device=dev)[None, None, :]
    inside = (ys >= cy) & (ys < cy + size) & (xs >= cx) & (xs < cx + size)
    return torch.where(inside[..., None], torch.full_like(x, fill), x)


def nchw(x):
    # an NHWC-contiguous tensor permuted to NCHW is exactly channels_last: no copy
    return x.permute(0, 3, 1, 2)


def init_states(net, gen):
    """Initial ternary states (§1.1): conv P(0) = ½, P(±1) = ¼; dense P(0) = P(±1) = ⅓."""
    for kind, name, shape, *_ in net.layers:
        p = 0.25 if kind == "conv" else 1.0 / 3.0
        u = torch.rand(shape, generator=gen)
        q = torch.zeros(shape, dtype=torch.int8)
        q[u < p] = -1
        q[u >= 1 - p] = 1
        if kind == "conv":
            q = q.contiguous(memory_format=torch.channels_last)
        getattr(net, "q_" + name).copy_(q)


def float_weights(net, device):
    """The `float` reference: float32 weights with PyTorch's default init of Conv2d/Linear."""
    ws = []
    for kind, name, shape, *_ in net.layers:
        w = torch.empty(shape)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # what nn.Conv2d / nn.Linear do
        w = w.to(device)
        if kind == "conv":
            w = w.contiguous(memory_format=torch.channels_last)
        ws.append(nn.Parameter(w))
    return ws


def bn_counts(net, device):
    """Values per channel per sample at each BN (1024, 256, …, 1), found by one probe pass: needed
    to turn PyTorch's unbiased running variance into the biased one."""
    counts = []
    hooks = [b.register_forward_pre_hook(lambda m, inp: counts.append(inp[0].numel() // (inp[0].shape[0] * inp[0].shape[1])))
             for b in net.bns]
    net.eval()
    with torch.no_grad():
        ws = [q.float() for q in net.states()]
        net(torch.zeros(2, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last), ws)
    net.train()
    for h in hooks:
        h.remove()
    return counts


def js_exp(x):
    s = f"{x:.2e}"  # JS toExponential(2) writes e-2, not e-02
    mant, e = s.split("e")
    return f"{mant}e{int(e):+d}"


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder with train.tar(.gz) and test.tar(.gz) of class folders")
    ap.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget for training (epochs planned to fit)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr0", type=float, default=0.01)
    ap.add_argument("--lr1", type=float, default=0.0001)
    ap.add_argument("--drops", default="", help="fractions of the run from which η is ×0.1 more, e.g. 0.5,0.8")
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--m", type=float, default=3.0, help="τ = tanh(m·x) steepness")
    ap.add_argument("--crop", type=int, default=0, help="random crop of the image padded by P pixels")
    ap.add_argument("--crop-fill", choices=["pixel0", "zero"], default="pixel0",
                    help="pixel0: pad pixels with 0 (input −1), as ternlab; zero: pad the scaled input with 0")
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--cutout", type=int, default=0, help="a square of this side set to mid-grey after flip and crop")
    ap.add_argument("--weights", choices=["dst", "float"], default="dst")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["bf16", "off"], default=None, help="default: bf16 on cuda, off on cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward")
    ap.add_argument("--limit", type=int, default=None, help="use only N training images (after the split, stratified)")
    ap.add_argument("--val-limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="decode processes")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    drops = [float(d) for d in a.drops.split(",") if d != ""]
    for d in drops:
        if not 0 < d < 1:
            raise SystemExit(f"--drops {a.drops}: expected fractions of the run in (0, 1)")
    for k in ("beta1", "beta2"):
        if not 0 <= getattr(a, k) < 1:
            raise SystemExit(f"--{k} {getattr(a, k)}: expected a number in [0, 1)")
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    amp = (a.amp or ("bf16" if cuda else "off")) == "bf16"
    flip = not a.no_flip
    fill = -1.0 if a.crop_fill == "pixel0" else 0.0

    # ---- data (decoded before any CUDA work, so the decode pool can fork)
    t00 = time.time()
    print(f"decoding {a.data} with {a.workers} worker(s)", flush=True)
    xtr_all, ytr_all, classes = read_image_folder(_tar(a.data, "train"), a.workers)
    xte, yte, classes_te = read_image_folder(_tar(a.data, "test"), a.workers)
    if classes_te != classes:
        raise SystemExit(f"train classes {classes} differ from test classes {classes_te}")
    decode_s = time.time() - t00
    print(f"decoded {len(ytr_all)} train + {len(yte)} test images in {decode_s:.1f}s", flush=True)
    k = len(classes)
    tr_rows, va_rows = split(ytr_all, 0.1, a.seed, k)
    tr_rows = take_stratified(tr_rows, ytr_all, a.limit)
    va_rows = take_stratified(va_rows, ytr_all, a.val_limit)
    te_rows = take_stratified(np.arange(len(yte)), yte, a.test_limit)

    torch.manual_seed(a.seed)
    if cuda:
        torch.backends.cudnn.benchmark = True

    def put(x, y, rows):
        return torch.from_numpy(np.ascontiguousarray(x[rows])).to(dev), torch.from_numpy(y[rows]).to(dev)

    Xtr, Ytr = put(xtr_all, ytr_all, tr_rows)
    Xva, Yva = put(xtr_all, ytr_all, va_rows)
    Xte, Yte = put(xte, yte, te_rows)
    del xtr_all, xte
    load_s = time.time() - t00
    ntr = len(Ytr)
    print(f"train {ntr}, val {len(Yva)}, test {len(Yte)} images on {dev} (load {load_s:.1f}s)", flush=True)

    # ---- model
    net = Cifar()
    init_states(net, torch.Generator().manual_seed(a.seed))
    net = net.to(dev).to(memory_format=torch.channels_last)
    counts = bn_counts(net, dev)
    qs = net.states()
    if a.weights == "dst":
        ms = [torch.zeros_like(q, dtype=torch.float32) for q in qs]  # zeros_like keeps channels_last
        vs = [torch.zeros_like(m) for m in ms]
        fws = []
    else:
        fws = float_weights(net, dev)
    adam_kw = {"fused": True} if cuda else {}
    # BN's γ/β (and the float reference's weights) by Adam, with the DST proposal's η and betas
    opt = torch.optim.Adam(list(net.parameters()) + fws, lr=a.lr0, betas=(a.beta1, a.beta2), eps=1e-8, **adam_kw)
    fwd = torch.compile(net) if a.compile else net
    gen = torch.Generator(device=dev).manual_seed(a.seed + 1)
    mom = 0.1

    def weights():
        return [q.float() for q in qs] if a.weights == "dst" else fws

    def train_step(idx, lr, t):
        xb = to_input(Xtr[idx])
        if flip or a.crop > 0:
            xb = augment(xb, gen, flip, a.crop, fill)
        if a.cutout > 0:
            xb = cutout(xb, gen, a.cutout, 128 * SCALE - 1.0)
        xb, yb = nchw(xb), Ytr[idx]
        if a.weights == "dst":
            ws = [q.float().requires_grad_() for q in qs]  # the step's transient float views
        else:
            ws = fws
        old_rv = [b.running_var.clone() for b in net.bns]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = fwd(xb, ws)
        loss = squared_hinge(out, yb, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            if a.weights == "dst":
                lr_t = lr * math.sqrt(1 - a.beta2 ** t) / (1 - a.beta1 ** t)
                for q, w, m, v in zip(qs, ws, ms, vs):
                    dst_update(q, w.grad, m, v, lr_t, m_tanh=a.m, beta1=a.beta1, beta2=a.beta2, eps=1e-8)
            # PyTorch's running variance takes the unbiased batch variance u = var·n/(n−1); ternlab
            # (and Lasagne) the biased one: rv = (1−mom)·old + mom·var = rv_torch·(n−1)/n + (1−mom)·old/n
            n = idx.numel()
            for b, old, c in zip(net.bns, old_rv, counts):
                nn_ = n * c
                if nn_ > 1:
                    b.running_var.mul_((nn_ - 1) / nn_).add_(old, alpha=(1 - mom) / nn_)
        opt.step()
        return loss.detach(), (out.detach().argmax(1) == yb).sum()

    @torch.no_grad()
    def evaluate(X, Y):
        net.eval()
        ws = weights()
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for i in range(0, len(Y), 1000):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = fwd(nchw(to_input(X[i:i + 1000])), ws)
            correct += (out.argmax(1) == Y[i:i + 1000]).sum()
        net.train()
        return correct.item() / max(1, len(Y))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # ---- training, planned to fill the budget (bench/gpu_train.ts's plan)
    spe = ntr // a.batch
    if spe == 0:
        raise SystemExit(f"--batch {a.batch} exceeds the {ntr} training images")
    budget = a.minutes * 60
    t_start = time.time()
    planned, step = 1, 0
    rows = []
    best = {"val": -1.0, "test": 0.0, "epoch": -1}
    best_test = 0.0
    epoch = 0
    while epoch < planned:
        frac = epoch / (planned - 1) if planned > 1 else 0.0
        lr = a.lr0 * (a.lr1 / a.lr0) ** frac * 0.1 ** sum(1 for d in drops if frac >= d)
        for g in opt.param_groups:
            g["lr"] = lr
        sync()
        te0 = time.time()
        perm = torch.randperm(ntr, generator=gen, device=dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for b in range(spe):  # the last incomplete batch is dropped
            step += 1
            lo, co = train_step(perm[b * a.batch:(b + 1) * a.batch], lr, step)
            loss_sum += lo
            correct += co
        train_loss = loss_sum.item() / spe
        train_acc = correct.item() / (spe * a.batch)
        train_s = time.time() - te0
        val_acc, test_acc = evaluate(Xva, Yva), evaluate(Xte, Yte)
        wall = time.time() - t_start
        if val_acc > best["val"]:
            best = {"val": val_acc, "test": test_acc, "epoch": epoch}
        best_test = max(best_test, test_acc)
        rows.append({"epoch": epoch, "wall_s": wall, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                     "val_acc": val_acc, "test_acc": test_acc, "epoch_train_s": train_s})
        print(f"epoch {epoch} wall {wall:.1f}s lr {js_exp(lr)} loss {train_loss:.4f} train {100 * train_acc:.2f}% "
              f"val {100 * val_acc:.2f}% test {100 * test_acc:.2f}% ({ntr / train_s:.0f} img/s)", flush=True)
        # from the first epoch, then again after the third (the first carries the one-off setup:
        # cuDNN plans, compilation, allocations), so that the epochs fill the budget
        if epoch == 0:
            planned = max(2, int(budget // wall))
        if epoch == 2:
            planned = max(3, 3 + int((budget - wall) // ((wall - rows[0]["wall_s"]) / 2)))
        epoch += 1

    total = time.time() - t_start
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    summary = {
        "model": "cifar", "backend": f"pytorch {torch.__version__} {name}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "batch": a.batch, "lr0": a.lr0, "lr1": a.lr1, "epochs": planned, "steps": step,
        "train_wall_s": total, "load_s": load_s, "decode_s": decode_s,
        "final_test": rows[-1]["test_acc"], "test_at_best_val": best["test"], "best_val_epoch": best["epoch"],
        "best_test_over_epochs": best_test,
        "command": "python3 " + " ".join(shlex.quote(s) for s in sys.argv),
        "beta1": a.beta1, "beta2": a.beta2, "m": a.m, "crop": a.crop, "crop_fill": a.crop_fill, "flip": flip, "cutout": a.cutout,
        "drops": drops, "weights": a.weights, "seed": a.seed, "amp": "bf16" if amp else "off", "compile": a.compile,
        "train_count": ntr, "val_count": len(Yva), "test_count": len(Yte),
    }
    print(json.dumps(summary), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)


def _tar(folder, split_name):
    for ext in (".tar.gz", ".tgz", ".tar"):
        p = os.path.join(folder, split_name + ext)
        if os.path.exists(p):
            return p
    raise SystemExit(f"{folder}: no {split_name}.tar.gz / .tgz / .tar")


if __name__ == "__main__":
    sys.exit(main())
