// The memory budget: how much host memory one allocation may ask for before handgrad refuses it
// with a message, instead of letting the kernel's OOM killer end the process (SIGKILL, nothing
// saved) once overcommitted pages are touched.
//
// The budget is --max-memory (set_memory_budget) or $HANDGRAD_MAX_MEMORY when given, less what
// handgrad holds already (a set budget bounds everything handgrad holds at once); otherwise what
// this process may still use: the smaller of what its memory cgroups leave and the system's
// MemAvailable (which what the process holds has lowered already). The cgroups are the process's
// own (/proc/self/cgroup: the v2 hierarchy and the v1 memory controller), each level up to the
// root: the least of limit less usage (v2 memory.max / memory.current, v1 memory.limit_in_bytes /
// usage_in_bytes). It is read afresh at each check: every allocation under a set budget, only
// large ones otherwise (reading the system's figures costs a few files).
#pragma once
#include <cstdint>
#include <string>
#include <utility>

namespace handgrad {

// Allocations from this size up are checked against the budget (smaller ones cannot matter),
// every one under a budget that is set (--max-memory, $HANDGRAD_MAX_MEMORY).
constexpr uint64_t kMemoryCheckFrom = uint64_t(64) << 20;

// "8G", "512M", "100k", "123456" (bytes); a UserError for anything else (0 and hex included).
uint64_t parse_memory_size(const std::string& text, const char* flag);
void set_memory_budget(uint64_t bytes);

// The host memory handgrad holds now: its buffers in use (Buffer counts them as it takes and gives
// them back) and the copies the Python module makes of a caller's arrays (HostBytesHeld).
uint64_t host_bytes_held();
void count_host_bytes_held(int64_t delta);
// `bytes` counted as held for this object's life.
class HostBytesHeld {
 public:
  HostBytesHeld() = default;
  explicit HostBytesHeld(uint64_t bytes) : bytes_(bytes) { count_host_bytes_held(static_cast<int64_t>(bytes)); }
  ~HostBytesHeld() { count_host_bytes_held(-static_cast<int64_t>(bytes_)); }
  HostBytesHeld(HostBytesHeld&& o) noexcept : bytes_(o.bytes_) { o.bytes_ = 0; }
  HostBytesHeld& operator=(HostBytesHeld&& o) noexcept {
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  HostBytesHeld(const HostBytesHeld&) = delete;
  HostBytesHeld& operator=(const HostBytesHeld&) = delete;

 private:
  uint64_t bytes_ = 0;
};

// The budget given by --max-memory or $HANDGRAD_MAX_MEMORY (0 when none is).
uint64_t memory_budget_set();

struct MemoryBudget {
  uint64_t bytes = 0;
  std::string source;  // where it comes from, for messages ("set by --max-memory", ...)
};
MemoryBudget memory_budget();

// Throws UserError ("<what> needs 16.0 GiB, more than the memory budget of 3.2 GiB (the memory
// available now; --max-memory or HANDGRAD_MAX_MEMORY sets it)") when `bytes` exceed the budget.
void require_memory(uint64_t bytes, const std::string& what);

// Allocations made one after another for one purpose (a model's buffers for a batch size), checked
// as a whole: each one alone may be far under the budget while all of them are not. Against the
// budget as it was when their total first mattered (64 MiB), since the memory they take lowers "the
// memory available now" as they are made; a set budget less what was held when the tally began.
class MemoryTally {
 public:
  explicit MemoryTally(std::string what) : what_(std::move(what)), held_before_(host_bytes_held()) {}
  // Counts `bytes` more; throws UserError as require_memory does when the total exceeds the budget.
  void add(uint64_t bytes);

 private:
  std::string what_;
  uint64_t held_before_;
  uint64_t total_ = 0;
  bool have_budget_ = false;
  MemoryBudget budget_;
};

// "16.0 GiB", "512.0 MiB", "100 bytes".
std::string human_bytes(uint64_t bytes);

}  // namespace handgrad
