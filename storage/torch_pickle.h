// defines: sx::storage::pickle — the part of Python's pickle format that torch.save uses for a
// state_dict: PickleWriter (protocol 2 opcodes for dicts, tuples, strings, ints, globals,
// persistent ids, calls) and parse_pickle, a small unpickler that turns such a stream into a tree
// of PickleValue. Calls (REDUCE) are kept symbolic: the caller knows what
// torch._utils._rebuild_tensor_v2 means; only collections.OrderedDict() is evaluated (to a dict).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sx::storage::pickle {

struct PickleValue;
using PickleRef = std::shared_ptr<const PickleValue>;

struct PickleValue {
  enum class Kind : uint8_t {
    kNone, kBool, kInt, kFloat, kString,  // kString: str and bytes alike
    kTuple, kList, kDict,                 // kDict: items = key0, value0, key1, value1, ...
    kGlobal,                              // text = "module.name"
    kPersistentId,                        // items = {pid}
    kCall,                                // items = {callee, args tuple}
  };
  Kind kind = Kind::kNone;
  int64_t i = 0;        // kInt, kBool
  double f = 0;         // kFloat
  std::string text;     // kString, kGlobal
  std::vector<PickleRef> items;

  bool is_global(std::string_view name) const { return kind == Kind::kGlobal && text == name; }
};

// Evaluates one pickle stream up to STOP. Errors name the opcode and its byte offset.
StatusOr<PickleRef> parse_pickle(std::string_view bytes);

// Appends opcodes; the caller composes them in pickle's postfix order (see torch_file.cc).
class PickleWriter {
 public:
  PickleWriter();                              // PROTO 2
  void global(std::string_view module, std::string_view name);
  void string(std::string_view s);             // BINUNICODE
  void integer(int64_t v);
  void boolean(bool v);
  void mark();
  void tuple_from_mark();                      // TUPLE
  void empty_tuple();
  void empty_dict();
  void set_items_from_mark();                  // SETITEMS
  void reduce();                               // REDUCE: callee args -> callee(*args)
  void persistent_id();                        // BINPERSID
  std::string finish();                        // STOP, returns the stream

 private:
  std::string out_;
};

}  // namespace sx::storage::pickle
