#!/usr/bin/env bash
# ImageNet end to end on a small synthetic tree in the ILSVRC2012 layout (ctest label `unit`):
# make_tree.py writes real JPEGs with OpenCV (3 synsets x 24 training images, 18 flat validation
# images, Kaggle's LOC_val_solution.csv, LOC_synset_mapping.txt); launch/imagenet-lists makes the
# list files (sorted synsets = PaddleClas labels; val labels from the ground truth; bad inputs are
# errors naming file and line, with nothing written); sx_prep stores JPEG shards at short side 256
# (every stored image checked: a decodable JPEG whose short side is 256, its label the list's);
# `mpirun -np 2 sx_worker` trains the MindSpore recipe with the `small` model at 32 px; sx_infer
# classifies the validation list with the class names.
#   tests/imagenet/test_imagenet_e2e.sh BIN_DIR
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
BIN=$(cd "${1:?usage: test_imagenet_e2e.sh BIN_DIR}" && pwd)
PY=/usr/bin/python3
skip() { echo "SKIP: $*"; exit 77; }
"$PY" -c 'import cv2, h5py, numpy' 2>/dev/null || skip "python3-opencv / python3-h5py missing (launch/setup-deps)"
command -v mpirun >/dev/null || skip "mpirun not installed"
step=0
ok() { step=$((step + 1)); echo "ok $step - $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
W=$(mktemp -d /tmp/sx_imagenet.XXXXXX)
trap 'rm -rf "$W"' EXIT
R=$W/ILSVRC2012

"$PY" "$HERE/make_tree.py" "$R" 24 6
LISTS=(--root "$R" --val-gt "$R/LOC_val_solution.csv" --synset-words "$R/LOC_synset_mapping.txt")

# --- bad inputs: named, nothing written -------------------------------------------------------------
cp "$R/LOC_val_solution.csv" "$W/gt.csv"
sed -i '/ILSVRC2012_val_00000005/d' "$W/gt.csv"
if "$SRC/launch/imagenet-lists" --root "$R" --val-gt "$W/gt.csv" --out "$W/bad" 2>"$W/err"; then fail "a missing ground truth passed"; fi
grep -q "$W/gt.csv: no ground truth for $R/val/ILSVRC2012_val_00000005.JPEG" "$W/err" || fail "$(cat "$W/err")"
[ ! -e "$W/bad" ] || fail "imagenet-lists wrote $W/bad although its input was bad"
printf 'ImageId,PredictionString\nILSVRC2012_val_00000001,n09999999 1 2 3 4\n' >"$W/gt2.csv"
if "$SRC/launch/imagenet-lists" --root "$R" --val-gt "$W/gt2.csv" --out "$W/bad" 2>"$W/err"; then fail "an unknown synset passed"; fi
grep -q "$W/gt2.csv:2: synset n09999999 of ILSVRC2012_val_00000001 has no folder in train/" "$W/err" || fail "$(cat "$W/err")"
ok "imagenet-lists: a missing or unknown ground truth is an error naming the file (and line)"

# --- lists -----------------------------------------------------------------------------------------
"$SRC/launch/imagenet-lists" "${LISTS[@]}" --out "$W/lists"
printf 'n01440764\nn01443537\nn01484850\n' | cmp - "$W/lists/synsets.txt" || fail "synsets.txt is not the sorted wnids"
[ "$(sed -n 2p "$W/lists/class_names.txt")" = "n01443537 goldfish, Carassius auratus" ] || fail "class_names.txt: $(cat "$W/lists/class_names.txt")"
[ "$(wc -l <"$W/lists/train_list.txt")" -eq 72 ] && [ "$(wc -l <"$W/lists/val_list.txt")" -eq 18 ] || fail "list lengths"
[ "$(sed -n 25p "$W/lists/train_list.txt")" = "train/n01443537/n01443537_1000.JPEG 1" ] || fail "train_list.txt line 25: $(sed -n 25p "$W/lists/train_list.txt")"
# every val label is the ground truth's synset's index
"$PY" - "$W/lists/val_list.txt" "$R/LOC_val_solution.csv" "$W/lists/synsets.txt" <<'PYEOF' || fail "val labels do not follow the ground truth"
import sys
val, gt, syn = sys.argv[1:]
synsets = open(syn).read().split()
truth = {l.split(",")[0]: l.split(",")[1].split()[0] for l in open(gt).read().splitlines()[1:]}
for line in open(val):
    path, label = line.rsplit(" ", 1)
    stem = path.split("/")[-1].rsplit(".", 1)[0]
    assert synsets[int(label)] == truth[stem], line
PYEOF
ok "lists: sorted synsets (PaddleClas labels), 72 train / 18 val lines, val labels from LOC_val_solution.csv"

# --- shards at short side 256 ---------------------------------------------------------------------
for s in train val; do
  "$BIN/sx_prep" --list "$W/lists/${s}_list.txt" --root "$R" --out "$W/data/$s" --short-side 256 --encode jpeg \
    --class-names "$W/lists/class_names.txt" --threads 1 --no-progress
done
"$PY" - "$W/data" "$W/lists" <<'PYEOF' || fail "the shards are not JPEGs at short side 256 with the lists' labels"
import json, sys
import cv2, h5py, numpy as np
data, lists = sys.argv[1:]
for s in ("train", "val"):
    m = json.load(open(f"{data}/{s}/manifest.json"))
    assert m["encoding"] == "jpeg" and m["short_side"] == 256 and m["num_classes"] == 3, m
    want = [int(l.rsplit(" ", 1)[1]) for l in open(f"{lists}/{s}_list.txt")]
    labels = []
    for sh in m["shards"]:
        with h5py.File(f"{data}/{s}/{sh['file']}", "r") as f:
            d, off, shapes = f["data"][:], f["offsets"][:], f["shapes"][:]
            labels += list(f["labels"][:])
            for i in range(len(shapes)):
                img = cv2.imdecode(np.frombuffer(d[off[i]:off[i + 1]].tobytes(), np.uint8), cv2.IMREAD_COLOR)
                assert img is not None and tuple(img.shape) == tuple(shapes[i]), (i, shapes[i])
                assert min(img.shape[:2]) == 256, img.shape
    assert labels == want, s
PYEOF
ok "sx_prep: every stored image is a JPEG with short side 256, labels in list order"

# --- a job and inference --------------------------------------------------------------------------
mpirun --allow-run-as-root --oversubscribe -np 2 --bind-to none "$BIN/sx_worker" \
  -c "$SRC/cluster-configs/se_resnext50_mindspore_8card.yaml" -o model.preset=small -o model.image_size=32 \
  -o data.resize_short=36 -o data.train="$W/data/train" -o data.val="$W/data/val" -o run_dir="$W/run" \
  -o batch.per_rank=12 -o epochs=6 -o optimizer.lr=0.1 -o data.threads=1 -o numerics.threads=1 \
  -o log.progress=off -o checkpoint.async=false >"$W/train.log" 2>&1 || { cat "$W/train.log" >&2; fail "training failed"; }
top1=$("$PY" -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"eval\"" in l][-1]["top1"])' "$W/run/metrics.jsonl")
"$PY" -c "import sys; sys.exit(0 if $top1 >= 80 else 1)" || fail "final top-1 $top1 % (expected >= 80 on these separable classes)"
ok "mpirun -np 2 sx_worker (MindSpore recipe, small model at 32 px): final val top-1 $top1 %"

"$BIN/sx_infer" --checkpoint "$W/run" --list "$W/lists/val_list.txt" --root "$R" --labels "$W/lists/class_names.txt" \
  --format csv --top 1 --threads 1 >"$W/infer.csv"
"$PY" - "$W/infer.csv" "$W/lists/val_list.txt" <<'PYEOF' || fail "sx_infer: $(head -5 "$W/infer.csv")"
import csv, sys
names = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark, man-eater"]
rows = list(csv.DictReader(open(sys.argv[1])))
truth = {l.rsplit(" ", 1)[0].split("/")[-1]: int(l.rsplit(" ", 1)[1]) for l in open(sys.argv[2])}
assert len(rows) == 18, len(rows)
right = 0
for r in rows:
    assert r["name"] == names[int(r["class"])], r
    right += int(r["class"]) == truth[r["image"].split("/")[-1]]
assert right >= 15, right
print(f"sx_infer: {right}/18 right")
PYEOF
ok "sx_infer --list val_list.txt --labels class_names.txt: 18 rows with class names, top-1 matches the ground truth"
echo "all $step checks passed"
