// The pickle subset of torch.save: a writer of protocol-2 opcodes and a stack-machine reader.
// Opcode values are those of CPython's Lib/pickle.py.
#include "storage/torch_pickle.h"

#include <cstring>
#include <map>

namespace sx::storage::pickle {

namespace {

using Mutable = std::shared_ptr<PickleValue>;

Mutable make(PickleValue::Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

char hex_digit(int v) { return "0123456789abcdef"[v & 15]; }

class Parser {
 public:
  explicit Parser(std::string_view bytes) : in_(bytes) {}

  StatusOr<PickleRef> run() {
    while (pos_ < in_.size()) {
      const size_t at = pos_;
      const auto op = static_cast<uint8_t>(in_[pos_++]);
      Status st = step(op);
      if (!st.is_ok())
        return Status::data_loss("pickle opcode 0x" + std::string{hex_digit(op >> 4), hex_digit(op)} + " at byte " +
                                 std::to_string(at) + ": " + st.message());
      if (done_) {
        if (stack_.size() != 1) return Status::data_loss("pickle: STOP with " + std::to_string(stack_.size()) + " values");
        return PickleRef(stack_.back());
      }
    }
    return Status::data_loss("pickle: stream ends without STOP after " + std::to_string(in_.size()) + " bytes");
  }

 private:
  Status need(size_t n) {
    if (in_.size() - pos_ < n) return Status::data_loss("truncated (needs " + std::to_string(n) + " more bytes)");
    return Status::ok();
  }
  template <typename T>
  StatusOr<T> read_le() {
    SX_TRY(need(sizeof(T)));
    T v;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));  // x86-64 and the pickle format are little-endian
    pos_ += sizeof(T);
    return v;
  }
  StatusOr<std::string> read_bytes(uint64_t n) {
    SX_TRY(need(n));
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  StatusOr<std::string> read_line() {
    size_t end = in_.find('\n', pos_);
    if (end == std::string_view::npos) return Status::data_loss("unterminated line");
    std::string s(in_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  StatusOr<Mutable> pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Status::data_loss("stack underflow");
    Mutable v = stack_.back();
    stack_.pop_back();
    return v;
  }
  StatusOr<std::vector<Mutable>> pop_to_mark() {
    if (marks_.empty()) return Status::data_loss("no MARK");
    std::vector<Mutable> items(stack_.begin() + std::ptrdiff_t(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Status push_int(int64_t v) {
    Mutable x = make(PickleValue::Kind::kInt);
    x->i = v;
    stack_.push_back(x);
    return Status::ok();
  }
  Status push_string(std::string s) {
    Mutable x = make(PickleValue::Kind::kString);
    x->text = std::move(s);
    stack_.push_back(x);
    return Status::ok();
  }
  Status push_tuple(std::vector<Mutable> items) {
    Mutable t = make(PickleValue::Kind::kTuple);
    t->items.assign(items.begin(), items.end());
    stack_.push_back(t);
    return Status::ok();
  }
  Status memo_put(uint64_t key) {
    if (stack_.empty()) return Status::data_loss("memo put on an empty stack");
    memo_[key] = stack_.back();
    return Status::ok();
  }
  Status memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Status::data_loss("memo key " + std::to_string(key) + " unknown");
    stack_.push_back(it->second);
    return Status::ok();
  }
  Status set_items(Mutable dict, const std::vector<Mutable>& kv) {
    if (dict->kind != PickleValue::Kind::kDict) return Status::data_loss("SETITEM(S) on a non-dict");
    if (kv.size() % 2) return Status::data_loss("SETITEMS with an odd number of values");
    for (const Mutable& v : kv) dict->items.push_back(v);
    return Status::ok();
  }
  Status global(std::string module, std::string name) {
    Mutable g = make(PickleValue::Kind::kGlobal);
    g->text = module + "." + name;
    stack_.push_back(g);
    return Status::ok();
  }
  // callee(*args): collections.OrderedDict() becomes a dict; everything else stays a symbolic call.
  Status call(Mutable callee, Mutable args) {
    if (args->kind != PickleValue::Kind::kTuple) return Status::data_loss("call arguments are not a tuple");
    if (callee->is_global("collections.OrderedDict") && args->items.empty()) {
      stack_.push_back(make(PickleValue::Kind::kDict));
      return Status::ok();
    }
    Mutable c = make(PickleValue::Kind::kCall);
    c->items = {callee, args};
    stack_.push_back(c);
    return Status::ok();
  }

  Status step(uint8_t op);

  std::string_view in_;
  size_t pos_ = 0;
  bool done_ = false;
  std::vector<Mutable> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Mutable> memo_;
};

Status Parser::step(uint8_t op) {
  using K = PickleValue::Kind;
  switch (op) {
    case 0x80: {  // PROTO
      SX_ASSIGN_OR_RETURN(uint8_t proto, read_le<uint8_t>());
      if (proto > 5) return Status::data_loss("protocol " + std::to_string(proto) + " is newer than 5");
      return Status::ok();
    }
    case 0x95:  // FRAME (protocol 4): the length is only a hint
      return read_le<uint64_t>().status();
    case '.':  // STOP
      done_ = true;
      return Status::ok();
    case '(':  // MARK
      marks_.push_back(stack_.size());
      return Status::ok();
    case 'N':
      stack_.push_back(make(K::kNone));
      return Status::ok();
    case 0x88:  // NEWTRUE
    case 0x89: {  // NEWFALSE
      Mutable b = make(K::kBool);
      b->i = op == 0x88;
      stack_.push_back(b);
      return Status::ok();
    }
    case 'J': {  // BININT
      SX_ASSIGN_OR_RETURN(int32_t v, read_le<int32_t>());
      return push_int(v);
    }
    case 'K': {  // BININT1
      SX_ASSIGN_OR_RETURN(uint8_t v, read_le<uint8_t>());
      return push_int(v);
    }
    case 'M': {  // BININT2
      SX_ASSIGN_OR_RETURN(uint16_t v, read_le<uint16_t>());
      return push_int(v);
    }
    case 0x8a: {  // LONG1: n little-endian two's-complement bytes
      SX_ASSIGN_OR_RETURN(uint8_t n, read_le<uint8_t>());
      if (n > 8) return Status::data_loss("integer of " + std::to_string(n) + " bytes");
      SX_ASSIGN_OR_RETURN(std::string b, read_bytes(n));
      uint64_t u = 0;
      for (size_t k = 0; k < n; ++k) u |= uint64_t(uint8_t(b[k])) << (8 * k);
      if (n > 0 && n < 8 && (uint8_t(b[n - 1]) & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
      return push_int(int64_t(u));
    }
    case 'G': {  // BINFLOAT: big-endian double
      SX_ASSIGN_OR_RETURN(std::string b, read_bytes(8));
      uint64_t u = 0;
      for (char c : b) u = (u << 8) | uint8_t(c);
      Mutable x = make(K::kFloat);
      std::memcpy(&x->f, &u, 8);
      stack_.push_back(x);
      return Status::ok();
    }
    case 'X':    // BINUNICODE
    case 'B': {  // BINBYTES
      SX_ASSIGN_OR_RETURN(uint32_t n, read_le<uint32_t>());
      SX_ASSIGN_OR_RETURN(std::string s, read_bytes(n));
      return push_string(std::move(s));
    }
    case 0x8c:   // SHORT_BINUNICODE
    case 'U':    // SHORT_BINSTRING
    case 'C': {  // SHORT_BINBYTES
      SX_ASSIGN_OR_RETURN(uint8_t n, read_le<uint8_t>());
      SX_ASSIGN_OR_RETURN(std::string s, read_bytes(n));
      return push_string(std::move(s));
    }
    case 'T':      // BINSTRING
    case 0x8d: {   // BINUNICODE8
      uint64_t n = 0;
      if (op == 'T') {
        SX_ASSIGN_OR_RETURN(uint32_t n32, read_le<uint32_t>());
        n = n32;
      } else {
        SX_ASSIGN_OR_RETURN(n, read_le<uint64_t>());
      }
      SX_ASSIGN_OR_RETURN(std::string s, read_bytes(n));
      return push_string(std::move(s));
    }
    case ')':  // EMPTY_TUPLE
      return push_tuple({});
    case 't': {  // TUPLE
      SX_ASSIGN_OR_RETURN(auto items, pop_to_mark());
      return push_tuple(std::move(items));
    }
    case 0x85:  // TUPLE1..3
    case 0x86:
    case 0x87: {
      std::vector<Mutable> items(size_t(op - 0x84));
      for (size_t k = items.size(); k-- > 0;) {
        SX_ASSIGN_OR_RETURN(items[k], pop());
      }
      return push_tuple(std::move(items));
    }
    case ']':  // EMPTY_LIST
      stack_.push_back(make(K::kList));
      return Status::ok();
    case 'l': {  // LIST
      SX_ASSIGN_OR_RETURN(auto items, pop_to_mark());
      Mutable l = make(K::kList);
      l->items.assign(items.begin(), items.end());
      stack_.push_back(l);
      return Status::ok();
    }
    case 'a': {  // APPEND
      SX_ASSIGN_OR_RETURN(Mutable v, pop());
      if (stack_.empty() || stack_.back()->kind != K::kList) return Status::data_loss("APPEND to a non-list");
      stack_.back()->items.push_back(v);
      return Status::ok();
    }
    case 'e': {  // APPENDS
      SX_ASSIGN_OR_RETURN(auto items, pop_to_mark());
      if (stack_.empty() || stack_.back()->kind != K::kList) return Status::data_loss("APPENDS to a non-list");
      for (const Mutable& v : items) stack_.back()->items.push_back(v);
      return Status::ok();
    }
    case '}':  // EMPTY_DICT
      stack_.push_back(make(K::kDict));
      return Status::ok();
    case 'd': {  // DICT
      SX_ASSIGN_OR_RETURN(auto items, pop_to_mark());
      Mutable d = make(K::kDict);
      SX_TRY(set_items(d, items));
      stack_.push_back(d);
      return Status::ok();
    }
    case 's': {  // SETITEM
      SX_ASSIGN_OR_RETURN(Mutable v, pop());
      SX_ASSIGN_OR_RETURN(Mutable k, pop());
      if (stack_.empty()) return Status::data_loss("SETITEM without a dict");
      return set_items(stack_.back(), {k, v});
    }
    case 'u': {  // SETITEMS
      SX_ASSIGN_OR_RETURN(auto items, pop_to_mark());
      if (stack_.empty()) return Status::data_loss("SETITEMS without a dict");
      return set_items(stack_.back(), items);
    }
    case 'c': {  // GLOBAL
      SX_ASSIGN_OR_RETURN(std::string module, read_line());
      SX_ASSIGN_OR_RETURN(std::string name, read_line());
      return global(std::move(module), std::move(name));
    }
    case 0x93: {  // STACK_GLOBAL
      SX_ASSIGN_OR_RETURN(Mutable name, pop());
      SX_ASSIGN_OR_RETURN(Mutable module, pop());
      if (name->kind != K::kString || module->kind != K::kString) return Status::data_loss("STACK_GLOBAL of non-strings");
      return global(module->text, name->text);
    }
    case 'q': {  // BINPUT
      SX_ASSIGN_OR_RETURN(uint8_t key, read_le<uint8_t>());
      return memo_put(key);
    }
    case 'r': {  // LONG_BINPUT
      SX_ASSIGN_OR_RETURN(uint32_t key, read_le<uint32_t>());
      return memo_put(key);
    }
    case 0x94:  // MEMOIZE
      return memo_put(memo_.size());
    case 'h': {  // BINGET
      SX_ASSIGN_OR_RETURN(uint8_t key, read_le<uint8_t>());
      return memo_get(key);
    }
    case 'j': {  // LONG_BINGET
      SX_ASSIGN_OR_RETURN(uint32_t key, read_le<uint32_t>());
      return memo_get(key);
    }
    case 'Q': {  // BINPERSID
      SX_ASSIGN_OR_RETURN(Mutable pid, pop());
      Mutable p = make(K::kPersistentId);
      p->items = {pid};
      stack_.push_back(p);
      return Status::ok();
    }
    case 'R':      // REDUCE
    case 0x81: {   // NEWOBJ: cls.__new__(cls, *args), symbolic like a call
      SX_ASSIGN_OR_RETURN(Mutable args, pop());
      SX_ASSIGN_OR_RETURN(Mutable callee, pop());
      return call(callee, args);
    }
    case 'b':  // BUILD: object state (e.g. a state_dict's _metadata); not needed, dropped
      return pop().status();
    default:
      return Status::data_loss("unsupported opcode (not one torch.save writes for a state_dict)");
  }
}

void put_u32(std::string& out, uint32_t v) {
  for (int k = 0; k < 4; ++k) out.push_back(char((v >> (8 * k)) & 0xff));
}

}  // namespace

StatusOr<PickleRef> parse_pickle(std::string_view bytes) { return Parser(bytes).run(); }

PickleWriter::PickleWriter() { out_ = std::string("\x80\x02", 2); }

void PickleWriter::global(std::string_view module, std::string_view name) {
  out_ += 'c';
  out_ += module;
  out_ += '\n';
  out_ += name;
  out_ += '\n';
}

void PickleWriter::string(std::string_view s) {
  out_ += 'X';
  put_u32(out_, uint32_t(s.size()));
  out_ += s;
}

void PickleWriter::integer(int64_t v) {
  if (v >= 0 && v < 256) {
    out_ += 'K';
    out_ += char(v);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    out_ += 'J';
    put_u32(out_, uint32_t(int32_t(v)));
  } else {  // LONG1 with 8 two's-complement bytes
    out_ += '\x8a';
    out_ += '\x08';
    for (int k = 0; k < 8; ++k) out_.push_back(char((uint64_t(v) >> (8 * k)) & 0xff));
  }
}

void PickleWriter::boolean(bool v) { out_ += v ? '\x88' : '\x89'; }
void PickleWriter::mark() { out_ += '('; }
void PickleWriter::tuple_from_mark() { out_ += 't'; }
void PickleWriter::empty_tuple() { out_ += ')'; }
void PickleWriter::empty_dict() { out_ += '}'; }
void PickleWriter::set_items_from_mark() { out_ += 'u'; }
void PickleWriter::reduce() { out_ += 'R'; }
void PickleWriter::persistent_id() { out_ += 'Q'; }

std::string PickleWriter::finish() {
  out_ += '.';
  return std::move(out_);
}

}  // namespace sx::storage::pickle
