// The memory budget's cgroup reading (host/memory.h), on fake cgroup trees: a v1 memory controller
// at a nested path (this CI machine's layout), a v2 hierarchy, a hybrid one, a limit that binds at
// a parent, and a cgroup-namespaced path that the mount does not show.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "host/memory.h"
#include "host/tensor.h"
#include "kernels/error.h"

using namespace handgrad;
namespace fs = std::filesystem;

namespace {

// The unit of the fake limits: small enough that the machine's MemAvailable never binds first.
constexpr uint64_t kUnit = uint64_t(256) << 20;

// A temporary cgroup tree and /proc/self/cgroup, pointed to by the environment while it lives.
class FakeCgroups {
 public:
  FakeCgroups() : root_(fs::temp_directory_path() / ("hg-cgroup-" + std::to_string(::getpid()))) {
    fs::remove_all(root_);
    fs::create_directories(root_ / "fs");
    setenv("HANDGRAD_CGROUP_FS", (root_ / "fs").c_str(), 1);
    setenv("HANDGRAD_PROC_CGROUP", (root_ / "cgroup").c_str(), 1);
    setenv("HANDGRAD_MAX_MEMORY", "", 1);  // the budget comes from the cgroups (and MemAvailable)
  }
  ~FakeCgroups() {
    unsetenv("HANDGRAD_CGROUP_FS");
    unsetenv("HANDGRAD_PROC_CGROUP");
    fs::remove_all(root_);
  }
  void proc(const std::string& text) { std::ofstream(root_ / "cgroup") << text; }
  // Writes `value` into fs/<dir>/<file>, making the folders.
  void knob(const std::string& dir, const std::string& file, const std::string& value) {
    fs::create_directories(root_ / "fs" / dir);
    std::ofstream(root_ / "fs" / dir / file) << value << "\n";
  }

 private:
  fs::path root_;
};

uint64_t budget() { return memory_budget().bytes; }
bool from_cgroup() { return memory_budget().source.find("cgroup") != std::string::npos; }

}  // namespace

TEST(MemoryBudget, CgroupV1MemoryControllerAtANestedPath) {
  FakeCgroups cg;
  cg.proc("9:systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n");
  cg.knob("memory", "memory.limit_in_bytes", "9223372036854771712");  // the root: no limit
  cg.knob("memory/process_api/abc", "memory.limit_in_bytes", std::to_string(kUnit));
  cg.knob("memory/process_api/abc", "memory.usage_in_bytes", std::to_string(kUnit / 4));
  cg.knob("unified", "cgroup.controllers", "");
  EXPECT_EQ(budget(), kUnit - kUnit / 4);
  EXPECT_TRUE(from_cgroup());
  EXPECT_THROW(require_memory(16 * kUnit, "a 4 GiB einsum output"), UserError);
  EXPECT_NO_THROW(require_memory(100 << 20, "100 MiB"));
}

TEST(MemoryBudget, CgroupV1LimitOfAParentBinds) {
  FakeCgroups cg;
  cg.proc("4:memory:/a/b\n");
  cg.knob("memory/a", "memory.limit_in_bytes", std::to_string(2 * kUnit));
  cg.knob("memory/a", "memory.usage_in_bytes", std::to_string(kUnit + kUnit / 2));
  cg.knob("memory/a/b", "memory.limit_in_bytes", "9223372036854771712");
  cg.knob("memory/a/b", "memory.usage_in_bytes", std::to_string(kUnit));
  EXPECT_EQ(budget(), kUnit / 2);  // the parent's 2 kUnit less its children's 1.5 kUnit
}

TEST(MemoryBudget, CgroupV2UnifiedAndHybrid) {
  {
    FakeCgroups cg;
    cg.proc("0::/user.slice/job\n");
    cg.knob("", "cgroup.controllers", "cpu memory");
    cg.knob("user.slice/job", "memory.max", std::to_string(3 * kUnit));
    cg.knob("user.slice/job", "memory.current", std::to_string(kUnit));
    cg.knob("user.slice", "memory.max", "max");
    EXPECT_EQ(budget(), 2 * kUnit);
    EXPECT_TRUE(from_cgroup());
  }
  {
    FakeCgroups cg;  // hybrid: v2 mounted at unified/, the limit there
    cg.proc("4:memory:/\n0::/job\n");
    cg.knob("unified", "cgroup.controllers", "");
    cg.knob("unified/job", "memory.max", std::to_string(kUnit));
    cg.knob("unified/job", "memory.current", "0");
    cg.knob("memory", "memory.limit_in_bytes", "9223372036854771712");
    EXPECT_EQ(budget(), kUnit);
  }
}

