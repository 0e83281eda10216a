#!/bin/sh
# Fuzz sx_coord's frame decoder with libFuzzer (clang, ASan + UBSan).
#   coordinator/fuzz/run_decode_fuzzer.sh BUILD_DIR [SECONDS]
# BUILD_DIR is a configured build (it holds the generated coordinator/protocol.capnp.{h,c++}).
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: $0 BUILD_DIR [SECONDS]}
secs=${2:-60}
out=$build/fuzz
mkdir -p "$out/corpus"
[ -f "$build/coordinator/protocol.capnp.c++" ] || cmake --build "$build" --target sx_coordlib
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src" -I"$build" \
  "$src/coordinator/fuzz/decode_fuzzer.cc" "$src/coordinator/protocol.cc" "$src/common/status.cc" \
  "$build/coordinator/protocol.capnp.c++" -lcapnp -lkj -o "$out/decode_fuzzer"
# Seeds: one valid frame of each shape, so mutations start from deep inside the schema.
i=0
while read -r msg; do
  i=$((i + 1))
  echo "$msg" | capnp encode -I/usr/include "$src/coordinator/protocol.capnp" Message > "$out/corpus/seed$i"
done <<'SEEDS'
(version = 1, requestId = 5, body = (hello = void))
(version = 1, requestId = 5, body = (registerRank = (job = "j", host = "h", pid = 1, rank = 0, worldSize = 2, device = "cpu")))
(version = 1, body = (heartbeat = (job = "j", rank = 1, pid = 2, metrics = (step = 4, loss = 0.5))))
(version = 1, body = (heartbeatReply = (overrides = [(id = 1, kind = factor, value = 0.5, fromStep = 3)], notices = [(kind = drain, reason = "r")], pubEndpoint = "tcp://x:1")))
(version = 1, body = (statusReply = (job = "j", table = (generation = 1, worldSize = 2, ranks = [(rank = 0, host = "a")], hosts = [(host = "a", ranks = [0, 1], leader = 0)]), ranks = [(rank = 0, state = stalled, metrics = (step = 3))], overrides = [(id = 1, value = 0.1)], notices = [(reason = "x")])))
(version = 1, body = (rankTable = (generation = 2, worldSize = 1, complete = true, ranks = [(rank = 0, host = "a", device = "d")], hosts = [(host = "a", ranks = [0], leader = 0)])))
(version = 1, body = (setOverride = (kind = lr, value = 0.01, fromStep = -1, fromEpoch = 3)))
(version = 1, body = (error = (code = badVersion, message = "m")))
SEEDS
"$out/decode_fuzzer" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus"
