#!/usr/bin/python3
"""Cuts real photographs (Debian wallpaper packages) into an ImageNet-like set of JPEGs for the data
benchmark: 500x375 landscape (and ~20 % 375x500 portrait) crops at varied scales, JPEG quality 90,
in an ImageFolder tree plus a PaddleClas list file. Deterministic: same --seed, sources and PIL ⇒
same files.

    /usr/bin/python3 bench/make_photos.py --count 3000 --out /tmp/sx_photos
    → /tmp/sx_photos/train/<class>/<class>_00017.jpg     (torchvision ImageFolder root: .../train)
      /tmp/sx_photos/train_list.txt                       ("train/<class>/<class>_00017.jpg <label>",
                                                           sx_prep --format list --root /tmp/sx_photos)

One class per source photograph (labels = sorted class names, as ImageFolder numbers them).

Sources: the photographs among plasma-workspace-wallpapers (PHOTOS below; the package's other
wallpapers are renders). ukui-wallpapers was checked too: its 12 images are all digital renders
(smooth gradients compress ~3x better than photos and decode faster), so it is not the default;
--source-dir DIR takes every .jpg/.png in DIR instead.
"""
import argparse, glob, hashlib, json, os, random, sys

from PIL import Image

PLASMA = '/usr/share/wallpapers'
# The real photographs in Debian's plasma-workspace-wallpapers (5.27), checked by eye.
PHOTOS = ['BytheWater', 'ColdRipple', 'ColorfulCups', 'DarkestHour', 'EveningGlow', 'FallenLeaf', 'Grey',
          'Kite', 'OneStandsOut', 'Path', 'summer_1am']


def sources(source_dir):
    """[(class name, path)] sorted by class name."""
    if source_dir:
        files = sorted(f for f in glob.glob(os.path.join(source_dir, '*'))
                       if f.lower().endswith(('.jpg', '.jpeg', '.png')))
        return [(os.path.splitext(os.path.basename(f))[0].lower().replace(' ', '_'), f) for f in files]
    out = []
    for name in PHOTOS:
        imgs = glob.glob(os.path.join(PLASMA, name, 'contents', 'images', '*'))
        if not imgs:
            sys.exit('make_photos.py: %s/%s missing: apt-get install plasma-workspace-wallpapers '
                     '(or pass --source-dir)' % (PLASMA, name))
        out.append((name.lower(), max(imgs, key=os.path.getsize)))  # the largest = highest resolution
    return sorted(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--count', type=int, default=3000)
    ap.add_argument('--out', required=True)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--quality', type=int, default=90)
    ap.add_argument('--portrait', type=float, default=0.2, help='share of 375x500 crops')
    ap.add_argument('--source-dir', default=None, help='use every .jpg/.png here instead of the Plasma photos')
    a = ap.parse_args()

    srcs = sources(a.source_dir)
    # The recipe (including the sources' sizes) decides whether an existing tree can be reused.
    recipe = dict(count=a.count, seed=a.seed, quality=a.quality, portrait=a.portrait,
                  sources=[(c, p, os.path.getsize(p)) for c, p in srcs], version=1)
    stamp = os.path.join(a.out, 'recipe.json')
    if os.path.exists(stamp) and json.load(open(stamp)) == json.loads(json.dumps(recipe)):
        print('make_photos.py: %s is up to date (%d images)' % (a.out, a.count))
        return
    if os.path.exists(stamp):
        os.remove(stamp)

    images = {}
    for c, p in srcs:
        images[c] = Image.open(p).convert('RGB')
    rng = random.Random(a.seed)
    lines, total_bytes = [], 0
    for i in range(a.count):
        label = i % len(srcs)  # round-robin: balanced classes; srcs is sorted like ImageFolder's classes
        c = srcs[label][0]
        im = images[c]
        ow, oh = (375, 500) if rng.random() < a.portrait else (500, 375)
        # Scale 1 = native pixels; the largest crop spans the whole short side. Drawn log-uniform so
        # close-ups and wide views are equally common.
        smax = min(im.width / ow, im.height / oh)
        s = smax ** rng.random()
        cw, ch = ow * s, oh * s
        x0, y0 = rng.uniform(0, im.width - cw), rng.uniform(0, im.height - ch)
        crop = im.resize((ow, oh), Image.LANCZOS, box=(x0, y0, x0 + cw, y0 + ch))
        rel = 'train/%s/%s_%05d.jpg' % (c, c, i)
        path = os.path.join(a.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        crop.save(path, 'JPEG', quality=a.quality)
        total_bytes += os.path.getsize(path)
        lines.append('%s %d' % (rel, label))
    with open(os.path.join(a.out, 'train_list.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    digest = hashlib.sha256(open(os.path.join(a.out, 'train_list.txt'), 'rb').read()).hexdigest()[:12]
    json.dump(recipe, open(stamp, 'w'))
    print('make_photos.py: %d JPEGs (q%d, mean %.0f KB) from %d photographs, %d classes, in %s (list %s)'
          % (a.count, a.quality, total_bytes / a.count / 1024, len(srcs), len(srcs), a.out, digest))


if __name__ == '__main__':
    main()
