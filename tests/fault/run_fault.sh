#!/usr/bin/env bash
# Runs the fault tests (tests/fault/fault_launch.cc) inside a 3-host emulated cluster: brings up
# launch/netns-cluster with prefix sxf on 10.79.0.0/24, makes a Fashion-MNIST subset with sx_prep,
# runs the gtest binary, and ALWAYS tears everything down (EXIT trap): the cluster (its namespaces and
# whatever still runs in them) and every process the tests started (found by a tag in their env).
# Exit 77 (skipped) when not root, when namespaces are not permitted or the dataset is missing.
#   tests/fault/run_fault.sh FAULT_LAUNCH_BINARY [gtest args]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$HERE/../../launch/netns-cluster"
PREFIX=sxf
SUBNET=10.79.0.0/24
FMNIST=${SX_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
N_TRAIN=${SX_FAULT_TRAIN:-4608}   # 48 steps/epoch at global batch 96
N_VAL=${SX_FAULT_VAL:-10000}      # the whole test set: accuracy differences of 0.5 pt are 50 images
BIN=${1:?usage: run_fault.sh FAULT_LAUNCH_BINARY [gtest args]}
shift
BIN_DIR=$(dirname "$BIN")

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces)"
command -v mpirun >/dev/null || skip "mpirun not installed"
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST in $FMNIST"
probe_ns="${PREFIX}probe$$"
ip netns add "$probe_ns" 2>/dev/null || skip "'ip netns add' is not permitted here"
ip netns del "$probe_ns"

TAG="sx_fault_$$"
WORK=$(mktemp -d /tmp/sx_fault.XXXXXX)
cleanup() {
  local rc=$?
  # Everything started under this run carries SX_FAULT_TAG in its environment.
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" != $$ ] || continue
    if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qx "SX_FAULT_TAG=$TAG"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  "$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1 || echo "cleanup: netns-cluster down failed" >&2
  if [ -n "${SX_KEEP_TEST_DIRS:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1 || true   # leftovers of an interrupted run
"$CLUSTER" up 3 --prefix "$PREFIX" --subnet "$SUBNET" >"$WORK/cluster-up.log" 2>&1 || {
  cat "$WORK/cluster-up.log" >&2
  exit 1
}
source "/tmp/sx-netns/$PREFIX/env"

mkdir -p "$WORK/data"
PY=/usr/bin/python3
"$PY" "$HERE/fmnist_subset.py" "$FMNIST/train-images-idx3-ubyte.gz" "$FMNIST/train-labels-idx1-ubyte.gz" "$N_TRAIN" "$WORK/data/train"
"$PY" "$HERE/fmnist_subset.py" "$FMNIST/t10k-images-idx3-ubyte.gz" "$FMNIST/t10k-labels-idx1-ubyte.gz" "$N_VAL" "$WORK/data/val"
for s in train val; do
  "$BIN_DIR/sx_prep" --format idx --images "$WORK/data/$s-images-idx3-ubyte" --labels "$WORK/data/$s-labels-idx1-ubyte" \
    --out "$WORK/data/$s" --class-names fashion-mnist --no-progress --threads 1 >/dev/null
done

export SX_FAULT_TAG=$TAG SX_FAULT_PREFIX=$PREFIX SX_FAULT_SUBNET=$SUBNET SX_FAULT_WORK=$WORK/runs \
  SX_FAULT_DATA=$WORK/data SX_FAULT_AGENT="$HERE/../../launch/netns-agent" SX_FAULT_CLUSTER="$CLUSTER" \
  SX_FAULT_LAUNCHER_IP=$SX_NETNS_LAUNCHER_IP SX_FAULT_CONFIG="$HERE/../../cluster-configs/fashion_mnist_local.yaml"
"$BIN" "$@"
