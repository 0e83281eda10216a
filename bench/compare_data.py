#!/usr/bin/python3
"""Side by side: `sx_bench data` vs torchvision ImageFolder + RandomResizedCrop + RandomHorizontalFlip +
ToTensor + Normalize, on the SAME JPEG bytes (extracted from the sx_prep shards into an image folder).
The figure compared is images per CPU-second of the process (= per fully busy thread), which is robust
to the other load on a shared machine; wall images/s is printed too.

usage: bench/compare_data.py --dataset DIR [--sx-bench build/bin/sx_bench] [--batch 32] [--epochs 3]
"""
import argparse, json, os, subprocess, sys, tempfile, time

import h5py
import torch
import torchvision
from torchvision import transforms as T


def extract(dataset, out):
    """Writes every sample's JPEG bytes as out/<label>/<index>.jpg (once)."""
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


def torchvision_rate(folder, batch, epochs, image):
    torch.set_num_threads(1)  # one thread, like one reader thread
    tf = T.Compose([T.RandomResizedCrop(image), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(folder, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
    rates, per_cpu = [], []
    for epoch in range(epochs + 1):  # the first epoch warms the page cache
        w0, c0, n = time.perf_counter(), time.process_time(), 0
        for x, y in loader:
            n += x.shape[0]
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if epoch:
            rates.append(n / w)
            per_cpu.append(n / c)
    rates.sort(); per_cpu.sort()
    return rates[len(rates) // 2], per_cpu[len(per_cpu) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dataset', required=True)
    ap.add_argument('--sx-bench', default='build/bin/sx_bench')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--image', type=int, default=224)
    ap.add_argument('--folder', default=None, help='where to extract the JPEGs (default: a temp dir)')
    a = ap.parse_args()
    folder = a.folder or os.path.join(tempfile.gettempdir(), 'sx_compare_data_' + os.path.basename(os.path.abspath(a.dataset)))
    n = extract(a.dataset, folder)
    ours = json.loads(subprocess.check_output(
        [a.sx_bench, 'data', '--dataset', a.dataset, '--threads', '1', '--batch', str(a.batch), '--image',
         str(a.image), '--repeats', str(a.epochs), '--json']).decode().strip().splitlines()[-1])
    tv_rate, tv_per_cpu = torchvision_rate(folder, a.batch, a.epochs, a.image)
    print('%d JPEG samples, batch %d, %dx%d, one thread each' % (n, a.batch, a.image, a.image))
    print('%-12s %14s %20s' % ('', 'images/s wall', 'images per CPU-s'))
    print('%-12s %14.1f %20.1f' % ('torchvision', tv_rate, tv_per_cpu))
    print('%-12s %14.1f %20.1f' % ('sxtrain', ours['images_per_s'], ours['images_per_cpu_s']))
    print('ratio (per CPU-second): %.2fx   (target >= 2x)' % (ours['images_per_cpu_s'] / tv_per_cpu))
    print('sxtrain CPU ms per image: %.3f' % ours['cpu_ms_per_image'])


if __name__ == '__main__':
    main()
