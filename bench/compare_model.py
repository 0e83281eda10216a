#!/usr/bin/python3
"""Side-by-side model benchmark: `sx_bench model` vs PyTorch (bench/torch_se_resnext.py), same run.

Cases (both 2 threads):
  se50   se_resnext50_32x4d, batch 16, 224x224   targets: train step <= 0.8x PyTorch's,
                                                   inference img/s >= 1.25x, peak RSS <= PyTorch's
  small  small, batch 128, 28x28, 10 classes     target:  train step <= 0.5x PyTorch's

Each round runs every peer once, each in its own process, the order alternating between rounds
(sx, nchw, cl / cl, nchw, sx / ...); PyTorch runs as two peers, NCHW and channels_last, and the
better format is reported per metric. Every child runs under
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 (BENCHMARKING.md).

Noise: each child reports the CPU time other processes took during its timed loops (/proc/stat
busy minus its own getrusage); the whole child process is also checked here (/proc/stat minus the
child's rusage from wait4). A run is "noisy" when others took more than --noise-threshold of one
CPU during its timed loops; medians use the clean runs when there are any (all runs otherwise,
marked). Prints a table and, last, one JSON object (also written to --out).

  /usr/bin/python3 bench/compare_model.py                      # full: 3 rounds, ~15 min
  /usr/bin/python3 bench/compare_model.py --quick              # ~3-5 min
  /usr/bin/python3 bench/compare_model.py --cases small --peers torch   # PyTorch side only
  /usr/bin/python3 bench/compare_model.py --max-isa avx2       # both peers capped to AVX2

--max-isa avx2 caps both peers to AVX2 on an AVX-512 machine: oneDNN through ONEDNN_MAX_CPU_ISA (both
use the system oneDNN), PyTorch's own kernels through ATEN_CPU_CAPABILITY, ours through
`sx_bench model --isa`. The caches stay the machine's, so it indicates, not replaces, a run on an
AVX2 CPU. The JSON names the CPU model and the cap.
"""
import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"

CASES = {
    "se50": dict(arch="se_resnext50_32x4d", batch=16, image=224, iters=10, warmup=2, quick_iters=3, quick_warmup=1,
                 targets={"step_ratio_max": 0.8, "infer_ratio_min": 1.25, "rss_ratio_max": 1.0}),
    "small": dict(arch="small", batch=128, image=28, iters=20, warmup=3, quick_iters=8, quick_warmup=2,
                  targets={"step_ratio_max": 0.5}),
}
TORCH_FORMATS = ("nchw", "channels_last")


def busy_cpu_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def run_child(cmd, env, timeout):
    """Runs cmd, returns (parsed JSON or None, error text, wall s, other-process CPU s over the whole child)."""
    busy0, children0, t0 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, f"timed out after {timeout} s", time.perf_counter() - t0, 0.0
    wall = time.perf_counter() - t0
    # communicate() reaped the child: its CPU time (all threads) is the growth of RUSAGE_CHILDREN.
    other = max(0.0, busy_cpu_s() - busy0 - (children_cpu_s() - children0))
    if p.returncode != 0:
        return None, (err.strip() or out.strip())[-2000:], wall, other
    try:
        return json.loads(out.strip().splitlines()[-1]), "", wall, other
    except (ValueError, IndexError):
        return None, "no JSON in output: " + out[-500:], wall, other


def cpu_model():
    with open("/proc/cpuinfo") as f:
        info = f.read()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    isa = "avx512" if " avx512f " in info else "avx2" if " avx2 " in info else "generic"
    return f"{name}, {isa}"


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def peer_cmd(peer, case, args):
    iters = case["quick_iters"] if args.quick else case["iters"]
    warmup = case["quick_warmup"] if args.quick else case["warmup"]
    if args.iters:
        iters = args.iters
    if args.warmup is not None:
        warmup = args.warmup
    common = ["--arch", case["arch"], "--batch", str(case["batch"]), "--image", str(case["image"]),
              "--threads", str(args.threads), "--warmup", str(warmup), "--iters", str(iters), "--json"]
    if peer == "sx":
        return [args.sx_bench, "model", *common] + (["--isa", args.max_isa] if args.max_isa else [])
    return [sys.executable, os.path.join(HERE, "torch_se_resnext.py"), *common, "--memory-format", peer]


def noise_of(r, threads):
    """Fraction of one CPU that other processes used during the child's timed loops."""
    wall = r["infer_wall_s"] + r["train_wall_s"]
    return (r["infer_other_cpu_s"] + r["train_other_cpu_s"]) / wall if wall > 0 else 0.0


