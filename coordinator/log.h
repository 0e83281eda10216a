// defines: sx::coord::log_info, log_warn, log_error, num_str — timestamped lines on stderr, prefixed with
// the component ("sx_coord" or "coord-client rank N") so interleaved logs say who spoke.
#pragma once

#include <string>

namespace sx::coord {

void log_line(const char* level, const std::string& who, const std::string& msg);
// "0.1", "10", "1e-05": doubles for humans (std::to_string prints "0.100000").
std::string num_str(double x);

inline void log_info(const std::string& who, const std::string& msg) { log_line("INFO", who, msg); }
inline void log_warn(const std::string& who, const std::string& msg) { log_line("WARN", who, msg); }
inline void log_error(const std::string& who, const std::string& msg) { log_line("ERROR", who, msg); }

}  // namespace sx::coord
