// defines: sx::Status, sx::StatusOr<T>, SX_TRY, SX_ASSIGN_OR_RETURN, SX_CHECK_ARG.
// One error type for the whole project. Library code returns Status; each binary's main
// turns it into a message and an exit code. Add a "HINT: ..." to the message when the fix is known.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace sx {

enum class StatusCode { kOk = 0, kInvalidArgument, kNotFound, kDataLoss, kUnavailable, kInternal, kUnimplemented };

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status invalid_argument(std::string msg) { return Status(StatusCode::kInvalidArgument, std::move(msg)); }
  static Status not_found(std::string msg) { return Status(StatusCode::kNotFound, std::move(msg)); }
  static Status data_loss(std::string msg) { return Status(StatusCode::kDataLoss, std::move(msg)); }
  static Status unavailable(std::string msg) { return Status(StatusCode::kUnavailable, std::move(msg)); }
  static Status internal(std::string msg) { return Status(StatusCode::kInternal, std::move(msg)); }
  static Status unimplemented(std::string msg) { return Status(StatusCode::kUnimplemented, std::move(msg)); }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Prefixes context, e.g. status.with_context("loading stage2.block0.conv2.weight").
  Status with_context(const std::string& context) const {
    return is_ok() ? *this : Status(code_, context + ": " + message_);
  }
  std::string to_string() const;

 private:
  Status(StatusCode code, std::string msg) : code_(code), message_(std::move(msg)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

const char* status_code_name(StatusCode code);

inline std::string Status::to_string() const {
  return is_ok() ? std::string("OK") : std::string(status_code_name(code_)) + ": " + message_;
}

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}                   // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {}           // NOLINT: implicit by design
  bool is_ok() const { return status_.is_ok() && value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace sx

#define SX_CONCAT_INNER(a, b) a##b
#define SX_CONCAT(a, b) SX_CONCAT_INNER(a, b)

// Returns early from the enclosing function when expr is not OK.
#define SX_TRY(expr)                          \
  do {                                        \
    ::sx::Status sx_try_status_ = (expr);     \
    if (!sx_try_status_.is_ok()) return sx_try_status_; \
  } while (0)

// SX_ASSIGN_OR_RETURN(auto x, make_x());
#define SX_ASSIGN_OR_RETURN(lhs, expr) SX_ASSIGN_OR_RETURN_IMPL(SX_CONCAT(sx_or_, __LINE__), lhs, expr)
#define SX_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.is_ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

// Argument check that names the expression, file and line.
#define SX_CHECK_ARG(cond, msg)                                                                   \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      return ::sx::Status::invalid_argument(std::string(msg) + " (check `" #cond "` failed at " + \
                                            __FILE__ + ":" + std::to_string(__LINE__) + ")");     \
  } while (0)