def summarize(runs, threshold):
    """Median of per-run medians, over the clean runs when there are any."""
    ok = [r for r in runs if r.get("result")]
    clean = [r for r in ok if r["noise"] <= threshold]
    use = clean or ok
    if not use:
        return None
    med = lambda key: statistics.median(r["result"][key] for r in use)  # noqa: E731
    return {
        "runs": len(ok), "clean_runs": len(clean), "used_noisy": not clean,
        "forward_ms": med("forward_ms"), "train_step_ms": med("train_step_ms"),
        "infer_img_per_s": med("infer_img_per_s"), "peak_rss_mb": med("peak_rss_mb"),
        "params": use[0]["result"]["params"],
    }


def compare_case(name, case, summary, threshold):
    sx = summary.get("sx")
    torch_by_fmt = {f: summary[f] for f in TORCH_FORMATS if summary.get(f)}
    out = {"case": name, "arch": case["arch"], "batch": case["batch"], "image": case["image"],
           "sx": sx, "torch": torch_by_fmt}
    if torch_by_fmt:
        train_fmt = min(torch_by_fmt, key=lambda f: torch_by_fmt[f]["train_step_ms"])
        infer_fmt = max(torch_by_fmt, key=lambda f: torch_by_fmt[f]["infer_img_per_s"])
        best = {"train_step_ms": torch_by_fmt[train_fmt]["train_step_ms"], "train_format": train_fmt,
                "forward_ms": torch_by_fmt[infer_fmt]["forward_ms"],
                "infer_img_per_s": torch_by_fmt[infer_fmt]["infer_img_per_s"], "infer_format": infer_fmt,
                # the stricter comparison for us: the leaner of the two formats
                "peak_rss_mb": min(v["peak_rss_mb"] for v in torch_by_fmt.values())}
        out["torch_best"] = best
        if sx:
            ratios = {"step_ratio": sx["train_step_ms"] / best["train_step_ms"],
                      "infer_ratio": sx["infer_img_per_s"] / best["infer_img_per_s"],
                      "rss_ratio": sx["peak_rss_mb"] / best["peak_rss_mb"]}
            t = case["targets"]
            checks = {}
            if "step_ratio_max" in t:
                checks["step"] = ratios["step_ratio"] <= t["step_ratio_max"]
            if "infer_ratio_min" in t:
                checks["infer"] = ratios["infer_ratio"] >= t["infer_ratio_min"]
            if "rss_ratio_max" in t:
                checks["rss"] = ratios["rss_ratio"] <= t["rss_ratio_max"]
            out.update(ratios=ratios, targets=t, meets=checks, params_match=sx["params"] == best_params(torch_by_fmt))
    return out


def best_params(torch_by_fmt):
    return next(iter(torch_by_fmt.values()))["params"]


def print_runs_table(name, runs):
    print(f"\n== {name}: individual runs ==")
    print(f"{'round':>5} {'peer':14} {'fwd ms':>9} {'step ms':>9} {'img/s':>8} {'rss MB':>8} "
          f"{'others%':>8} {'others s':>9} {'note'}")
    for r in runs:
        if not r.get("result"):
            print(f"{r['round']:>5} {r['peer']:14} FAILED: {r['error'].splitlines()[-1] if r['error'] else '?'}")
            continue
        x = r["result"]
        note = "NOISY" if r["noisy"] else ""
        print(f"{r['round']:>5} {r['peer']:14} {x['forward_ms']:9.1f} {x['train_step_ms']:9.1f} "
              f"{x['infer_img_per_s']:8.1f} {x['peak_rss_mb']:8.0f} {100 * r['noise']:7.1f}% "
              f"{r['process_other_cpu_s']:9.2f} {note}")


