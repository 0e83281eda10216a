#!/usr/bin/python3
"""The SE-ResNeXt family in PyTorch: the peer `sx_bench model` is compared against, and an
independent check of our builder's parameter counts (model/se_resnext.h).

Architecture as published (ResNeXt: Xie et al. 2017; SE: Hu et al. 2018; the `d`/vd stem and
shortcut: He et al. 2019, "Bag of Tricks"), written after torchvision's and timm's ResNet: stride on
the grouped 3x3; SE = global mean -> 1x1 conv(+bias) -> ReLU -> 1x1 conv(+bias) -> sigmoid -> scale,
before the residual add; projection shortcut = 1x1 conv + BN; `vd` = three 3x3 stem convs (the first
/2) and a 2x2/2 avg pool before the 1x1/1 shortcut conv; `small` (ours, for 28-32 px inputs) = one
3x3/1 stem conv of 32 channels, no pool. State_dict names are torchvision's/timm's, so
`sx_ckpt export --format torch` output loads with load_state_dict (tests/torch/ checks it).

  /usr/bin/python3 bench/torch_se_resnext.py --counts [--sx-bench build/bin/sx_bench]  # counts, checked
  /usr/bin/python3 bench/torch_se_resnext.py --arch small --batch 128 --image 28 --threads 2 --json
  (run it under GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736,
   see ../shared/BENCHMARKING.md; bench/compare_model.py does.)

Benchmark JSON keys match `sx_bench model --json`: forward_ms, train_step_ms (medians),
infer_img_per_s, peak_rss_mb, plus memory_format. With --memory-format best (the default) each
format runs in its own process (so each has its own peak RSS) and the better one is reported.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- model ---------------------------------------------------------------------------------


class Spec:
    """A family member: stages, cardinality, widths, SE reduction, stem (the knobs of the papers)."""

    def __init__(self, blocks=(3, 4, 6, 3), cardinality=32, base_width=4, stage_channels=None,
                 stage_strides=None, se_reduction=16, stem="imagenet", stem_channels=64,
                 avg_down=False, in_channels=3, num_classes=1000):
        self.blocks = list(blocks)
        self.cardinality = cardinality
        self.base_width = base_width
        self.stage_channels = list(stage_channels) if stage_channels else None
        self.stage_strides = list(stage_strides) if stage_strides else None
        self.se_reduction = se_reduction
        self.stem = stem
        self.stem_channels = stem_channels
        self.avg_down = avg_down
        self.in_channels = in_channels
        self.num_classes = num_classes

    def width(self, s):
        return self.cardinality * self.base_width * (1 << s)

    def out_channels(self, s):
        return self.stage_channels[s] if self.stage_channels else 256 * (1 << s)

    def stride(self, s):
        if self.stage_strides:
            return self.stage_strides[s]
        return 1 if s == 0 else 2


PRESETS = {
    "se_resnext26_32x4d": dict(blocks=(2, 2, 2, 2)),
    "se_resnext50_32x4d": dict(blocks=(3, 4, 6, 3)),
    "se_resnext101_32x4d": dict(blocks=(3, 4, 23, 3)),
    "se_resnext152_32x4d": dict(blocks=(3, 8, 36, 3)),
    "resnext50_32x4d": dict(blocks=(3, 4, 6, 3), se_reduction=0),
    "resnext101_32x4d": dict(blocks=(3, 4, 23, 3), se_reduction=0),
    "se_resnext50_vd_32x4d": dict(blocks=(3, 4, 6, 3), stem="vd", avg_down=True),
    "se_resnext101_vd_32x4d": dict(blocks=(3, 4, 23, 3), stem="vd", avg_down=True),
    "resnext50_vd_32x4d": dict(blocks=(3, 4, 6, 3), stem="vd", avg_down=True, se_reduction=0),
    "small": dict(blocks=(1, 1, 1), cardinality=8, base_width=4, stage_channels=(64, 128, 256),
                  stage_strides=(1, 2, 2), stem="small", stem_channels=32, in_channels=1, num_classes=10),
}

# Published / independently known counts; the builder (model/se_resnext.cc) must give the same.
EXPECTED_PARAMS = {
    "resnext50_32x4d": 25_028_904,      # torchvision
    "se_resnext50_32x4d": 27_559_896,   # Cadene pretrainedmodels
    "se_resnext101_32x4d": 48_955_416,
    "se_resnext152_32x4d": 66_580_440,
    "small": 148_550,
}


def conv(cin, cout, k, stride=1, groups=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


class SE(nn.Module):
    """Squeeze-and-excitation (Hu et al.): global mean -> 1x1 conv (+bias) -> ReLU -> 1x1 conv (+bias)
    -> sigmoid, scaling the channels. The FCs are 1x1 convs as in timm's SEModule and Cadene's
    SEModule (and so run on oneDNN, not on the generic BLAS nn.Linear uses here)."""

    def __init__(self, channels, reduced):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = torch.sigmoid

    def forward(self, x):  # x (N, C, H, W)
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(F.relu(self.fc1(s), inplace=True))
        return x * self.gate(s)


def downsample(cin, cout, stride, avg_down):
    """The projection shortcut: 1x1/stride conv + BN; `d` variants: 2x2/2 avg pool (ceil, padding not
    counted) then 1x1/1 conv + BN, with an identity in the pool's place when the stride is 1 (timm)."""
    if avg_down:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        return nn.Sequential(pool, conv(cin, cout, 1), nn.BatchNorm2d(cout))
    return nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class Bottleneck(nn.Module):
    """ResNeXt bottleneck (Xie et al.; torchvision/timm): 1x1 -> grouped 3x3 with the stride -> 1x1,
    BN after each conv, SE on the last BN's output, then the residual add and ReLU."""

    def __init__(self, cin, width, cout, stride, groups, se_reduction, avg_down):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv(width, width, 3, stride, groups), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv(width, cout, 1), nn.BatchNorm2d(cout)
        self.se = SE(cout, cout // se_reduction) if se_reduction > 0 else None
        self.downsample = downsample(cin, cout, stride, avg_down) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        if self.se is not None:
            y = self.se(y)
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s, inplace=True)


