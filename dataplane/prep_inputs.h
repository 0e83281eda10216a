// defines: sx::dataplane::PrepItem, BadInput, parse_list_file, walk_image_folder, read_class_names.
// Turns a list file or an image-folder tree into the ordered items sx_prep converts. Problems
// found here (a bad label, a line without a label) come back as BadInput records, in input order,
// so the caller either stops at the first one or reports them all with --skip-bad.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::dataplane {

struct PrepItem {
  std::string path;     // file to read
  std::string display;  // what messages show: the list entry, or the path relative to the root
  int64_t line = 0;     // 1-based line in the list file; 0 in folder mode
  int64_t order = 0;    // position in the input (line number, or walk position)
  int32_t label = 0;
};

struct BadInput {
  int64_t order = 0;
  std::string where;   // "train_list.txt line 17" or the folder-relative path
  std::string file;    // image path as written in the input ("" when the line has none)
  std::string reason;  // what was wrong
  std::string to_string() const;  // "train_list.txt line 17: images/a.jpg: label 'x' is not an integer"
};

struct ListFile {
  std::vector<PrepItem> items;
  std::vector<BadInput> bad;
  int32_t max_label = -1;
  int64_t blank_lines = 0;
};

// ImageNet list-file format (PaddleClas): "relative/path.jpeg label" per line, path = everything
// before the last space (so paths may contain spaces). CRLF endings and blank lines are accepted.
// num_classes > 0 range-checks labels to [0, num_classes); otherwise only label >= 0.
// A path that leaves the root (absolute, or `..` after normalising; the current directory when
// root is empty) is a BadInput unless allow_outside_root.
StatusOr<ListFile> parse_list_file(const std::string& list_path, const std::string& root, int num_classes,
                                   bool allow_outside_root = false);

struct FolderTree {
  std::vector<PrepItem> items;
  std::vector<std::string> class_names;  // sorted folder names; label = index
  int64_t ignored_files = 0;             // files that are not .jpg/.jpeg/.png
};

// root/<class>/**/<image>; classes by byte-wise sorted folder name, files by sorted relative path.
// Hidden files and folders (".name") are left out.
StatusOr<FolderTree> walk_image_folder(const std::string& root);

// One class name per line (CRLF accepted, trailing blank lines ignored).
StatusOr<std::vector<std::string>> read_class_names(const std::string& path);

}  // namespace sx::dataplane
