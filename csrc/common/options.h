// Named settings as strings (a transport's or the core's tuning), read with a
// type and a fallback. The binding fills them from Python's options dict, the
// native tests from literals; a value that does not parse is a ValueError.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <map>
#include <string>

#include "error.h"

namespace pycomm {

class Options {
 public:
  void set(const std::string& key, const std::string& value) { values_[key] = value; }
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  std::string get(const std::string& key, const std::string& fallback) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
  }
  long long get_int(const std::string& key, long long fallback) const {
    auto it = values_.find(key);
    if (it == values_.end()) return fallback;
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (errno || it->second.empty() || *end) bad(key, it->second, "an integer");
    return v;
  }
  double get_double(const std::string& key, double fallback) const {
    auto it = values_.find(key);
    if (it == values_.end()) return fallback;
    errno = 0;
    char* end = nullptr;
    double v = std::strtod(it->second.c_str(), &end);
    if (errno || it->second.empty() || *end) bad(key, it->second, "a number");
    return v;
  }
  size_t get_size(const std::string& key, size_t fallback) const {
    long long v = get_int(key, static_cast<long long>(fallback));
    if (v < 0) bad(key, values_.at(key), "a size >= 0");
    return static_cast<size_t>(v);
  }

 private:
  [[noreturn]] static void bad(const std::string& key, const std::string& value, const char* what) {
    throw_error(ErrorKind::kValue, "option " + key + " must be " + what + ", got '" + value + "'");
  }
  std::map<std::string, std::string> values_;
};

}  // namespace pycomm
