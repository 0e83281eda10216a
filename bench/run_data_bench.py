#!/usr/bin/python3
"""The data-plane benchmark on real photographs, all in one run (bench/README.md, `sx_bench data`):

  1. bench/make_photos.py: N ImageNet-like 500x375 JPEGs cut from Debian's wallpaper photographs (once);
  2. sx_prep throughput on them, --threads 1 and 2, for --encode jpeg and --encode raw (--short-side 256);
  3. the reader (`sx_bench data`, 224² train augmentation) on both shard sets, and torchvision
     (bench/compare_data.py: ImageFolder + RandomResizedCrop + flip + ToTensor + Normalize, DataLoader)
     on the original JPEGs and on the shards' JPEG bytes, same threads, interleaved over --rounds;
  4. the reader's share of one core while feeding the CPU model at its measured rate
     (`sx_bench model --arch se_resnext50_32x4d --batch 16 --threads 2`, or --model-img-per-s X).

Per-thread figures: images per CPU-second of the measured processes (robust on a loaded machine) and
wall images/s ÷ threads. The CPU other processes took during each measurement is recorded.

    /usr/bin/python3 bench/run_data_bench.py --build build --out /tmp/data_bench.json
"""
import argparse, datetime, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_data  # noqa: E402  (extract, busy_s)

PY = '/usr/bin/python3'


def med(v):
    v = sorted(v)
    n = len(v)
    return 0.0 if not n else v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def run_timed(cmd, env=None):
    """Runs cmd; returns (stdout, wall s, CPU s of the child tree, CPU s other processes took)."""
    b0, t0 = compare_data.busy_s(), time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit('failed (%d): %s' % (p.returncode, ' '.join(cmd)))
    cpu = ru.ru_utime + ru.ru_stime
    return out.decode(), wall, cpu, max(0.0, compare_data.busy_s() - b0 - cpu)


def prep(a, bin_dir, photos, encode, threads):
    out = os.path.join(a.work, 'shards_' + encode)
    cmd = [os.path.join(bin_dir, 'sx_prep'), '--format', 'list', '--list', os.path.join(photos, 'train_list.txt'),
           '--root', photos, '--out', out, '--short-side', '256', '--encode', encode, '--threads', str(threads),
           '--no-progress']
    _, wall, cpu, other = run_timed(cmd)
    n = a.count
    return dict(encode=encode, threads=threads, images=n, wall_s=wall, cpu_s=cpu, other_cpu_s=other,
                images_per_s=n / wall, images_per_s_per_thread=n / wall / threads, images_per_cpu_s=n / cpu,
                cpu_ms_per_image=1e3 * cpu / n, other_cores=other / wall, command=' '.join(cmd))


def model_rate(a, bin_dir):
    env = dict(os.environ, GLIBC_TUNABLES='glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736')
    cmd = [os.path.join(bin_dir, 'sx_bench'), 'model', '--arch', 'se_resnext50_32x4d', '--batch', '16', '--image',
           '224', '--threads', '2', '--only', 'train', '--warmup', '1', '--iters', str(a.model_iters), '--json']
    out, wall, _, other = run_timed(cmd, env)
    j = json.loads(out.strip().splitlines()[-1])
    return dict(img_per_s=16 / (j['train_step_ms'] / 1e3), train_step_ms=j['train_step_ms'],
                train_other_cpu_s=j.get('train_other_cpu_s'), train_wall_s=j.get('train_wall_s'),
                command=' '.join(cmd))


def reader_case(a, bin_dir, peer, src, threads):
    if peer == 'sx':
        cmd = [os.path.join(bin_dir, 'sx_bench'), 'data', '--manifest',
               os.path.join(a.work, 'shards_' + src, 'manifest.json'), '--threads', str(threads), '--batch',
               str(a.batch), '--repeats', str(a.epochs), '--json']
    else:
        folder = os.path.join(a.work, 'photos', 'train') if src == 'orig' else os.path.join(a.work, 'tv_256')
        cmd = [PY, os.path.join(HERE, 'compare_data.py'), '--folder', folder, '--threads', str(threads), '--batch',
               str(a.batch), '--epochs', str(a.epochs), '--json']
    out, _, _, _ = run_timed(cmd)
    j = json.loads(out.strip().splitlines()[-1])
    wall, other = sum(j['wall_s']), sum(j['other_cpu_s'])
    return dict(images_per_s=j['images_per_s'], images_per_cpu_s=j['images_per_cpu_s'],
                cpu_ms_per_image=j['cpu_ms_per_image'], other_cores=other / wall, wall_s=wall)


