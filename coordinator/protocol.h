// defines: sx::coord::encode, decode, make_error — Message <-> bytes of one ZeroMQ frame (Cap'n Proto).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "coordinator/types.h"

namespace sx::coord {

inline constexpr size_t kMaxFrameBytes = 1 << 20;  // larger frames are rejected before decoding

std::string encode(const Message& msg);

// Decodes one frame of untrusted bytes; never throws. A frame of another protocol version gives
// an error (code kUnimplemented) that names both versions; anything else undecodable is
// kInvalidArgument. `request_id` is set whenever the header could be read, so the
// error reply can still be matched by the sender.
StatusOr<Message> decode(std::string_view bytes, uint64_t* request_id = nullptr);

Message make_error(uint64_t request_id, ErrorCode code, std::string message);

}  // namespace sx::coord
