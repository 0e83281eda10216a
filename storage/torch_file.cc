// torch.save's zip container (libzip) around the state_dict pickle (torch_pickle.h).
#include "storage/torch_file.h"

#include <zip.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>

#include "storage/torch_pickle.h"

namespace sx::storage {

namespace {

using pickle::PickleRef;
using pickle::PickleValue;
using Kind = PickleValue::Kind;

constexpr const char* kArchive = "archive";

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }  // after a successful zip_close the pointer is released
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;

std::string zip_open_error(int code) {
  zip_error_t e;
  zip_error_init_with_code(&e, code);
  std::string s = zip_error_strerror(&e);
  zip_error_fini(&e);
  return s;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- write ---------------------------------------------------------------------------------------

std::string state_dict_pickle(const std::vector<TorchTensor>& tensors) {
  pickle::PickleWriter w;
  w.global("collections", "OrderedDict");
  w.empty_tuple();
  w.reduce();
  w.mark();
  for (size_t k = 0; k < tensors.size(); ++k) {
    const TorchTensor& t = tensors[k];
    w.string(t.name);
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.mark();  // args of _rebuild_tensor_v2
    w.mark();  // the persistent id of the storage
    w.string("storage");
    w.global("torch", t.dtype == TorchDType::kInt64 ? "LongStorage" : "FloatStorage");
    w.string(std::to_string(k));
    w.string("cpu");
    w.integer(numel(t.shape));
    w.tuple_from_mark();
    w.persistent_id();
    w.integer(0);  // storage offset
    w.mark();
    for (int64_t d : t.shape) w.integer(d);
    w.tuple_from_mark();
    w.mark();  // contiguous strides
    std::vector<int64_t> stride(t.shape.size(), 1);
    for (size_t i = t.shape.size(); i-- > 1;) stride[i - 1] = stride[i] * t.shape[i];
    for (int64_t s : stride) w.integer(s);
    w.tuple_from_mark();
    w.boolean(false);  // requires_grad
    w.global("collections", "OrderedDict");
    w.empty_tuple();
    w.reduce();  // backward hooks
    w.tuple_from_mark();
    w.reduce();
  }
  w.set_items_from_mark();
  return w.finish();
}

// ---- read ----------------------------------------------------------------------------------------

StatusOr<std::string> read_entry(zip_t* z, const std::string& name, const std::string& path) {
  zip_int64_t index = zip_name_locate(z, name.c_str(), 0);
  if (index < 0) return Status::data_loss(path + ": no record " + name + " in the zip archive");
  zip_stat_t st;
  if (zip_stat_index(z, zip_uint64_t(index), 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
    return Status::data_loss(path + ": cannot stat " + name + ": " + zip_strerror(z));
  std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> f(zip_fopen_index(z, zip_uint64_t(index), 0), zip_fclose);
  if (!f) return Status::data_loss(path + ": cannot open " + name + ": " + zip_strerror(z));
  std::string bytes(st.size, '\0');
  zip_int64_t got = zip_fread(f.get(), bytes.data(), st.size);
  if (got < 0 || zip_uint64_t(got) != st.size)
    return Status::data_loss(path + ": " + name + " is truncated (" + std::to_string(got) + " of " +
                             std::to_string(st.size) + " bytes)");
  return bytes;
}

float half_to_float(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, frac = h & 1023;
  float v;
  if (exp == 0) v = std::ldexp(float(frac), -24);
  else if (exp == 31) v = frac ? NAN : INFINITY;
  else v = std::ldexp(float(frac | 1024), exp - 25);
  return sign ? -v : v;
}

struct StorageType {
  int bytes = 0;
  enum { kF32, kF64, kF16, kBF16, kI64 } kind = kF32;
};

StatusOr<StorageType> storage_type(const PickleValue& g) {
  static const std::map<std::string, StorageType> known = {
      {"torch.FloatStorage", {4, StorageType::kF32}},   {"torch.DoubleStorage", {8, StorageType::kF64}},
      {"torch.HalfStorage", {2, StorageType::kF16}},    {"torch.BFloat16Storage", {2, StorageType::kBF16}},
      {"torch.LongStorage", {8, StorageType::kI64}},
  };
  if (g.kind != Kind::kGlobal) return Status::data_loss("storage type is not a class");
  auto it = known.find(g.text);
  if (it == known.end()) return Status::unimplemented("storage type " + g.text + " (float/double/half/bfloat16/long only)");
  return it->second;
}

class StateDictReader {
 public:
  StateDictReader(zip_t* z, std::string path, std::string prefix)
      : z_(z), path_(std::move(path)), prefix_(std::move(prefix)) {}

  // A _rebuild_tensor_v2 call (possibly wrapped in _rebuild_parameter) -> a tensor.
  StatusOr<TorchTensor> tensor(const std::string& name, const PickleValue& v) {
    auto bad = [&](const std::string& why) { return Status::data_loss(path_ + ": tensor '" + name + "': " + why); };
    if (v.kind != Kind::kCall) return bad("not a tensor");
    const PickleValue& callee = *v.items[0];
    const PickleValue& args = *v.items[1];
    if (callee.is_global("torch._utils._rebuild_parameter") && !args.items.empty()) return tensor(name, *args.items[0]);
    if (!callee.is_global("torch._utils._rebuild_tensor_v2")) return bad("built by " + callee.text + ", not a plain tensor");
    if (args.items.size() < 4) return bad("_rebuild_tensor_v2 with " + std::to_string(args.items.size()) + " arguments");
    const PickleValue& persid = *args.items[0];
    if (persid.kind != Kind::kPersistentId || persid.items[0]->kind != Kind::kTuple ||
        persid.items[0]->items.size() != 5)
      return bad("storage is not a persistent id ('storage', type, key, location, numel)");
    const auto& pid = persid.items[0]->items;
    SX_ASSIGN_OR_RETURN(StorageType type, storage_type(*pid[1]));
    const std::string key = pid[2]->text;
    const int64_t storage_numel = pid[4]->i;
    const int64_t offset = args.items[1]->i;
    TorchTensor t;
    t.name = name;
    for (const PickleRef& d : args.items[2]->items) t.shape.push_back(d->i);
    std::vector<int64_t> stride;
    for (const PickleRef& s : args.items[3]->items) stride.push_back(s->i);
    const int64_t n = numel(t.shape);
    int64_t expect = 1;
    for (size_t i = t.shape.size(); i-- > 0;) {
      if (t.shape[i] > 1 && stride.size() == t.shape.size() && stride[i] != expect)
        return bad("not contiguous (strides given); HINT: save {k: v.contiguous()} instead");
      expect *= t.shape[i];
    }
    if (offset < 0 || offset + n > storage_numel)
      return bad("elements [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") outside its storage of " +
                 std::to_string(storage_numel));
    SX_ASSIGN_OR_RETURN(const std::string* bytes, storage(key, storage_numel * type.bytes));
    const char* p = bytes->data() + offset * type.bytes;
    if (type.kind == StorageType::kI64) {
      t.dtype = TorchDType::kInt64;
      t.ints.resize(size_t(n));
      std::memcpy(t.ints.data(), p, size_t(n) * 8);
      return t;
    }
    t.data.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      switch (type.kind) {
        case StorageType::kF32: std::memcpy(&t.data[size_t(i)], p + 4 * i, 4); break;
        case StorageType::kF64: {
          double d;
          std::memcpy(&d, p + 8 * i, 8);
          t.data[size_t(i)] = float(d);
          break;
        }
        case StorageType::kF16: {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          t.data[size_t(i)] = half_to_float(h);
          break;
        }
        case StorageType::kBF16: {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          uint32_t u = uint32_t(h) << 16;
          std::memcpy(&t.data[size_t(i)], &u, 4);
          break;
        }
        case StorageType::kI64: break;
      }
    }
    return t;
  }

 private:
  StatusOr<const std::string*> storage(const std::string& key, int64_t bytes) {
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      SX_ASSIGN_OR_RETURN(std::string data, read_entry(z_, prefix_ + "data/" + key, path_));
      it = storages_.emplace(key, std::move(data)).first;
    }
    if (int64_t(it->second.size()) < bytes)
      return Status::data_loss(path_ + ": storage " + key + " has " + std::to_string(it->second.size()) + " bytes, " +
                               std::to_string(bytes) + " expected");
    return &it->second;
  }

  zip_t* z_;
  std::string path_, prefix_;
  std::map<std::string, std::string> storages_;
};

// The state_dict: the top-level dict, or the dict it holds under "state_dict" / "model".
const PickleValue* find_state_dict(const PickleValue& top) {
  if (top.kind != Kind::kDict) return nullptr;
  for (size_t i = 0; i + 1 < top.items.size(); i += 2) {
    const PickleValue& key = *top.items[i];
    if (key.kind == Kind::kString && (key.text == "state_dict" || key.text == "model") &&
        top.items[i + 1]->kind == Kind::kDict)
      return top.items[i + 1].get();
  }
  return &top;
}

}  // namespace

