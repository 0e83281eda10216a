// libFuzzer harness for the coordinator's frame decoder: any bytes in, a Status or a Message out,
// never a crash, leak or UB. Build and run with run_decode_fuzzer.sh (clang, ASan + UBSan).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "coordinator/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t id = 0;
  auto m = sx::coord::decode(std::string_view(reinterpret_cast<const char*>(data), size), &id);
  if (m.is_ok()) {
    // Whatever decodes must re-encode and decode to the same kind (the server replies with encode()).
    // (Skipped when the canonical form is larger than a frame may be: a zero-size-struct list
    // costs one word on the wire per element but more once its elements carry default fields.)
    std::string bytes = sx::coord::encode(*m);
    if (bytes.size() <= sx::coord::kMaxFrameBytes) {
      auto again = sx::coord::decode(bytes);
      if (!again.is_ok() || again->kind != m->kind) __builtin_trap();
    }
  }
  return 0;
}