LABEL = {('sx', 'jpeg'): 'sx reader, jpeg shards', ('sx', 'raw'): 'sx reader, raw shards',
         ('tv', '256'): 'torchvision, shard JPEGs', ('tv', 'orig'): 'torchvision, 500x375 JPEGs'}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--build', default='build', help='build dir with bin/sx_prep and bin/sx_bench')
    ap.add_argument('--work', default='/tmp/sx_data_bench', help='photos, shards and extracted JPEGs go here')
    ap.add_argument('--count', type=int, default=3000, help='photos to cut')
    ap.add_argument('--threads', default='1,2')
    ap.add_argument('--rounds', type=int, default=3, help='interleaved rounds of the reader measurements')
    ap.add_argument('--epochs', type=int, default=1, help='timed epochs per reader measurement (after a warm-up)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--model-img-per-s', type=float, default=None, help='skip measuring the model; use this rate')
    ap.add_argument('--model-iters', type=int, default=3)
    ap.add_argument('--noise-threshold', type=float, default=0.1, help='other processes\' CPU, in cores, above which a run is NOISY')
    ap.add_argument('--out', default=None, help='also write the JSON here')
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(',')]
    bin_dir = os.path.join(a.build, 'bin')
    photos = os.path.join(a.work, 'photos')
    started = time.time()

    subprocess.check_call([PY, os.path.join(HERE, 'make_photos.py'), '--count', str(a.count), '--out', photos])

    print('== sx_prep (--short-side 256), %d photos' % a.count, flush=True)
    preps = []
    for encode in ('jpeg', 'raw'):
        for t in threads:
            preps.append(prep(a, bin_dir, photos, encode, t))
            p = preps[-1]
            print('  %-4s %dT: %7.1f img/s wall, %6.1f per thread, %6.1f per CPU-s, other CPU %.2f cores'
                  % (encode, t, p['images_per_s'], p['images_per_s_per_thread'], p['images_per_cpu_s'],
                     p['other_cores']), flush=True)
    compare_data.extract(os.path.join(a.work, 'shards_jpeg'), os.path.join(a.work, 'tv_256'))

    if a.model_img_per_s:
        model = dict(img_per_s=a.model_img_per_s, command='--model-img-per-s %g' % a.model_img_per_s)
    else:
        print('== model rate', flush=True)
        model = model_rate(a, bin_dir)
    print('  model: %.2f img/s (%s)' % (model['img_per_s'], model['command']), flush=True)

    print('== reader, %d rounds' % a.rounds, flush=True)
    cases = [(p, s, t) for t in threads for (p, s) in (('sx', 'jpeg'), ('tv', '256'), ('sx', 'raw'), ('tv', 'orig'))]
    runs = {c: [] for c in cases}
    for r in range(a.rounds):
        for c in (cases if r % 2 == 0 else cases[::-1]):  # alternate the order between rounds
            runs[c].append(reader_case(a, bin_dir, *c))
            x = runs[c][-1]
            print('  round %d %-28s %dT: %7.1f img/s, %7.1f per CPU-s, other CPU %.2f cores'
                  % (r, LABEL[c[:2]], c[2], x['images_per_s'], x['images_per_cpu_s'], x['other_cores']), flush=True)

    reader = {}
    for c, rs in runs.items():
        clean = [x for x in rs if x['other_cores'] <= a.noise_threshold]
        use = clean or rs
        reader['%s/%s/%dT' % c] = dict(
            label=LABEL[c[:2]], threads=c[2], images_per_s=med([x['images_per_s'] for x in use]),
            images_per_s_per_thread=med([x['images_per_s'] for x in use]) / c[2],
            images_per_cpu_s=med([x['images_per_cpu_s'] for x in use]),
            cpu_ms_per_image=med([x['cpu_ms_per_image'] for x in use]),
            other_cores=med([x['other_cores'] for x in rs]), clean_runs=len(clean), runs=rs)

    ratios, feed = [], []
    for t in threads:
        for ours in ('jpeg', 'raw'):
            for theirs in ('256', 'orig'):
                o, v = reader['sx/%s/%dT' % (ours, t)], reader['tv/%s/%dT' % (theirs, t)]
                ratios.append(dict(threads=t, ours=o['label'], theirs=v['label'],
                                   per_thread_wall=o['images_per_s'] / v['images_per_s'],
                                   per_cpu_s=o['images_per_cpu_s'] / v['images_per_cpu_s']))
        for ours in ('jpeg', 'raw'):
            o = reader['sx/%s/%dT' % (ours, t)]
            feed.append(dict(threads=t, shards=ours, cpu_ms_per_image=o['cpu_ms_per_image'],
                             model_img_per_s=model['img_per_s'],
                             share_of_one_core=o['cpu_ms_per_image'] / 1e3 * model['img_per_s'],
                             max_model_img_per_s_at_10pct=0.1 / (o['cpu_ms_per_image'] / 1e3)))
    headline = [r for r in ratios if r['ours'] == LABEL[('sx', 'jpeg')] and r['theirs'] == LABEL[('tv', '256')]]
    targets = dict(
        ratio_per_cpu_s_ge_2=all(r['per_cpu_s'] >= 2 for r in headline),
        ratio_per_thread_wall_ge_2=all(r['per_thread_wall'] >= 2 for r in headline),
        reader_share_le_10pct=all(f['share_of_one_core'] <= 0.10 for f in feed if f['shards'] == 'jpeg'))

    print('\n== summary (medians; per-CPU-s figures are the robust ones on a loaded machine)')
    print('%-30s %3s %10s %12s %12s %10s %8s' % ('', 'T', 'img/s', 'img/s/thread', 'img/CPU-s', 'CPU ms/img', 'other'))
    for p in preps:
        print('%-30s %3d %10.1f %12.1f %12.1f %10.3f %8.2f' % (
            'sx_prep --encode ' + p['encode'], p['threads'], p['images_per_s'], p['images_per_s_per_thread'],
            p['images_per_cpu_s'], p['cpu_ms_per_image'], p['other_cores']))
    for k, r in reader.items():
        print('%-30s %3d %10.1f %12.1f %12.1f %10.3f %8.2f' % (
            r['label'], r['threads'], r['images_per_s'], r['images_per_s_per_thread'], r['images_per_cpu_s'],
            r['cpu_ms_per_image'], r['other_cores']))
    print('("other" = median CPU other processes took during the measurement, in cores of 2)')
    print('\nratios ours / torchvision:')
    for r in ratios:
        print('  %dT %-24s / %-28s per thread (wall) %5.2fx   per CPU-s %5.2fx' % (
            r['threads'], r['ours'], r['theirs'], r['per_thread_wall'], r['per_cpu_s']))
    print('\nreader feeding the model at %.2f img/s:' % model['img_per_s'])
    for f in feed:
        print('  %dT %-4s shards: %.3f CPU ms/img -> %.2f %% of one core (10 %% would allow %.0f img/s)' % (
            f['threads'], f['shards'], f['cpu_ms_per_image'], 100 * f['share_of_one_core'],
            f['max_model_img_per_s_at_10pct']))
    print('targets: %s' % ', '.join('%s=%s' % kv for kv in targets.items()))

    result = dict(bench='data', date=datetime.datetime.now().isoformat(timespec='seconds'),
                  command=' '.join([PY] + sys.argv), count=a.count, batch=a.batch, rounds=a.rounds,
                  epochs=a.epochs, prep=preps, model=model, reader=reader, ratios=ratios, feed_model=feed,
                  targets=targets, elapsed_s=time.time() - started)
    text = json.dumps(result)
    if a.out:
        with open(a.out, 'w') as f:
            f.write(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