Status write_torch_state_dict(const std::string& path, const std::vector<TorchTensor>& tensors) {
  // Every record's bytes, built before any is handed to libzip (it reads them at zip_close).
  std::vector<std::pair<std::string, std::string>> records;
  records.reserve(tensors.size() + 2);
  records.emplace_back(std::string(kArchive) + "/data.pkl", state_dict_pickle(tensors));
  for (size_t k = 0; k < tensors.size(); ++k) {
    const TorchTensor& t = tensors[k];
    const int64_t n = numel(t.shape);
    const bool ints = t.dtype == TorchDType::kInt64;
    if ((ints ? int64_t(t.ints.size()) : int64_t(t.data.size())) != n)
      return Status::invalid_argument("torch tensor '" + t.name + "': " + std::to_string(n) + " values expected");
    std::string bytes(size_t(n) * (ints ? 8 : 4), '\0');
    std::memcpy(bytes.data(), ints ? static_cast<const void*>(t.ints.data()) : t.data.data(), bytes.size());
    records.emplace_back(std::string(kArchive) + "/data/" + std::to_string(k), std::move(bytes));
  }
  records.emplace_back(std::string(kArchive) + "/version", "3\n");

  const std::string tmp = path + ".tmp";
  int err = 0;
  ZipPtr z(zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err));
  if (!z) return Status::unavailable(tmp + ": cannot create: " + zip_open_error(err));
  for (const auto& [name, bytes] : records) {
    zip_source_t* src = zip_source_buffer(z.get(), bytes.data(), bytes.size(), 0);
    zip_int64_t index = src ? zip_file_add(z.get(), name.c_str(), src, ZIP_FL_ENC_UTF_8) : -1;
    if (index < 0) {
      if (src) zip_source_free(src);
      std::string why = zip_strerror(z.get());
      z.reset();
      std::remove(tmp.c_str());
      return Status::internal(tmp + ": cannot add " + name + ": " + why);
    }
    zip_set_file_compression(z.get(), zip_uint64_t(index), ZIP_CM_STORE, 0);  // torch.save stores uncompressed
  }
  if (zip_close(z.get()) != 0) {
    std::string why = zip_strerror(z.get());
    z.reset();
    std::remove(tmp.c_str());
    return Status::unavailable(tmp + ": cannot write: " + why);
  }
  z.release();  // zip_close freed it
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::unavailable(path + ": cannot rename from " + tmp + ": " + std::strerror(errno));
  }
  return Status::ok();
}

