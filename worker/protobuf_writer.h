// defines: sx::worker::ProtoWriter — the protocol-buffers wire format (encoding only), enough to
// write an ONNX ModelProto without libprotobuf: varint / 64-bit-int / float / length-delimited
// fields and nested messages. Field numbers and types are the caller's (worker/onnx_export.cc
// names the onnx.proto fields it writes). Repeated scalars are written unpacked, one key per value,
// which every protobuf parser reads for proto2 and proto3 alike.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sx::worker {

class ProtoWriter {
 public:
  enum Wire : int { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

  void varint(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(char(uint8_t(v) | 0x80));
      v >>= 7;
    }
    buf_.push_back(char(uint8_t(v)));
  }
  void key(int field, Wire wire) { varint((uint64_t(uint32_t(field)) << 3) | uint64_t(wire)); }
  // int32 / int64 / enum / bool fields: a negative value is its 64-bit two's complement (10 bytes).
  void int_field(int field, int64_t v) {
    key(field, kVarint);
    varint(uint64_t(v));
  }
  void float_field(int field, float v) {
    key(field, kFixed32);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int i = 0; i < 4; ++i) buf_.push_back(char(uint8_t(bits >> (8 * i))));  // little endian
  }
  void bytes_field(int field, std::string_view s) {
    key(field, kLengthDelimited);
    varint(s.size());
    buf_.append(s.data(), s.size());
  }
  void message_field(int field, const ProtoWriter& m) { bytes_field(field, m.buf_); }

  const std::string& bytes() const { return buf_; }

 private:
  std::string buf_;
};

}  // namespace sx::worker
