#!/usr/bin/python3
"""The torchvision peer of `sx_bench data`: ImageFolder + RandomResizedCrop + RandomHorizontalFlip +
ToTensor + Normalize through a PyTorch DataLoader, timed per epoch with its CPU cost.

Two uses:
  torchvision only, one JSON line (what bench/run_data_bench.py calls, once per round):
    compare_data.py --folder DIR/train --threads 2 [--batch 32] [--epochs 1] [--json]
  quick side by side on the SAME JPEG bytes (the sx_prep shards extracted into an image folder):
    compare_data.py --dataset SHARDS [--sx-bench build/bin/sx_bench] [--threads 1] [--epochs 3]

Threads: T = 1 runs in the main process (num_workers=0, its best per-CPU setting); T ≥ 2 uses
T persistent worker processes (num_workers=T), each with torch.set_num_threads(1) as DataLoader sets.
`--workers N` overrides. CPU = this process + its workers (/proc/<pid>/stat), so images per
CPU-second counts the main process's unpickling too. other_cpu_s = /proc/stat busy − that CPU:
the load other processes put on the machine meanwhile (see ../shared/BENCHMARKING.md).
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

import torch
import torchvision
from torchvision import transforms as T

HZ = os.sysconf('SC_CLK_TCK')


def extract(dataset, out):
    """Writes every sample's JPEG bytes as out/<label>/<index>.jpg (once)."""
    import h5py
    manifest = json.load(open(os.path.join(dataset, 'manifest.json')))
    if manifest['encoding'] != 'jpeg':
        sys.exit('compare_data.py needs a dataset made with --encode jpeg')
    marker = os.path.join(out, '.done')
    if os.path.exists(marker):
        return manifest['num_samples']
    for shard in manifest['shards']:
        with h5py.File(os.path.join(dataset, shard['file']), 'r') as f:
            data, offsets, labels = f['data'][:], f['offsets'][:], f['labels'][:]
            for i in range(len(labels)):
                d = os.path.join(out, '%05d' % labels[i])
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, '%08d.jpg' % (shard['first_index'] + i)), 'wb') as o:
                    o.write(data[offsets[i]:offsets[i + 1]].tobytes())
    open(marker, 'w').close()
    return manifest['num_samples']


def busy_s():
    """Busy CPU seconds of the whole machine since boot (/proc/stat 'cpu' line, without steal)."""
    f = open('/proc/stat').readline().split()
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in f[1:8])
    return (user + nice + system + irq + softirq) / HZ


def pid_cpu_s(pid):
    """utime + stime of one process (all its threads), 0 once it is gone."""
    try:
        f = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
        return (int(f[11]) + int(f[12])) / HZ  # fields 14, 15 of proc(5), counted after "pid (comm)"
    except OSError:
        return 0.0


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class EpochSampler(torch.utils.data.Sampler):
    """A fresh seeded permutation per epoch, truncated to `limit` (a short warm-up epoch, then full ones)."""

    def __init__(self, n, seed):
        self.n, self.limit, self.seed, self.epoch = n, n, seed, 0

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1000003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[:self.limit].tolist())

    def __len__(self):
        return self.limit


