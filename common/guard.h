// defines: sx::guarded_main, sx::guarded — the exception boundary of every binary's `main` and of every
// thread we start. Library code reports errors as Status; what still escapes as an exception (above
// all std::bad_alloc from a size nobody expected) becomes one clear line and an exit code / a Status
// instead of std::terminate.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include "common/status.h"

namespace sx {

// Exit code of a main that ended by an exception.
inline constexpr int kExitException = 3;

// The text for the exception being handled (call inside a catch block).
inline std::string current_exception_text() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return "out of memory (std::bad_alloc): a size read from an input, or the job, needs more memory than there is";
  } catch (const std::exception& e) {
    return std::string("unexpected exception: ") + e.what();
  } catch (...) {
    return "unexpected exception of unknown type";
  }
}

// int main(int argc, char** argv) { return sx::guarded_main("sx_prep", [&] { return real_main(argc, argv); }); }
template <typename F>
int guarded_main(const char* program, F&& body) {
  try {
    return std::forward<F>(body)();
  } catch (...) {
    std::fprintf(stderr, "%s: %s\n", program, current_exception_text().c_str());
    std::fflush(stderr);
    return kExitException;
  }
}

// Runs a Status-returning body on a thread boundary: an exception becomes kInternal naming `where`.
template <typename F>
Status guarded(const std::string& where, F&& body) {
  try {
    return std::forward<F>(body)();
  } catch (...) {
    return Status::internal(where + ": " + current_exception_text());
  }
}

}  // namespace sx
