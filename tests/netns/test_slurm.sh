#!/usr/bin/env bash
# launch/sxtrain.sbatch under a real Slurm (Debian's slurm-wlm 22.05; ctest label `netns`): a
# 2-host emulated cluster (launch/netns-cluster, prefix sxl on 10.83.0.0/24), our own munged (private
# key and socket), slurmctld in this namespace on the bridge address, one slurmd per emulated host
# (NodeName sxl1/sxl2, each in its host's namespace with the cgroup v1 controllers mounted there,
# since `ip netns exec` remounts /sys). Then:
#   1. `sbatch --wait --nodes=2 --ntasks-per-node=1 launch/sxtrain.sbatch fashion_mnist_local.yaml`
#      trains 6 steps on a Fashion-MNIST subset: mpirun inside the allocation starts one rank on each
#      node through srun; the job reports 2 ranks on 2 nodes and writes its checkpoint.
#   2. the same submission with max_steps=10 resumes from step 6 (resume=auto) and ends at step 10.
#   3. a bad config fails in the batch script before any rank starts (job state FAILED, the key named).
# Everything it started (daemons by pid file, the cluster) is stopped at the end, also on failure.
# Exit 77 (skipped) when not root, without namespaces, Slurm/munge, Open MPI or the dataset.
#   tests/netns/test_slurm.sh BIN_DIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
CLUSTER="$SRC/launch/netns-cluster"
PREFIX=sxl
SUBNET=10.83.0.0/24
FMNIST=${SX_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
BIN=$(cd "${1:?usage: test_slurm.sh BIN_DIR}" && pwd)

skip() { echo "SKIP: $*"; exit 77; }
step=0
ok() { step=$((step + 1)); echo "ok $step - $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, Slurm daemons)"
for c in slurmctld slurmd sbatch srun sinfo munged mpirun; do
  command -v "$c" >/dev/null || skip "$c not installed (launch/setup-deps installs slurm-wlm and munge)"
done
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST in $FMNIST"
probe_ns="${PREFIX}probe$$"
ip netns add "$probe_ns" 2>/dev/null || skip "'ip netns add' is not permitted here"
ip netns del "$probe_ns"

W=$(mktemp -d /tmp/sx_slurm.XXXXXX)   # 0700: munged checks its directories
stop_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_pidfile "$W/slurmd.${PREFIX}1.pid"
  stop_pidfile "$W/slurmd.${PREFIX}2.pid"
  stop_pidfile "$W/slurmctld.pid"
  stop_pidfile "$W/munge/pid"
  "$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1 || echo "cleanup: netns-cluster down failed" >&2
  if [ $rc -ne 0 ]; then
    for f in "$W"/slurmctld.log "$W"/slurmd.*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; } >&2; done
  fi
  if [ -n "${SX_KEEP_TEST_DIRS:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1 || true
"$CLUSTER" up 2 --prefix "$PREFIX" --subnet "$SUBNET" --no-warmup >"$W/up.log" 2>&1 || { cat "$W/up.log" >&2; exit 1; }
source "/tmp/sx-netns/$PREFIX/env"

# munge: a private key and socket (the machine's own munged, if any, is left alone).
mkdir -m 700 "$W/munge"
head -c 1024 /dev/urandom >"$W/munge/key"
chmod 400 "$W/munge/key"
munged --force --key-file="$W/munge/key" --socket="$W/munge/sock" --pid-file="$W/munge/pid" \
  --log-file="$W/munge/log" --seed-file="$W/munge/seed" || fail "munged did not start: $(cat "$W/munge/log" 2>/dev/null)"

mkdir -p "$W/state"
cat >"$W/slurm.conf" <<EOF
ClusterName=sxtest
SlurmctldHost=$(hostname)($SX_NETNS_LAUNCHER_IP)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$W/munge/sock
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool.%n
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.%n.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=${PREFIX}1 NodeAddr=$(awk "/ ${PREFIX}1 /{print \$1}" /etc/hosts | head -1) CPUs=2 State=UNKNOWN
NodeName=${PREFIX}2 NodeAddr=$(awk "/ ${PREFIX}2 /{print \$1}" /etc/hosts | head -1) CPUs=2 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
printf 'CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\n' >"$W/cgroup.conf"
export SLURM_CONF=$W/slurm.conf
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
# `ip netns exec` gives each host a fresh /sys without cgroups; slurmd needs the v1 controllers there.
CG='mount -t tmpfs cgroup_root /sys/fs/cgroup && for c in cpuset memory devices freezer; do mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c || exit 1; done'
for n in 1 2; do
  "$CLUSTER" run "$PREFIX$n" sh -c "$CG && exec slurmd -f '$SLURM_CONF' -N $PREFIX$n" || fail "slurmd on $PREFIX$n did not start"
done
for _ in $(seq 60); do
  [ "$(sinfo -h -t idle -o '%D' 2>/dev/null | awk '{s+=$1} END {print s+0}')" -eq 2 ] && break
  sleep 0.5
done
[ "$(sinfo -h -t idle -o '%D' | awk '{s+=$1} END {print s+0}')" -eq 2 ] || fail "the two slurmd did not come up: $(sinfo 2>&1)"
out=$(timeout 60 srun -N2 -n2 hostname | sort | tr '\n' ' ')
[ "$out" = "${PREFIX}1 ${PREFIX}2 " ] || fail "srun -N2 hostname said '$out'"
ok "Slurm up: slurmctld + slurmd on ${PREFIX}1 and ${PREFIX}2, srun -N2 runs on both"

# Data: 512 Fashion-MNIST training and 128 test images.
for s in train:train:512 t10k:val:128; do
  IFS=: read -r src dst n <<<"$s"
  python3 "$HERE/../fault/fmnist_subset.py" "$FMNIST/$src-images-idx3-ubyte.gz" "$FMNIST/$src-labels-idx1-ubyte.gz" "$n" "$W/$dst"
  "$BIN/sx_prep" --format idx --images "$W/$dst-images-idx3-ubyte" --labels "$W/$dst-labels-idx1-ubyte" \
    --out "$W/data/$dst" --class-names fashion-mnist --no-progress --threads 1 >/dev/null
done

# The MPI launch stays on the emulated network (TCP between the namespaces).
export SX_BIN=$BIN SX_MPIRUN_ARGS="--allow-run-as-root --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include $SUBNET --mca oob_tcp_if_include $SUBNET"
ARGS=(-o run_dir="$W/run" -o data.train="$W/data/train" -o data.val="$W/data/val" -o data.test= -o epochs=2 -o batch.per_rank=16
      -o checkpoint.every_steps=2 -o checkpoint.async=false -o log.progress=on -o numerics.threads=1)
submit() {  # LOG [more args]: sbatch --wait, 2 nodes x 1 task; returns sbatch's exit code
  local log=$1
  shift
  (cd "$SRC" && timeout 300 sbatch --wait --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 -o "$log" \
     launch/sxtrain.sbatch cluster-configs/fashion_mnist_local.yaml "${ARGS[@]}" "$@") >"$log.sbatch" 2>&1
}

submit "$W/job1.out" -o max_steps=6 || { cat "$W/job1.out" "$W/job1.out.sbatch" >&2; fail "the first batch job failed"; }
grep -q "on 2 node(s) (${PREFIX}\[1-2\]), 2 ranks" "$W/job1.out" || { cat "$W/job1.out" >&2; fail "not 2 nodes / 2 ranks"; }
grep -q "sx_worker: 2 rank(s) on 2 node(s)" "$W/job1.out" || { cat "$W/job1.out" >&2; fail "sx_worker did not see 2 ranks on 2 nodes"; }
[ -f "$W/run/ckpt-00000006.h5" ] || fail "no checkpoint at step 6"
ok "sbatch --nodes=2 launch/sxtrain.sbatch: mpirun in the allocation, 2 ranks on 2 nodes, 6 steps, checkpoint"

submit "$W/job2.out" -o max_steps=10 || { cat "$W/job2.out" >&2; fail "the second batch job failed"; }
grep -q "resumed from $W/run/ckpt-00000006.h5 at step 6" "$W/job2.out" || { cat "$W/job2.out" >&2; fail "the resubmission did not resume"; }
[ -f "$W/run/ckpt-00000010.h5" ] || fail "no checkpoint at step 10"
ok "the resubmitted job resumes from step 6 (resume=auto) and ends at step 10"

if submit "$W/job3.out" -o optimizer.momentum=7; then fail "a bad config passed"; fi
grep -q "optimizer.momentum" "$W/job3.out" || { cat "$W/job3.out" >&2; fail "the bad key is not named"; }
! grep -q "sx_worker: 2 rank" "$W/job3.out" || fail "ranks started with a bad config"
ok "a bad config fails in the batch script before any rank starts, naming the key"
echo "all $step checks passed"