// In a cgroup namespace /proc/self/cgroup names a path the mount does not have: the levels that
// exist (the mount's root) still count, and nothing is invented.
TEST(MemoryBudget, CgroupPathTheMountDoesNotShow) {
  FakeCgroups cg;
  cg.proc("4:memory:/outside/the/namespace\n");
  cg.knob("memory", "memory.limit_in_bytes", std::to_string(kUnit));
  cg.knob("memory", "memory.usage_in_bytes", std::to_string(kUnit / 2));
  EXPECT_EQ(budget(), kUnit / 2);
  cg.proc("garbage without colons\n4:memory\n");
  EXPECT_FALSE(from_cgroup());  // nothing readable: MemAvailable alone
}

// Buffers made one after another for one purpose are checked as a whole, against the budget as it
// was when their total first mattered (the memory they take lowers what is available as they are
// made: counting it again would refuse half as much).
TEST(MemoryBudget, TallyChecksTheWholeAgainstTheBudgetItStartedWith) {
  setenv("HANDGRAD_MAX_MEMORY", "1G", 1);
  MemoryTally tally("the test's buffers");
  tally.add(uint64_t(600) << 20);
  setenv("HANDGRAD_MAX_MEMORY", "500M", 1);  // as if those 600 MiB had been taken from what is left
  EXPECT_NO_THROW(tally.add(uint64_t(300) << 20));  // 900 MiB of the first 1 GiB
  try {
    tally.add(uint64_t(200) << 20);
    ADD_FAILURE() << "1.1 GiB in all passed a 1 GiB budget";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("the test's buffers needs at least 1.1 GiB, more than the memory budget of 1.0 GiB"),
              std::string::npos) << e.what();
  }
  // Under 64 MiB in all the budget is not even read (an unreadable one would throw).
  setenv("HANDGRAD_MAX_MEMORY", "junk", 1);
  MemoryTally small("small buffers");
  for (int i = 0; i < 63; ++i) EXPECT_NO_THROW(small.add(uint64_t(1) << 20));
  EXPECT_THROW(small.add(uint64_t(1) << 20), UserError);  // 64 MiB: read, and refused as unreadable
  unsetenv("HANDGRAD_MAX_MEMORY");
}

// A set budget bounds what handgrad holds at once: buffers alive count against it, in a message
// that says so, and a tally started with them held counts them once. The host pool's cached
// blocks are given back before an allocation would take held + cached past the budget.
TEST(MemoryBudget, SetBudgetCountsWhatIsHeld) {
  release_cached_memory(Device::CPU);
  const uint64_t held_before = host_bytes_held();
  setenv("HANDGRAD_MAX_MEMORY", "1G", 1);
  {
    Tensor held = Tensor::empty({int64_t(150) << 20});  // 600 MiB
    EXPECT_EQ(host_bytes_held(), held_before + (uint64_t(600) << 20));
    EXPECT_NO_THROW(require_memory(uint64_t(300) << 20, "a smaller one"));
    try {
      require_memory(uint64_t(500) << 20, "a second one");
      ADD_FAILURE() << "600 MiB held and 500 MiB more passed a 1 GiB budget";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("a second one needs 500.0 MiB, more than the memory budget of "),
                std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("(1.0 GiB set by HANDGRAD_MAX_MEMORY, less "), std::string::npos) << e.what();
    }
    MemoryTally tally("more buffers");  // begun beside the 600 MiB: 400 MiB left for it
    tally.add(uint64_t(100) << 20);
    Tensor made = Tensor::empty({int64_t(25) << 20});  // the 100 MiB it counted, held now too
    EXPECT_NO_THROW(tally.add(uint64_t(250) << 20));    // 350 of 400: not the 100 MiB twice
    EXPECT_THROW(tally.add(uint64_t(100) << 20), UserError);
  }
  EXPECT_EQ(host_bytes_held(), held_before);  // given back to the pool: cached, not held
  EXPECT_EQ(cached_memory(Device::CPU), uint64_t(700) << 20);
  {  // a new size class of 500 MiB would hold 1.2 GiB with the 700 MiB cached: they go first
    Tensor other = Tensor::empty({int64_t(125) << 20});
    EXPECT_EQ(cached_memory(Device::CPU), 0u);
  }
  EXPECT_EQ(cached_memory(Device::CPU), uint64_t(500) << 20);
  {  // one that fits beside the cache leaves it
    Tensor small = Tensor::empty({int64_t(20) << 20});
    EXPECT_EQ(cached_memory(Device::CPU), uint64_t(500) << 20);
  }
  unsetenv("HANDGRAD_MAX_MEMORY");
  release_cached_memory(Device::CPU);
}
