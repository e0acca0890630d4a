// Errors: one exception type with a kind; the Python binding maps each kind to the matching
// ember.EmberError subclass. Messages start with the area: "[reshape] ...".
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ember {

enum class ErrorKind { Model, Input, UnsupportedOp, Internal };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(ErrorKind kind, const Args&... args) {
  throw Error(kind, str_cat(args...));
}

}  // namespace ember

// EMBER_CHECK(cond, kind, message parts...): throws ember::Error when cond is false.
#define EMBER_CHECK(cond, kind, ...)                       \
  do {                                                     \
    if (!(cond)) ::ember::fail(::ember::ErrorKind::kind, __VA_ARGS__); \
  } while (0)
