#!/usr/bin/env bash
# Shared storage is checked, not assumed (ctest label `netns`): a 2-host emulated cluster
# (launch/netns-cluster, prefix sxs on 10.82.0.0/24) where PRIV=$WORK/private is each host's OWN
# directory (--private-dir: a bind mount per host, like a local disk) and $WORK/shared is seen by
# both. One rank per host, the `small` model on a 256-image Fashion-MNIST subset.
#   1. checkpoint.dir shared: a 4-step run, then resume=auto -> resumes at step 4 on both ranks, exit 0.
#   2. checkpoint.dir private: the first run writes host 1's directory only; resume=auto then fails
#      on every rank, with ONE message naming rank 1, host sxs2 and the checkpoint path; no hang.
#   3. the reverse: rank 0 (host sxs2) sees no checkpoint, rank 1 (sxs1) does -> the same kind of error.
#   4. both hosts hold a checkpoint of the same name but different weights -> the crc32 differs: error.
#   5. data.train private with different contents per host -> error naming data.train and sxs2.
# Exit 77 (skipped) when not root, without namespaces, Open MPI or the dataset.
#   tests/netns/test_shared_storage.sh BIN_DIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$HERE/../../launch/netns-cluster"
CONFIG="$HERE/../../cluster-configs/fashion_mnist_local.yaml"
PREFIX=sxs
SUBNET=10.82.0.0/24
FMNIST=${SX_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
BIN=$(cd "${1:?usage: test_shared_storage.sh BIN_DIR}" && pwd)

skip() { echo "SKIP: $*"; exit 77; }
step=0
ok() { step=$((step + 1)); echo "ok $step - $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, bind mounts)"
command -v mpirun >/dev/null || skip "mpirun not installed"
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST in $FMNIST"
probe_ns="${PREFIX}probe$$"
ip netns add "$probe_ns" 2>/dev/null || skip "'ip netns add' is not permitted here"
ip netns del "$probe_ns"

WORK=$(mktemp -d /tmp/sx_shared.XXXXXX)
PRIV=$WORK/private
cleanup() {
  local rc=$?
  "$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1 || echo "cleanup: netns-cluster down failed" >&2
  if [ -n "${SX_KEEP_TEST_DIRS:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1 || true
"$CLUSTER" up 2 --prefix "$PREFIX" --subnet "$SUBNET" --private-dir "$PRIV" >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  exit 1
}
source "/tmp/sx-netns/$PREFIX/env"
HOSTDIR=/tmp/sx-netns/$PREFIX/private   # HOSTDIR/sxsN is what host sxsN sees at $PRIV

# subset N DIR: the first N Fashion-MNIST training images as sx_prep shards in DIR.
subset() {
  python3 "$HERE/../fault/fmnist_subset.py" "$FMNIST/train-images-idx3-ubyte.gz" "$FMNIST/train-labels-idx1-ubyte.gz" \
    "$1" "$WORK/idx"
  "$BIN/sx_prep" --format idx --images "$WORK/idx-images-idx3-ubyte" --labels "$WORK/idx-labels-idx1-ubyte" \
    --out "$2" --class-names fashion-mnist --no-progress --threads 1 >/dev/null
}
subset 256 "$WORK/shared/data"

# job LOG [mpirun/worker args]: 2 ranks (one per host) of 16 images each, 8 steps per epoch.
# Returns mpirun's exit code; 124 (timeout) means a hang, which every check below rejects.
job() {
  local log=$1 rc=0
  shift
  # shellcheck disable=SC2086
  timeout 180 mpirun $SX_NETNS_MPIRUN_ARGS -np 2 "$@" --map-by node "$BIN/sx_worker" -c "$CONFIG" \
    -o run_dir="$WORK/run" -o data.train="$WORK/shared/data" -o data.val= -o data.test= -o epochs=2 -o batch.per_rank=16 \
    -o checkpoint.every_steps=4 -o checkpoint.async=false -o log.progress=on -o log.every_steps=1 \
    -o numerics.threads=1 "${JOB_ARGS[@]}" >"$log" 2>&1 || rc=$?
  [ $rc -ne 124 ] || { cat "$log" >&2; fail "$log: the job hung (timeout)"; }
  return $rc
}
# one_error LOG WORDS...: exactly one sx_worker error line (rank 0's), containing every WORD.
one_error() {
  local log=$1 n
  shift
  n=$(grep -c '^sx_worker' "$log" || true)
  [ "$n" -eq 1 ] || { cat "$log" >&2; fail "$log: expected one sx_worker error message, got $n"; }
  for w in "$@"; do grep -qF -- "$w" "$log" || { cat "$log" >&2; fail "$log: the error does not say '$w'"; }; done
  grep -q 'MPI_ABORT' "$log" && { cat "$log" >&2; fail "$log: the ranks were aborted instead of failing together"; }
  return 0
}

# 1. shared checkpoint.dir: resume works on both hosts.
JOB_ARGS=(-o checkpoint.dir="$WORK/shared/ckpt" -o max_steps=4)
job "$WORK/1a.log" || { cat "$WORK/1a.log" >&2; fail "fresh run on shared storage failed"; }
JOB_ARGS=(-o checkpoint.dir="$WORK/shared/ckpt" -o max_steps=8 -o resume=auto)
job "$WORK/1b.log" || { cat "$WORK/1b.log" >&2; fail "resume from shared storage failed"; }
grep -q "resumed from $WORK/shared/ckpt/ckpt-00000004.h5 at step 4" "$WORK/1b.log" || { cat "$WORK/1b.log" >&2; fail "no resume at step 4"; }
[ -f "$WORK/shared/ckpt/ckpt-00000008.h5" ] || fail "the resumed run wrote no step-8 checkpoint"
ok "checkpoint.dir seen by both hosts: resume=auto continues from step 4 to 8"

# 2. private checkpoint.dir: host sxs1 (rank 0) has it, sxs2 does not.
JOB_ARGS=(-o checkpoint.dir="$PRIV/ckpt" -o max_steps=4)
job "$WORK/2a.log" || { cat "$WORK/2a.log" >&2; fail "fresh run with a private checkpoint.dir failed"; }
[ -f "$HOSTDIR/${PREFIX}1/ckpt/ckpt-00000004.h5" ] && [ ! -e "$HOSTDIR/${PREFIX}2/ckpt" ] ||
  fail "the checkpoint should be in ${PREFIX}1's private directory only"
JOB_ARGS=(-o checkpoint.dir="$PRIV/ckpt" -o max_steps=8 -o resume=auto)
if job "$WORK/2b.log"; then fail "resume with a checkpoint on one host only succeeded"; fi
one_error "$WORK/2b.log" "do not see the same checkpoint" "rank 0 on ${PREFIX}1 loads $PRIV/ckpt/ckpt-00000004.h5" \
  "rank 1 on ${PREFIX}2: cannot load it" "HINT: checkpoint.dir ($PRIV/ckpt)"
ok "checkpoint only on rank 0's host: one error naming rank 1, ${PREFIX}2 and the path; every rank exits non-zero"

# 3. the reverse placement: rank 0 on sxs2 sees nothing, rank 1 on sxs1 sees the checkpoint.
if job "$WORK/3.log" --host "${PREFIX}2,${PREFIX}1"; then fail "rank 0 starting fresh beside a checkpoint succeeded"; fi
one_error "$WORK/3.log" "rank 0 on ${PREFIX}2 sees no checkpoint in $PRIV/ckpt" \
  "rank 1 on ${PREFIX}1: sees $PRIV/ckpt/ckpt-00000004.h5"
ok "checkpoint only on rank 1's host: rank 0 does not start fresh, one error naming both hosts"

# 4. the same file name on both hosts, different weights (another seed): the crc32s differ.
mkdir -p "$HOSTDIR/${PREFIX}2"
JOB_ARGS=(-o checkpoint.dir="$HOSTDIR/${PREFIX}2/ckpt" -o max_steps=4 -o seed=7)
mpirun_np1() {
  timeout 180 "$BIN/sx_worker" -c "$CONFIG" -o run_dir="$WORK/run1" -o data.train="$WORK/shared/data" -o data.val= -o data.test= \
    -o epochs=2 -o batch.per_rank=32 -o checkpoint.every_steps=4 -o checkpoint.async=false -o log.progress=off \
    -o numerics.threads=1 "${JOB_ARGS[@]}" >"$WORK/4a.log" 2>&1
}
mpirun_np1 || { cat "$WORK/4a.log" >&2; fail "the one-rank run for host ${PREFIX}2 failed"; }
JOB_ARGS=(-o checkpoint.dir="$PRIV/ckpt" -o max_steps=8 -o resume=auto)
if job "$WORK/4b.log"; then fail "resume from two different checkpoints succeeded"; fi
one_error "$WORK/4b.log" "rank 0 on ${PREFIX}1 loads $PRIV/ckpt/ckpt-00000004.h5" \
  "rank 1 on ${PREFIX}2: loads $PRIV/ckpt/ckpt-00000004.h5" "of the loaded tensors"
ok "same checkpoint name, different contents: the crc32 of the loaded tensors tells them apart"

# 5. data shards that differ between hosts (256 vs 192 images at the same path).
subset 256 "$HOSTDIR/${PREFIX}1/data"
subset 192 "$HOSTDIR/${PREFIX}2/data"
JOB_ARGS=(-o data.train="$PRIV/data" -o checkpoint.dir="$WORK/shared/ckpt5" -o max_steps=4)
if job "$WORK/5.log"; then fail "training on different data per host succeeded"; fi
one_error "$WORK/5.log" "do not read the same data.train" "rank 0 on ${PREFIX}1 reads $PRIV/data/manifest.json: 256 samples" \
  "rank 1 on ${PREFIX}2: $PRIV/data/manifest.json: 192 samples" "HINT: data.train"
ok "different data shards per host: one error naming data.train, both hosts and their manifests"
echo "all $step checks passed"
