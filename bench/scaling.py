#!/usr/bin/env python3
"""Scaling and overlap benchmark: `sx_bench scaling` under mpirun at np=1 and np=2 (one thread per
rank, per-rank batch fixed), with overlap on and off, in the same run. Prints the scaling efficiency
img/s(np=2) / (2 · img/s(np=1)) (target >= 0.9) and what overlap hides, then one JSON line.

  /usr/bin/python3 bench/scaling.py                                   # small, batch 128 per rank
  /usr/bin/python3 bench/scaling.py --arch se_resnext50_32x4d --batch 16 --image 224 --iters 4 --warmup 1
"""
import argparse, json, os, subprocess, sys

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def run(sx_bench, np, args, overlap):
    cmd = ["mpirun", "--bind-to", "core", "--mca", "mpi_yield_when_idle", "1", "-np", str(np)]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    cmd += [sx_bench, "scaling", "--arch", args.arch, "--batch", str(args.batch), "--image", str(args.image),
            "--threads", "1", "--warmup", str(args.warmup), "--iters", str(args.iters), "--json"]
    if not overlap:
        cmd.append("--no-overlap")
    env = dict(os.environ, GLIBC_TUNABLES=TUNABLES)
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  np={np} overlap={'on ' if overlap else 'off'}  step {result['step_ms']:8.1f} ms  "
          f"{result['images_per_s']:8.1f} img/s", flush=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sx-bench", default="build/bin/sx_bench")
    ap.add_argument("--arch", default="small")
    ap.add_argument("--batch", type=int, default=128, help="per rank")
    ap.add_argument("--image", type=int, default=28)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    runs = {"np1": [], "np2": [], "np2_no_overlap": []}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        runs["np1"].append(run(args.sx_bench, 1, args, True))
        runs["np2"].append(run(args.sx_bench, 2, args, True))
        runs["np2_no_overlap"].append(run(args.sx_bench, 2, args, False))
    med = lambda k, f: sorted(x[f] for x in runs[k])[len(runs[k]) // 2]
    eff = med("np2", "images_per_s") / (2 * med("np1", "images_per_s"))
    hidden = med("np2_no_overlap", "step_ms") - med("np2", "step_ms")
    print(f"scaling efficiency np=1 -> np=2: {eff:.3f} (target >= 0.9: {'met' if eff >= 0.9 else 'MISSED'})")
    print(f"overlap: step {med('np2', 'step_ms'):.1f} ms on vs {med('np2_no_overlap', 'step_ms'):.1f} ms off "
          f"({hidden:.1f} ms hidden)")
    print(json.dumps({"arch": args.arch, "batch_per_rank": args.batch, "image": args.image, "efficiency": eff,
                      "overlap_hidden_ms": hidden, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