def torchvision_measure(folder, threads, batch=32, image=224, epochs=1, workers=None, seed=1):
    torch.set_num_threads(1)  # the main process does no tensor math worth threads; workers get 1 each
    workers = (0 if threads == 1 else threads) if workers is None else workers
    tf = T.Compose([T.RandomResizedCrop(image), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(folder, transform=tf)
    sampler = EpochSampler(len(ds), seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    res = dict(peer='torchvision', folder=folder, threads=threads, workers=workers, batch=batch, image=image,
               samples=len(ds), wall_s=[], self_cpu_s=[], other_cpu_s=[], images=[])
    for epoch in range(epochs + 1):
        # Epoch 0 warms up: starts the workers, the page cache and PIL, on 4 batches per worker.
        sampler.epoch, sampler.limit = epoch, (len(ds) if epoch else batch * 4 * max(1, workers))
        pids = [w.pid for w in loader._iterator._workers] if loader._iterator is not None else []
        b0, c0, w0 = busy_s(), self_cpu_s() + sum(pid_cpu_s(p) for p in pids), time.perf_counter()
        n = 0
        for x, y in loader:
            n += x.shape[0]
        wall = time.perf_counter() - w0
        pids = [w.pid for w in loader._iterator._workers] if workers else []
        cpu = self_cpu_s() + sum(pid_cpu_s(p) for p in pids) - c0
        other = max(0.0, busy_s() - b0 - cpu)
        if epoch:
            res['wall_s'].append(wall)
            res['self_cpu_s'].append(cpu)
            res['other_cpu_s'].append(other)
            res['images'].append(n)
    med = lambda v: sorted(v)[len(v) // 2]
    res['images_per_s'] = med([n / w for n, w in zip(res['images'], res['wall_s'])])
    res['images_per_cpu_s'] = med([n / c for n, c in zip(res['images'], res['self_cpu_s'])])
    res['cpu_ms_per_image'] = med([1e3 * c / n for n, c in zip(res['images'], res['self_cpu_s'])])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--folder', default=None, help='ImageFolder root (alone: torchvision only)')
    ap.add_argument('--dataset', default=None, help='sx_prep --encode jpeg shards: extract them and compare')
    ap.add_argument('--sx-bench', default='build/bin/sx_bench')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--workers', type=int, default=None, help='DataLoader num_workers (default: 0 for 1 thread, else T)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--epochs', type=int, default=3, help='timed epochs (after a short warm-up)')
    ap.add_argument('--image', type=int, default=224)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    if not a.dataset:
        if not a.folder:
            ap.error('--folder or --dataset is required')
        r = torchvision_measure(a.folder, a.threads, a.batch, a.image, a.epochs, a.workers, a.seed)
        if a.json:
            print(json.dumps(r))
        else:
            print('torchvision %s, %d threads (%d workers): %.1f images/s, %.1f images per CPU-s, %.3f CPU ms/image, '
                  'other CPU %s s' % (a.folder, a.threads, r['workers'], r['images_per_s'], r['images_per_cpu_s'],
                                      r['cpu_ms_per_image'], ['%.1f' % o for o in r['other_cpu_s']]))
        return

    folder = a.folder or os.path.join(tempfile.gettempdir(), 'sx_compare_data_' + os.path.basename(os.path.abspath(a.dataset)))
    n = extract(a.dataset, folder)
    ours = json.loads(subprocess.check_output(
        [a.sx_bench, 'data', '--dataset', a.dataset, '--threads', str(a.threads), '--batch', str(a.batch), '--image',
         str(a.image), '--repeats', str(a.epochs), '--json']).decode().strip().splitlines()[-1])
    tv = torchvision_measure(folder, a.threads, a.batch, a.image, a.epochs, a.workers, a.seed)
    print('%d JPEG samples, batch %d, %dx%d, %d threads each' % (n, a.batch, a.image, a.image, a.threads))
    print('%-12s %14s %20s %16s' % ('', 'images/s wall', 'images per CPU-s', 'other CPU s'))
    print('%-12s %14.1f %20.1f %16s' % ('torchvision', tv['images_per_s'], tv['images_per_cpu_s'],
                                         ' '.join('%.1f' % o for o in tv['other_cpu_s'])))
    print('%-12s %14.1f %20.1f %16s' % ('sxtrain', ours['images_per_s'], ours['images_per_cpu_s'],
                                         ' '.join('%.1f' % o for o in ours['other_cpu_s'])))
    print('ratio (per CPU-second): %.2fx   (target >= 2x)' % (ours['images_per_cpu_s'] / tv['images_per_cpu_s']))
    print('sxtrain CPU ms per image: %.3f' % ours['cpu_ms_per_image'])


if __name__ == '__main__':
    main()