class SEResNeXt(nn.Module):
    """State_dict names as torchvision's ResNet and timm's ResNet (conv1, bn1, layer1.0.conv2, ...,
    layerN.B.se.fc1, layerN.B.downsample.0, fc); the vd stem is timm's deep stem (conv1.0/.3/.6)."""

    def __init__(self, spec):
        super().__init__()
        c = spec.stem_channels
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(spec.in_channels, c, 7, 2, 3, bias=False)
        elif spec.stem == "vd":
            self.conv1 = nn.Sequential(conv(spec.in_channels, c // 2, 3, 2), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True),
                                       conv(c // 2, c // 2, 3), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True),
                                       conv(c // 2, c, 3))
        elif spec.stem == "small":
            self.conv1 = conv(spec.in_channels, c, 3)
        else:
            raise ValueError(f"unknown stem {spec.stem}")
        self.bn1 = nn.BatchNorm2d(c)
        self.maxpool = nn.Identity() if spec.stem == "small" else nn.MaxPool2d(3, 2, 1)
        cin = c
        for s in range(len(spec.blocks)):
            blocks = []
            for b in range(spec.blocks[s]):
                stride = spec.stride(s) if b == 0 else 1
                blocks.append(Bottleneck(cin, spec.width(s), spec.out_channels(s), stride, spec.cardinality,
                                         spec.se_reduction, spec.avg_down))
                cin = spec.out_channels(s)
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.stages = len(spec.blocks)
        self.fc = nn.Linear(cin, spec.num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(x.mean((2, 3)))


def build(arch):
    if arch not in PRESETS:
        raise SystemExit(f"unknown --arch {arch}; known: {', '.join(PRESETS)}")
    return SEResNeXt(Spec(**PRESETS[arch]))


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ---- measurement helpers -------------------------------------------------------------------


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def busy_cpu_s():
    """CPU time all processes spent since boot (/proc/stat, all CPUs; idle and iowait left out)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Window:
    """Wall time of a measurement and the CPU time other processes took meanwhile."""

    def __enter__(self):
        self.busy0, self.steal0 = busy_cpu_s()
        self.self0 = self_cpu_s()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self.t0
        busy, steal = busy_cpu_s()
        self.self_s = self_cpu_s() - self.self0
        self.other_s = max(0.0, (busy - self.busy0) - self.self_s)
        self.steal_s = steal - self.steal0
        return False


# ---- benchmark -----------------------------------------------------------------------------


def bench_one(args, memory_format):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = build(args.arch)
    spec = Spec(**PRESETS[args.arch])
    x = torch.randn(args.batch, spec.in_channels, args.image, args.image)
    labels = torch.randint(0, spec.num_classes, (args.batch,))
    if memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay,
                          foreach=True)

    # Inference first (eval mode, running statistics), then training; same order as sx_bench.
    model.eval()
    fwd = []
    with torch.no_grad():
        for _ in range(args.warmup):
            model(x)
        with Window() as infer_win:
            for _ in range(args.infer_iters):
                t0 = time.perf_counter()
                model(x)
                fwd.append((time.perf_counter() - t0) * 1e3)

    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    steps = []
    with Window() as train_win:
        for _ in range(args.iters):
            t0 = time.perf_counter()
            loss = step()
            steps.append((time.perf_counter() - t0) * 1e3)

    fwd_med = statistics.median(fwd)
    step_med = statistics.median(steps)
    return {
        "peer": "pytorch",
        "torch_version": torch.__version__,
        "arch": args.arch,
        "params": count_params(model),
        "batch": args.batch,
        "image": args.image,
        "threads": args.threads,
        "warmup": args.warmup,
        "iterations": args.iters,
        "infer_iterations": args.infer_iters,
        "memory_format": memory_format,
        "forward_ms": fwd_med,
        "train_step_ms": step_med,
        "infer_img_per_s": args.batch / (fwd_med / 1e3),
        "train_img_per_s": args.batch / (step_med / 1e3),
        "peak_rss_mb": peak_rss_mb(),
        "loss": float(loss),
        "forward_ms_all": fwd,
        "train_step_ms_all": steps,
        "infer_wall_s": infer_win.wall_s,
        "infer_other_cpu_s": infer_win.other_s,
        "train_wall_s": train_win.wall_s,
        "train_other_cpu_s": train_win.other_s,
        "steal_s": infer_win.steal_s + train_win.steal_s,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }


def bench_best(args):
    """Each memory format in its own process; report per metric the better of the two."""
    runs = []
    for fmt in ("nchw", "channels_last"):
        cmd = [sys.executable, os.path.abspath(__file__), "--arch", args.arch, "--batch", str(args.batch),
               "--image", str(args.image), "--threads", str(args.threads), "--warmup", str(args.warmup),
               "--iters", str(args.iters), "--infer-iters", str(args.infer_iters), "--seed", str(args.seed),
               "--memory-format", fmt, "--json"]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        runs.append(json.loads(out))
    train = min(runs, key=lambda r: r["train_step_ms"])
    infer = min(runs, key=lambda r: r["forward_ms"])
    best = dict(train)
    best["forward_ms"] = infer["forward_ms"]
    best["infer_img_per_s"] = infer["infer_img_per_s"]
    best["forward_ms_all"] = infer["forward_ms_all"]
    best["infer_wall_s"] = infer["infer_wall_s"]
    best["infer_other_cpu_s"] = infer["infer_other_cpu_s"]
    best["memory_format"] = train["memory_format"]          # the format of the reported train step
    best["infer_memory_format"] = infer["memory_format"]
    best["peak_rss_mb"] = min(r["peak_rss_mb"] for r in runs)
    best["by_format"] = {r["memory_format"]: {k: r[k] for k in ("forward_ms", "train_step_ms", "peak_rss_mb")}
                         for r in runs}
    return best


def print_counts(sx_bench=None):
    """Counts of every preset, checked against the published ones and, given sx_bench, against our builder."""
    ok = True
    for arch in PRESETS:
        n = count_params(build(arch))
        marks = []
        want = EXPECTED_PARAMS.get(arch)
        if want is not None:
            marks.append("published ok" if n == want else f"MISMATCH published {want:,}")
            ok &= n == want
        if sx_bench:
            out = subprocess.run([sx_bench, "model", "--arch", arch, "--params"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            sx = int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None
            marks.append("sx_bench ok" if sx == n else f"MISMATCH sx_bench {out.stdout.strip()}")
            ok &= sx == n
        print(f"{arch:26s} {n:>12,}  {', '.join(marks)}")
    return 0 if ok else 1


def print_human(r):
    print(f"pytorch {r['torch_version']}  {r['arch']}  params {r['params']:,}  batch {r['batch']}  "
          f"image {r['image']}  threads {r['threads']}  format {r['memory_format']}")
    print(f"  forward (eval)     {r['forward_ms']:10.2f} ms   {r['infer_img_per_s']:9.1f} img/s")
    print(f"  train step         {r['train_step_ms']:10.2f} ms   {r['train_img_per_s']:9.1f} img/s")
    print(f"  peak RSS           {r['peak_rss_mb']:10.1f} MB")
    print(f"  other CPU          {r['infer_other_cpu_s'] + r['train_other_cpu_s']:10.2f} s")
    if "by_format" in r:
        for fmt, v in r["by_format"].items():
            print(f"  {fmt:14s} fwd {v['forward_ms']:9.2f} ms  step {v['train_step_ms']:9.2f} ms  "
                  f"rss {v['peak_rss_mb']:8.1f} MB")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="se_resnext50_32x4d", help="preset name (as in model/se_resnext.h)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--image", type=int, default=224, help="square input size")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before each measurement")
    p.add_argument("--iters", type=int, default=10, help="timed train steps")
    p.add_argument("--infer-iters", type=int, default=None, help="timed forwards (default: --iters)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--memory-format", choices=("best", "nchw", "channels_last"), default="best",
                   help="best = run both, each in its own process, and report the better")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--params", action="store_true", help="print the parameter count of --arch and exit")
    p.add_argument("--counts", action="store_true", help="print and check all presets' parameter counts")
    p.add_argument("--sx-bench", default=None, help="with --counts: also compare with `sx_bench model --params`")
    args = p.parse_args()
    if args.infer_iters is None:
        args.infer_iters = args.iters

    if args.counts:
        return print_counts(args.sx_bench)
    if args.params:
        print(count_params(build(args.arch)))
        return 0
    r = bench_best(args) if args.memory_format == "best" else bench_one(args, args.memory_format)
    if args.json:
        print(json.dumps(r))
    else:
        print_human(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
