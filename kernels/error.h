// Errors: two kinds, two exits.
//  - UserError: bad input from the person at the keyboard (flags, equations, shapes, files).
//    The CLI prints its message as one line on stderr and exits with code 2.
//  - InternalError: a broken invariant or a failing library/driver call (file:line included).
//    The CLI prints it and exits with code 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace handgrad {

struct UserError : std::runtime_error {
  // A NUL inside the message (from a user's string: a path, a state dict key) is written "\0":
  // what() is a C string, and every reader would stop at it.
  explicit UserError(const std::string& message) : std::runtime_error(without_nul(message)) {}
  explicit UserError(const char* message) : std::runtime_error(message) {}

 private:
  static std::string without_nul(std::string s) {
    for (size_t i = s.find('\0'); i != std::string::npos; i = s.find('\0', i + 2)) s.replace(i, 1, "\\0");
    return s;
  }
};

struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Concatenate anything printable into a string: cat("index ", i, " out of range").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

// Messages quote bytes from the user's files and flags (npy headers, einsum subscripts, pickle
// names, state-dict keys): whatever they hold, a message shown to a person stays one readable
// line -- control characters and bytes outside ASCII escaped (\xNN), at most 400 characters.
inline std::string one_line(const std::string& msg) {
  constexpr size_t kMax = 400;
  std::string out;
  for (unsigned char c : msg) {
    if (out.size() >= kMax) {
      out += "...";
      break;
    }
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c >= 0x7f) out += cat("\\x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
    else out += static_cast<char>(c);
  }
  return out;
}

}  // namespace handgrad

// Throw a UserError when `cond` is false: HG_REQUIRE(n > 0, "--n must be positive, got ", n).
#define HG_REQUIRE(cond, ...)                                            \
  do {                                                                   \
    if (!(cond)) throw ::handgrad::UserError(::handgrad::cat(__VA_ARGS__)); \
  } while (0)

// Internal invariant: a failure is a bug in handgrad, reported with file:line.
#define HG_ASSERT(cond, ...)                                                         \
  do {                                                                               \
    if (!(cond))                                                                     \
      throw ::handgrad::InternalError(::handgrad::cat(__FILE__, ":", __LINE__,       \
                                                      ": internal error: ", #cond,    \
                                                      " ", ##__VA_ARGS__));          \
  } while (0)
