#include "host/memory.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <sys/stat.h>

#include "host/tensor.h"
#include "kernels/error.h"

namespace handgrad {

namespace {

std::atomic<uint64_t> g_override{0};
std::atomic<int64_t> g_held{0};

// The first bytes of a file, at most `limit`: the files read here are a line or a few, and a
// path moved by a test hook may name an endless one (/dev/zero).
std::string read_head(const char* path, size_t limit) {
  std::ifstream f(path, std::ios::binary);
  std::string s(limit, '\0');
  f.read(s.data(), static_cast<std::streamsize>(limit));
  s.resize(static_cast<size_t>(f.gcount()));
  return s;
}

// The first number in a file (a cgroup knob), or max() for "max" / a missing file.
uint64_t read_number(const char* path) {
  const std::string s = read_head(path, 64);
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return std::numeric_limits<uint64_t>::max();
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

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The least that `limit_file` less `used_file` leaves at any level from `mount` + `path` (the
// process's cgroup) up to the hierarchy's root: a parent's limit binds its children too. A level
// whose folder is missing is skipped (inside a cgroup namespace the path is relative to a root the
// mount may not show). `huge` and above count as no limit (cgroup v1 writes 2^63 rounded down to
// a page for none).
uint64_t walk_up(const std::string& mount, std::string path, const char* limit_file, const char* used_file,
                 uint64_t huge) {
  uint64_t left = kNoLimit;
  if (path.empty() || path[0] != '/') path = "/" + path;
  while (true) {
    const std::string dir = mount + (path == "/" ? "" : path);
    if (is_dir(dir)) {
      const uint64_t limit = read_number((dir + "/" + limit_file).c_str());
      if (limit < huge) {
        const uint64_t used = read_number((dir + "/" + used_file).c_str());
        const uint64_t here = used == kNoLimit ? limit : (limit > used ? limit - used : 0);
        if (here < left) left = here;
      }
    }
    if (path == "/") break;
    path = path.substr(0, path.rfind('/'));
    if (path.empty()) path = "/";
  }
  return left;
}

// What the memory cgroups this process is in leave it, from /proc/self/cgroup: the v2 hierarchy
// ("0::/path"; memory.max, memory.current) and the v1 memory controller ("N:memory:/path" or a
// list holding "memory"; memory.limit_in_bytes, memory.usage_in_bytes), whichever binds.
// HANDGRAD_CGROUP_FS and HANDGRAD_PROC_CGROUP move the two roots (tests fake both layouts).
uint64_t cgroup_memory_left() {
  const char* fs_env = std::getenv("HANDGRAD_CGROUP_FS");
  const char* proc_env = std::getenv("HANDGRAD_PROC_CGROUP");
  const std::string fs = fs_env && *fs_env ? fs_env : "/sys/fs/cgroup";
  std::istringstream f(read_head(proc_env && *proc_env ? proc_env : "/proc/self/cgroup", 64 * 1024));
  uint64_t left = kNoLimit;
  std::string line;
  while (std::getline(f, line)) {
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    uint64_t here = kNoLimit;
    if (id == "0" && controllers.empty()) {  // v2: mounted at the root (unified) or at unified/ (hybrid)
      const std::string mount = is_dir(fs + "/unified") && !std::ifstream(fs + "/cgroup.controllers") ? fs + "/unified" : fs;
      here = walk_up(mount, path, "memory.max", "memory.current", kNoLimit);
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {  // v1
      const std::string mount = is_dir(fs + "/memory") ? fs + "/memory" : fs + "/" + controllers;
      here = walk_up(mount, path, "memory.limit_in_bytes", "memory.usage_in_bytes", uint64_t(1) << 60);
    }
    if (here < left) left = here;
  }
  return left;
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

uint64_t host_bytes_held() { return static_cast<uint64_t>(std::max<int64_t>(g_held.load(), 0)); }
void count_host_bytes_held(int64_t delta) { g_held += delta; }

uint64_t memory_budget_set() {
  if (const uint64_t o = g_override.load()) return o;
  if (const char* env = std::getenv("HANDGRAD_MAX_MEMORY"); env && *env) return parse_memory_size(env, "HANDGRAD_MAX_MEMORY");
  return 0;
}

namespace {
// What a set budget leaves when handgrad holds `held` bytes.
MemoryBudget set_budget_beside(uint64_t set, uint64_t held) {
  const char* by = g_override.load() ? "--max-memory" : "HANDGRAD_MAX_MEMORY";
  if (held == 0) return {set, cat("set by ", by)};
  return {set > held ? set - held : 0, cat(human_bytes(set), " set by ", by, ", less ", human_bytes(held), " handgrad holds")};
}

// The budget when handgrad holds `held` bytes.
MemoryBudget budget_beside(uint64_t held) {
  if (const uint64_t set = memory_budget_set()) return set_budget_beside(set, held);
  MemoryBudget b{mem_available(), "the memory available now; --max-memory or HANDGRAD_MAX_MEMORY sets it"};
  if (const uint64_t left = cgroup_memory_left(); left < b.bytes)
    b = {left, "what the cgroup's memory limit leaves; --max-memory or HANDGRAD_MAX_MEMORY sets it"};
  return b;
}
}  // namespace

MemoryBudget memory_budget() { return budget_beside(host_bytes_held()); }

std::string human_bytes(uint64_t bytes) {
  char buf[48];
  if (bytes >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  else if (bytes >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  return buf;
}

namespace {
void refuse_over_budget(uint64_t bytes, const MemoryBudget& b, const std::string& what, const char* needs) {
  if (bytes <= b.bytes) return;
  std::string need = human_bytes(bytes), have = human_bytes(b.bytes);
  if (need == have) need = cat(bytes, " bytes"), have = cat(b.bytes, " bytes");  // 1.0 GiB over 1.0 GiB says nothing
  throw UserError(cat(what, needs, need, ", more than the memory budget of ", have, " (", b.source, ")"));
}
}  // namespace

void require_memory(uint64_t bytes, const std::string& what) {
  // A set budget is cheap to read: under it every allocation counts (a model's hundreds of small
  // buffers took a 300 MiB budget 14 MiB past itself), and so do the freed blocks the allocator
  // keeps for reuse, given back first when they would take this one past the budget (a 420 MiB
  // einsum result freed before a 381 MiB copy: 802 MiB under 500 MiB).
  if (const uint64_t set = memory_budget_set()) {
    if (host_bytes_held() + cached_memory(Device::CPU) + bytes > set) release_cached_memory(Device::CPU);
    // (the message is made only for a refusal: this runs for every allocation)
    if (const uint64_t held = host_bytes_held(); held + bytes > set)
      refuse_over_budget(bytes, set_budget_beside(set, held), what, " needs ");
    return;
  }
  if (bytes >= kMemoryCheckFrom) refuse_over_budget(bytes, memory_budget(), what, " needs ");
}

void MemoryTally::add(uint64_t bytes) {
  total_ = bytes > UINT64_MAX - total_ ? UINT64_MAX : total_ + bytes;
  if (total_ < kMemoryCheckFrom) return;
  // The first large total, before its allocation: the budget beside what was held before the first
  // of these allocations (those made since are in the total).
  if (!have_budget_) budget_ = budget_beside(held_before_), have_budget_ = true;
  refuse_over_budget(total_, budget_, what_, " needs at least ");  // the total so far: the rest is not sized yet
}

}  // namespace handgrad