StatusOr<std::vector<TorchTensor>> read_torch_state_dict(const std::string& path) {
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::not_found(path + ": cannot open");
    char magic[4] = {};
    in.read(magic, 4);
    if (std::memcmp(magic, "PK\x03\x04", 4) != 0)
      return Status::invalid_argument(
          path + ": not a zip-format torch.save file (the legacy pre-1.6 format is not read); HINT: re-save it with "
                 "/usr/bin/python3 -c \"import torch; torch.save(torch.load('" + path + "', map_location='cpu'), 'new.pt')\"");
  }
  int err = 0;
  ZipPtr z(zip_open(path.c_str(), ZIP_RDONLY, &err));
  if (!z) return Status::data_loss(path + ": not a readable zip archive: " + zip_open_error(err));
  if (zip_get_num_entries(z.get(), 0) < 1) return Status::data_loss(path + ": empty zip archive");
  // torch puts every record under one folder (its name varies); the first entry names it.
  const std::string first = zip_get_name(z.get(), 0, 0);
  const size_t slash = first.find('/');
  if (slash == std::string::npos) return Status::data_loss(path + ": record " + first + " is not inside an archive folder");
  const std::string prefix = first.substr(0, slash + 1);
  SX_ASSIGN_OR_RETURN(std::string pkl, read_entry(z.get(), prefix + "data.pkl", path));
  auto top = pickle::parse_pickle(pkl);
  if (!top.is_ok()) return top.status().with_context(path + ": data.pkl");
  const PickleValue* dict = find_state_dict(**top);
  if (dict == nullptr) return Status::data_loss(path + ": holds no dict of tensors (not a state_dict)");
  StateDictReader reader(z.get(), path, prefix);
  std::vector<TorchTensor> out;
  for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
    const PickleValue& key = *dict->items[i];
    if (key.kind != Kind::kString) return Status::data_loss(path + ": a state_dict key is not a string");
    SX_ASSIGN_OR_RETURN(TorchTensor t, reader.tensor(key.text, *dict->items[i + 1]));
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace sx::storage
