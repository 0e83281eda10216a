#include "dataplane/prep_inputs.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace sx::dataplane {
namespace {

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n\f\v") == std::string::npos; }

void strip_cr(std::string& s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n')) s.pop_back();
}

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

bool hidden(const fs::path& p) {
  std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

}  // namespace

std::string BadInput::to_string() const {
  std::string s = where;
  if (!file.empty() && file != where) s += ": " + file;
  return s + ": " + reason;
}

StatusOr<ListFile> parse_list_file(const std::string& list_path, const std::string& root, int num_classes,
                                   bool allow_outside_root) {
  std::ifstream in(list_path, std::ios::binary);
  if (!in) return Status::not_found("list file " + list_path + ": cannot open");
  ListFile out;
  std::string line;
  int64_t lineno = 0;
  const std::string name = fs::path(list_path).filename().string();
  while (std::getline(in, line)) {
    ++lineno;
    strip_cr(line);
    if (is_blank(line)) {
      ++out.blank_lines;
      continue;
    }
    const std::string where = name + " line " + std::to_string(lineno);
    // Trailing spaces/tabs would make the "label" empty; ignore them.
    size_t end = line.find_last_not_of(" \t");
    line.resize(end + 1);
    size_t sep = line.find_last_of(" \t");
    if (sep == std::string::npos || sep == 0) {
      out.bad.push_back({lineno, where, "", "expected '<relative/path> <label>', got \"" + line + "\""});
      continue;
    }
    std::string rel = line.substr(0, sep);
    std::string label_text = line.substr(sep + 1);
    int64_t label = 0;
    auto [ptr, ec] = std::from_chars(label_text.data(), label_text.data() + label_text.size(), label);
    if (ec != std::errc() || ptr != label_text.data() + label_text.size()) {
      out.bad.push_back({lineno, where, rel, "label '" + label_text + "' is not an integer"});
      continue;
    }
    if (label < 0 || (num_classes > 0 && label >= num_classes) || label > INT32_MAX) {
      std::string range = num_classes > 0 ? "[0, " + std::to_string(num_classes) + ")" : "[0, ...)";
      out.bad.push_back({lineno, where, rel, "label " + label_text + " is out of range " + range +
                                                 (num_classes > 0 ? " (--num-classes " + std::to_string(num_classes) + ")" : "")});
      continue;
    }
    if (!allow_outside_root) {
      const fs::path norm = fs::path(rel).lexically_normal();
      if (norm.is_absolute() || norm.empty() || *norm.begin() == "..") {
        out.bad.push_back({lineno, where, rel,
                           "path leaves " + (root.empty() ? std::string("the current directory") : "--root " + root) +
                               " (absolute or '..'). HINT: --allow-outside-root if that is intended"});
        continue;
      }
    }
    PrepItem item;
    item.path = root.empty() ? rel : (fs::path(root) / rel).string();
    item.display = rel;
    item.line = lineno;
    item.order = lineno;
    item.label = static_cast<int32_t>(label);
    out.max_label = std::max(out.max_label, item.label);
    out.items.push_back(std::move(item));
  }
  if (in.bad()) return Status::data_loss("list file " + list_path + ": read error after line " + std::to_string(lineno));
  return out;
}

StatusOr<FolderTree> walk_image_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return Status::not_found("image folder " + root + ": not a directory");
  FolderTree tree;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && !hidden(e.path())) tree.class_names.push_back(e.path().filename().string());
  if (ec) return Status::unavailable("image folder " + root + ": " + ec.message());
  std::sort(tree.class_names.begin(), tree.class_names.end());
  if (tree.class_names.empty())
    return Status::invalid_argument("image folder " + root + ": has no class sub-folders (expected root/<class>/<image>)");
  int64_t order = 0;
  for (size_t c = 0; c < tree.class_names.size(); ++c) {
    const fs::path dir = fs::path(root) / tree.class_names[c];
    std::vector<std::string> files;
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file()) continue;
      if (!has_image_extension(it->path())) {
        ++tree.ignored_files;
        continue;
      }
      files.push_back(fs::relative(it->path(), root).string());
    }
    if (ec) return Status::unavailable("image folder " + dir.string() + ": " + ec.message());
    std::sort(files.begin(), files.end());
    for (std::string& rel : files) {
      PrepItem item;
      item.path = (fs::path(root) / rel).string();
      item.display = rel;
      item.order = ++order;
      item.label = static_cast<int32_t>(c);
      tree.items.push_back(std::move(item));
    }
  }
  return tree;
}

StatusOr<std::vector<std::string>> read_class_names(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::not_found("class names file " + path + ": cannot open");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    strip_cr(line);
    names.push_back(line);
  }
  while (!names.empty() && is_blank(names.back())) names.pop_back();
  for (size_t i = 0; i < names.size(); ++i)
    if (is_blank(names[i]))
      return Status::invalid_argument("class names file " + path + " line " + std::to_string(i + 1) + ": empty name");
  if (names.empty()) return Status::invalid_argument("class names file " + path + ": no names");
  return names;
}

}  // namespace sx::dataplane
