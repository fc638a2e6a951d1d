#include "host/memory.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

#include "kernels/error.h"

namespace handgrad {

namespace {

std::atomic<uint64_t> g_override{0};

// The first number in a file (a cgroup knob), or max() for "max" / a missing file.
uint64_t read_number(const char* path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s.empty() || !std::isdigit(static_cast<unsigned char>(s[0])))
    return std::numeric_limits<uint64_t>::max();
  return std::strtoull(s.c_str(), nullptr, 10);
}

uint64_t mem_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return std::numeric_limits<uint64_t>::max();
}

}  // namespace

uint64_t parse_memory_size(const std::string& text, const char* flag) {
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  double scale = 1;
  const std::string unit = text.substr(used);
  if (unit == "" || unit == "B") scale = 1;
  else if (unit == "k" || unit == "K" || unit == "KiB") scale = 1024.0;
  else if (unit == "M" || unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TiB") scale = 1024.0 * 1024 * 1024 * 1024;
  else used = 0;
  HG_REQUIRE(used > 0 && text.find_first_of("xX") == std::string::npos && v >= 0 && v * scale < 1.8e19, flag, ": '",
             text, "' is not a size (e.g. 8G, 512M, 100000)");
  HG_REQUIRE(v * scale >= 1, flag, ": the memory budget must be at least one byte, got '", text, "'");
  return static_cast<uint64_t>(v * scale);
}

void set_memory_budget(uint64_t bytes) { g_override = bytes; }

MemoryBudget memory_budget() {
  if (const uint64_t o = g_override.load()) return {o, "set by --max-memory"};
  if (const char* env = std::getenv("HANDGRAD_MAX_MEMORY"); env && *env)
    return {parse_memory_size(env, "HANDGRAD_MAX_MEMORY"), "set by HANDGRAD_MAX_MEMORY"};
  MemoryBudget b{mem_available(), "the memory available now; --max-memory or HANDGRAD_MAX_MEMORY sets it"};
  uint64_t limit = read_number("/sys/fs/cgroup/memory.max"), used = read_number("/sys/fs/cgroup/memory.current");
  if (limit == std::numeric_limits<uint64_t>::max()) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    if (limit >= (uint64_t(1) << 60)) limit = std::numeric_limits<uint64_t>::max();  // v1's "no limit"
  }
  if (limit != std::numeric_limits<uint64_t>::max()) {
    const uint64_t left = used == std::numeric_limits<uint64_t>::max() ? limit : (limit > used ? limit - used : 0);
    if (left < b.bytes)
      b = {left, "what the cgroup's memory limit leaves; --max-memory or HANDGRAD_MAX_MEMORY sets it"};
  }
  return b;
}

std::string human_bytes(uint64_t bytes) {
  char buf[48];
  if (bytes >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  else if (bytes >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  return buf;
}

void require_memory(uint64_t bytes, const std::string& what) {
  if (bytes < kMemoryCheckFrom) return;
  const MemoryBudget b = memory_budget();
  if (bytes > b.bytes)
    throw UserError(cat(what, " needs ", human_bytes(bytes), ", more than the memory budget of ", human_bytes(b.bytes),
                        " (", b.source, ")"));
}

}  // namespace handgrad