def print_summary(cmp):
    print(f"\n== {cmp['case']} ({cmp['arch']}, batch {cmp['batch']}, {cmp['image']}px): medians ==")
    print(f"{'peer':22} {'fwd ms':>9} {'infer img/s':>12} {'step ms':>9} {'peak RSS MB':>12} {'runs (clean)':>13}")
    rows = [("sxtrain", cmp["sx"])] + [(f"pytorch {f}", v) for f, v in cmp["torch"].items()]
    for label, v in rows:
        if v:
            flag = " *noisy only" if v["used_noisy"] else ""
            print(f"{label:22} {v['forward_ms']:9.1f} {v['infer_img_per_s']:12.1f} {v['train_step_ms']:9.1f} "
                  f"{v['peak_rss_mb']:12.0f} {v['runs']:>7} ({v['clean_runs']}){flag}")
    if "ratios" in cmp:
        r, t, m = cmp["ratios"], cmp["targets"], cmp["meets"]
        best = cmp["torch_best"]
        def verdict(key, op, limit):
            if key not in m:
                return "   (no target)"
            return f"   target {op} {t[limit]}  " + ("PASS" if m[key] else "MISS")
        print(f"  {'train step ms':13} sx / pytorch {best['train_format']:13} = {r['step_ratio']:6.3f}"
              + verdict("step", "<=", "step_ratio_max"))
        print(f"  {'infer img/s':13} sx / pytorch {best['infer_format']:13} = {r['infer_ratio']:6.3f}"
              + verdict("infer", ">=", "infer_ratio_min"))
        print(f"  {'peak RSS':13} sx / pytorch {'(leaner)':13} = {r['rss_ratio']:6.3f}"
              + verdict("rss", "<=", "rss_ratio_max"))
        if not cmp["params_match"]:
            print("  WARNING: parameter counts differ between the peers")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sx-bench", default=os.path.join(REPO, "build", "bin", "sx_bench"), help="sx_bench binary")
    p.add_argument("--cases", default="se50,small", help="comma-separated: " + ",".join(CASES))
    p.add_argument("--peers", default="sx,torch", help="sx, torch, or both (sx,torch)")
    p.add_argument("--rounds", type=int, default=None, help="runs of each peer (default 3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer iterations and rounds (a few minutes)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per run (overrides the case)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations per run (overrides the case)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--noise-threshold", type=float, default=0.10,
                   help="a run is noisy when others used more than this fraction of one CPU (default 0.10)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per child process")
    p.add_argument("--out", default=None, help="also write the final JSON here")
    p.add_argument("--max-isa", choices=["avx2"], default=None,
                   help="cap both peers to this instruction-set level (see above)")
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    peers = []
    for peer in args.peers.split(","):
        peers += ["sx"] if peer == "sx" else list(TORCH_FORMATS) if peer == "torch" else []
    if "sx" in peers and not os.access(args.sx_bench, os.X_OK):
        sys.exit(f"no sx_bench at {args.sx_bench}; HINT: build it (cmake --build build --target sx_bench) "
                 f"or pass --sx-bench")

    env = dict(os.environ, GLIBC_TUNABLES=TUNABLES)
    if args.max_isa:
        env.update(ONEDNN_MAX_CPU_ISA=args.max_isa.upper(), ATEN_CPU_CAPABILITY=args.max_isa)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    results = []
    for name in args.cases.split(","):
        case = CASES[name]
        runs = []
        for rnd in range(rounds):
            order = peers if rnd % 2 == 0 else list(reversed(peers))
            for peer in order:
                cmd = peer_cmd(peer, case, args)
                print(f"[{name} round {rnd + 1}/{rounds}] {peer}: {' '.join(cmd)}", file=sys.stderr, flush=True)
                res, err, wall, other = run_child(cmd, env, args.timeout)
                run = {"round": rnd + 1, "peer": peer, "cmd": " ".join(cmd), "result": res, "error": err,
                       "wall_s": wall, "process_other_cpu_s": other}
                if res:
                    run["noise"] = noise_of(res, args.threads)
                    run["noisy"] = run["noise"] > args.noise_threshold
                else:
                    print(f"  failed: {err}", file=sys.stderr)
                runs.append(run)
        print_runs_table(name, runs)
        summary = {peer: summarize([r for r in runs if r["peer"] == peer], args.noise_threshold) for peer in peers}
        cmp = compare_case(name, case, summary, args.noise_threshold)
        cmp["runs"] = [{k: v for k, v in r.items() if k != "result"} | (
            {k: r["result"][k] for k in ("forward_ms", "train_step_ms", "infer_img_per_s", "peak_rss_mb",
                                         "infer_other_cpu_s", "train_other_cpu_s")} if r["result"] else {})
            for r in runs]
        print_summary(cmp)
        results.append(cmp)

    final = {"started": started, "command": " ".join([sys.executable] + sys.argv), "cpu": cpu_model(),
             "max_isa": args.max_isa, "rounds": rounds,
             "threads": args.threads, "quick": args.quick, "glibc_tunables": TUNABLES,
             "noise_threshold": args.noise_threshold, "cases": results}
    text = json.dumps(final)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
