#!/usr/bin/env bash
# Test of launch/netns-cluster (ctest label `netns`): a 3-host emulated cluster comes up, mpirun
# puts one rank on each host (distinct hostname and eth0 address), TCP works between namespaces,
# `cut` takes a host off the network and `restore` brings it back, `down` leaves nothing behind
# (also after a partial `up`, and from the EXIT trap when a check fails midway).
# Exit 77 (skipped) when not root or network namespaces are not permitted here.
#   tests/netns/test_netns_cluster.sh [--probe PATH_TO_netns_probe]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$HERE/../../launch/netns-cluster"
PREFIX=sxt                 # not the developer default (sxh), so a running dev cluster is untouched
SUBNET=10.78.0.0/24
NET3=10.78.0               # first three octets of SUBNET
PROBE=""
[ "${1:-}" != --probe ] || PROBE=${2:-}

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || true)

skip() { echo "SKIP: $*"; exit 77; }
step=0
ok() { step=$((step + 1)); echo "ok $step - $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
nc() { "$CLUSTER" --prefix "$PREFIX" "$@"; }

# ---- can we run here at all? ---------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, bridge, /etc/hosts)"
command -v ip >/dev/null || skip "iproute2 not installed"
command -v mpirun >/dev/null || skip "mpirun not installed"
[ -n "$PY" ] || skip "python3 not found (used for the TCP checks)"
probe_ns="${PREFIX}probe$$"
ip netns add "$probe_ns" 2>/dev/null || skip "'ip netns add' is not permitted in this sandbox"
ip netns del "$probe_ns"
ip link add "${PREFIX}probe-br" type bridge 2>/dev/null || skip "creating a bridge is not permitted in this sandbox"
ip link del "${PREFIX}probe-br"

# ---- always tear down, also when a check below fails ---------------------------------------------
listener_pids=()
tmpdir=""
cleanup() {
  local rc=$?
  [ -z "$tmpdir" ] || rm -rf "$tmpdir"
  [ ${#listener_pids[@]} -eq 0 ] || kill "${listener_pids[@]}" 2>/dev/null || true
  nc down >/dev/null 2>&1 || echo "cleanup: 'down' failed" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
nc down >/dev/null 2>&1   # leftovers of an earlier interrupted run

# nothing_left: no namespace, veth, bridge, hosts line or state dir of PREFIX remains.
nothing_left() {
  local left=""
  left+=$(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" | tr '\n' ' ' || true)
  left+=$(ip -o link show | awk -F': ' '{print $2}' | grep -E "^${PREFIX}([0-9]+-[vp]|-br)(@|$)" | tr '\n' ' ' || true)
  grep -qE "# sx-netns:${PREFIX}$" /etc/hosts && left+="/etc/hosts-lines "
  [ ! -e "/tmp/sx-netns/$PREFIX" ] || left+="/tmp/sx-netns/$PREFIX "
  [ -z "$left" ] || { echo "left behind: $left" >&2; return 1; }
}

# start_listener HOST: a TCP server on port 5077 answering "hello from <hostname>", for 40 s.
start_listener() {
  nc run "$1" "$PY" -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5077)); s.listen(8); s.settimeout(40)
print("listening", flush=True)
while True:
    try: c, _ = s.accept()
    except socket.timeout: sys.exit(0)
    c.sendall(("hello from " + socket.gethostname()).encode()); c.close()
' >"$tmpdir/listener.$1" 2>&1 &
  listener_pids+=($!)
  for _ in $(seq 50); do grep -q listening "$tmpdir/listener.$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "TCP listener in $1 did not start: $(cat "$tmpdir/listener.$1")"
}
# connect FROM TO: prints what TO's listener says; fails after 2 s without an answer.
connect() {
  nc run "$1" "$PY" -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 5077), timeout=2)
print(s.recv(100).decode())' "$2"
}

tmpdir=$(mktemp -d /tmp/sx-netns-test.XXXXXX)
t_start=$(date +%s)

# ---- up ------------------------------------------------------------------------------------------
nc up 3 --subnet "$SUBNET" >"$tmpdir/up.out" 2>&1 || { cat "$tmpdir/up.out"; fail "up 3 failed"; }
grep -q "warm-up launch ok" "$tmpdir/up.out" || { cat "$tmpdir/up.out"; fail "up did not report a warm-up launch"; }
ok "up 3 (with warm-up launch) in $(( $(date +%s) - t_start )) s"
nc up 3 --subnet "$SUBNET" >/dev/null 2>&1 || fail "a second 'up 3' on a running cluster failed (not idempotent)"
nc status >"$tmpdir/status.out" || { cat "$tmpdir/status.out"; fail "status says the cluster is not up"; }
for n in 1 2 3; do
  grep -q "${PREFIX}$n: eth0 $NET3.1$n/24 state UP" "$tmpdir/status.out" ||
    { cat "$tmpdir/status.out"; fail "status does not show ${PREFIX}$n UP with $NET3.1$n"; }
  [ "$(grep -c "^$NET3.1$n ${PREFIX}$n # sx-netns:${PREFIX}$" /etc/hosts)" -eq 1 ] || fail "no single /etc/hosts line for ${PREFIX}$n"
  grep -q "UP" <<<"$(nc run "${PREFIX}$n" ip -o link show lo)" || fail "loopback is not up in ${PREFIX}$n"
  # Only the cluster subnet is reachable from a host: one route, no default route.
  routes=$(nc run "${PREFIX}$n" ip -4 route show)
  [ "$routes" = "$NET3.0/24 dev eth0 proto kernel scope link src $NET3.1$n " ] ||
    [ "$routes" = "$NET3.0/24 dev eth0 proto kernel scope link src $NET3.1$n" ] || fail "unexpected routes in ${PREFIX}$n: $routes"
done
ok "status: 3 hosts UP with their addresses, lo up, one /etc/hosts line each, only the subnet route"

# ---- mpirun across the hosts ---------------------------------------------------------------------
args=$(nc mpirun-args)
for want in "--hostfile /tmp/sx-netns/$PREFIX/hostfile" "--mca plm_rsh_agent" "--mca btl tcp,self" \
            "--mca btl_tcp_if_include $SUBNET" "--mca oob_tcp_if_include $SUBNET" "--allow-run-as-root"; do
  [[ $args == *"$want"* ]] || fail "mpirun-args lacks '$want': $args"
done
# shellcheck disable=SC2086
out=$(timeout 60 mpirun $args -np 3 sh -c \
        'echo "$OMPI_COMM_WORLD_RANK $(hostname) $(ip -4 -o addr show eth0 | awk "{print \$4}")"' 2>/dev/null </dev/null | sort) ||
  fail "mpirun -np 3 failed: $out"
expected=$(printf '0 %s1 %s.11/24\n1 %s2 %s.12/24\n2 %s3 %s.13/24' "$PREFIX" "$NET3" "$PREFIX" "$NET3" "$PREFIX" "$NET3")
[ "$out" = "$expected" ] || fail "mpirun -np 3: expected one rank per host with its own address, got:
$out"
ok "mpirun -np 3: each rank on its own host: $(echo "$out" | tr '\n' ';')"

if [ -n "$PROBE" ]; then
  # shellcheck disable=SC2086
  out=$(timeout 60 mpirun $args --bind-to none --mca mpi_yield_when_idle 1 -np 3 "$PROBE" 2>/dev/null </dev/null) ||
    fail "netns_probe under mpirun failed: $out"
  for n in 1 2 3; do grep -q "rank $((n - 1)) on ${PREFIX}$n" <<<"$out" || fail "netns_probe: rank $((n - 1)) not on ${PREFIX}$n: $out"; done
  grep -q "ring and allreduce ok on 3 ranks" <<<"$out" || fail "netns_probe: no ring/allreduce: $out"
  ok "MPI over TCP between the namespaces: ring + allreduce on 3 ranks (MPI_Get_processor_name = host)"
fi

# ---- TCP between namespaces, cut, restore --------------------------------------------------------
start_listener "${PREFIX}2"
start_listener "${PREFIX}3"
reply=$(connect "${PREFIX}1" "${PREFIX}2") || fail "TCP ${PREFIX}1 -> ${PREFIX}2 failed: $reply"
[ "$reply" = "hello from ${PREFIX}2" ] || fail "TCP ${PREFIX}1 -> ${PREFIX}2: unexpected reply '$reply'"
ok "TCP ${PREFIX}1 -> ${PREFIX}2 by name: '$reply'"

nc cut "${PREFIX}2" 2>/dev/null
grep -q "${PREFIX}2: eth0 .* state DOWN" <<<"$(nc status)" || fail "status does not show ${PREFIX}2 DOWN after cut"
if reply=$(connect "${PREFIX}1" "${PREFIX}2" 2>/dev/null); then fail "TCP ${PREFIX}1 -> ${PREFIX}2 still works after cut: '$reply'"; fi
reply=$(connect "${PREFIX}1" "${PREFIX}3") || fail "cutting ${PREFIX}2 also broke ${PREFIX}1 -> ${PREFIX}3"
ok "cut ${PREFIX}2: ${PREFIX}1 -> ${PREFIX}2 fails, ${PREFIX}1 -> ${PREFIX}3 still reachable"

nc restore "${PREFIX}2" 2>/dev/null
grep -q "${PREFIX}2: eth0 $NET3.12/24 state UP" <<<"$(nc status)" || fail "status does not show ${PREFIX}2 UP after restore"
reply=""
for _ in 1 2 3; do reply=$(connect "${PREFIX}1" "${PREFIX}2" 2>/dev/null) && break; sleep 0.5; done
[ "$reply" = "hello from ${PREFIX}2" ] || fail "TCP ${PREFIX}1 -> ${PREFIX}2 does not work again after restore: '$reply'"
# shellcheck disable=SC2086
out=$(timeout 60 mpirun $args -np 3 hostname 2>/dev/null </dev/null | sort | tr '\n' ' ') || fail "mpirun after restore failed: $out"
[ "$out" = "${PREFIX}1 ${PREFIX}2 ${PREFIX}3 " ] || fail "mpirun after restore: got '$out'"
ok "restore ${PREFIX}2: TCP works again, mpirun -np 3 reaches all hosts again"

# ---- down ----------------------------------------------------------------------------------------
kill "${listener_pids[@]}" 2>/dev/null || true
listener_pids=()
( nc run "${PREFIX}3" sleep 300 >/dev/null 2>&1 & )   # a stray process: down must stop it
sleep 0.3
nc down >"$tmpdir/down.out" 2>&1 || { cat "$tmpdir/down.out"; fail "down failed"; }
nothing_left || fail "down left things behind"
nc down >/dev/null 2>&1 || fail "a second down (nothing to do) failed"
nc status >/dev/null 2>&1 && fail "status says up after down"
ok "down: no namespace, veth, bridge, /etc/hosts line or state file left; stray process stopped; down again is a no-op"

# A partial 'up' (namespace, unmoved veth, bridge, hosts line, no state files) is also removed.
ip netns add "${PREFIX}1"
ip link add "${PREFIX}2-v" type veth peer name "${PREFIX}2-p"
ip link add "${PREFIX}-br" type bridge
echo "$NET3.11 ${PREFIX}1 # sx-netns:${PREFIX}" >>/etc/hosts
nc down >/dev/null 2>&1 || fail "down after a partial up failed"
nothing_left || fail "down after a partial up left things behind"
ok "down after a partial up removes everything"

echo "PASS: netns-cluster test in $(( $(date +%s) - t_start )) s"
