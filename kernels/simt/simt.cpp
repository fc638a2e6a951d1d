// The SIMT emulator: runs the handwritten CUDA kernels on the CPU, and checks each access the way
// compute-sanitizer checks it on a GPU (kernels/simt/simt.h has the device side).
//
// Execution. A launch runs its blocks one after another on the calling thread. The threads of a
// block are fibers that run in thread order until they block: at __syncthreads (all live threads
// of the block must arrive, at the same one) or at a warp shuffle (every lane of its mask must
// arrive). A thread that never blocks ends on the fiber it started on, which then runs the next
// thread, so barrier-free kernels cost one fiber switch per block, not one per thread.
//
// Checks. The .cu files are compiled with -fsanitize=thread: every load and store of kernel code
// calls a __tsan_* hook, defined below (there is no ThreadSanitizer runtime). Inside a kernel the
// hook checks that the access lies wholly inside one of: the thread's own stack (registers and
// local memory), the launch's parameters (read only), one live device allocation (cudaMalloc, exact
// size), the launch's dynamic shared memory, or one __shared__ array (a function-local static of
// handgrad::cuda, found with its size in the executable's symbol table); that it is naturally
// aligned; and, with a shadow word per 4 bytes (last writer and reader, and when), that no other
// thread touched the word unordered with it: in the same barrier interval of the block, or in
// another block of the launch (blocks are never ordered), one of them writing. A read of shared
// memory that this block has not written is reported too. Barriers that not every live thread
// reaches, shuffles whose mask names exited or absent lanes, and launch shapes a GPU refuses are
// errors. The first violation ends the launch (the rest of it is skipped, as when a GPU kernel
// faults), is printed, and is what cudaGetLastError returns.
#include "kernels/simt/simt_runtime.h"

#include "kernels/common.h"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

// This file is compiled without sanitizers, but ASan may be in the process (the sanitizer build):
// then its runtime defines this, and a fiber stack reused after an abandoned launch is unpoisoned.
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size) __attribute__((weak));
#define HG_SIMT_UNPOISON(p, n)                                                  \
  do {                                                                          \
    if (&__asan_unpoison_memory_region) __asan_unpoison_memory_region(p, n); \
  } while (0)

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace handgrad::simt {

// The thread running now; null outside a kernel (the hooks' fast way out).
thread_local ThreadCtx* current_thread = nullptr;
// The running fiber's stack (its lowest byte), 0 outside kernel code: the hooks' first test, so that
// the most common access of all, to the thread's own locals, costs two compares.
thread_local uintptr_t running_stack_lo = 0;

uint3 thread_idx() { return current_thread->thread_idx; }
uint3 block_idx() { return current_thread->block_idx; }
dim3 block_dim() { return current_thread->block_dim; }
dim3 grid_dim() { return current_thread->grid_dim; }
int lane_id() { return current_thread->linear % 32; }

namespace {
// A name as reports show it: without the namespaces every kernel shares.
std::string short_name(std::string s) {
  for (const char* prefix : {"handgrad::cuda::", "{anonymous}::", "(anonymous namespace)::"})
    for (size_t p; (p = s.find(prefix)) != std::string::npos;) s.erase(p, std::strlen(prefix));
  return s;
}
}  // namespace

const char* kernel_name_from(const char* pretty_function) {
  std::string s = pretty_function;
  const size_t at = s.find("Kernel = ");
  if (at != std::string::npos) s = s.substr(at + 9, s.size() - at - 10);  // up to the closing ']'
  return strdup(short_name(s).c_str());  // once per kernel, kept for the process
}

namespace {

// ---------------------------------------------------------------------------------------------
// Fibers: a stack and a saved stack pointer. x86-64 switches with six pushes and a ret (no
// system call, unlike swapcontext's signal mask); other targets use ucontext.
constexpr size_t kStackBytes = size_t(256) << 10;

struct Fiber {
  char* lo = nullptr;  // lowest usable byte (a guard page lies below)
  char* hi = nullptr;  // one past the highest
  bool idle = false;   // back at fiber_main's top: no thread of the block left to start
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx{};
#endif
};

[[noreturn]] void fiber_main();

#if defined(__x86_64__)
extern "C" void hg_simt_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .globl hg_simt_switch
  .hidden hg_simt_switch
  .type hg_simt_switch, @function
hg_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size hg_simt_switch, .-hg_simt_switch
)");

void* g_scheduler_sp = nullptr;
void fiber_reset(Fiber& f) {
  HG_SIMT_UNPOISON(f.lo, f.hi - f.lo);  // ASan's redzones of frames abandoned on this stack
  void** sp = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(f.hi) & ~uintptr_t(15));
  *--sp = nullptr;                               // fiber_main's return address: it never returns
  *--sp = reinterpret_cast<void*>(&fiber_main);  // where hg_simt_switch's ret goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;   // rbp, rbx, r12-r15
  f.sp = sp;
  f.idle = false;
}
void switch_to(Fiber& f) { hg_simt_switch(&g_scheduler_sp, f.sp); }
void switch_to_scheduler(Fiber& f) { hg_simt_switch(&f.sp, g_scheduler_sp); }
#else
ucontext_t g_scheduler_ctx;
void fiber_reset(Fiber& f) {
  HG_SIMT_UNPOISON(f.lo, f.hi - f.lo);
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.lo;
  f.ctx.uc_stack.ss_size = f.hi - f.lo;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main), 0);
  f.idle = false;
}
void switch_to(Fiber& f) { swapcontext(&g_scheduler_ctx, &f.ctx); }
void switch_to_scheduler(Fiber& f) { swapcontext(&f.ctx, &g_scheduler_ctx); }
#endif

Fiber* new_fiber() {
  const size_t page = sysconf(_SC_PAGESIZE);
  void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    std::fprintf(stderr, "handgrad simt: cannot map a fiber stack\n");
    std::abort();
  }
  mprotect(m, page, PROT_NONE);  // a stack overflow faults instead of corrupting its neighbour
  Fiber* f = new Fiber;
  f->lo = static_cast<char*>(m) + page;
  f->hi = f->lo + kStackBytes;
  fiber_reset(*f);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Shadow memory: per 4-byte word, which thread last wrote and read it, and in which barrier
// interval ("epoch": a counter bumped at every launch, block start and barrier release; blocks
// run in order, so an epoch at or after the block's start is this block's).
constexpr uint32_t kManyReaders = 0xffffffffu;
struct Shadow {
  uint32_t w_epoch, w_thread, r_epoch, r_thread;
};

struct Allocation {
  uintptr_t lo, hi;  // [lo, hi): exactly the bytes asked for
  Shadow* shadow;
};

// A region an access was found in: where its shadow words are and what to call it in a report.
struct Region {
  uintptr_t lo = 0, hi = 0;
  Shadow* shadow = nullptr;  // null: the kernel's parameters (read-only, no races to track)
  bool shared = false;
  std::string (*describe)(const Region&) = nullptr;
  const void* what = nullptr;  // the Allocation or SharedSymbol
};

struct SharedSymbol {
  uintptr_t lo, hi;
  std::string name;  // "sum_middle_kernel(...)::partial"
  size_t shadow_offset;
};

struct ThreadSlot {
  ThreadCtx ctx;
  enum State : uint8_t { Unstarted, Ready, AtBarrier, AtWarp, Done } state = Unstarted;
  Fiber* fiber = nullptr;
  const char* site = nullptr;  // the barrier or shuffle it waits at
  unsigned mask = 0;
  int src_lane = 0;
  uint64_t bits = 0, result = 0;
};

struct State {
  std::recursive_mutex launch_mu;  // one launch at a time in the process
  std::mutex alloc_mu;
  std::map<uintptr_t, Allocation> allocations;  // by lo
  std::map<const void*, int> max_dynamic_smem;   // cudaFuncSetAttribute
  std::vector<SharedSymbol> shared_symbols;      // by lo
  std::vector<Shadow> shared_shadow;
  bool symbols_read = false;
  std::vector<Fiber*> free_fibers;
  std::vector<Fiber*> all_fibers;
  uint32_t epoch = 0;

  // The launch and block running now.
  const LaunchConfig* cfg = nullptr;
  void (*run_thread)(const void*) = nullptr;
  uintptr_t params_lo = 0, params_hi = 0;
  uint32_t launch_epoch = 0, block_epoch = 0;
  std::vector<ThreadSlot> threads;
  int next_unstarted = 0;
  Fiber* running = nullptr;
  ThreadSlot* running_thread = nullptr;
  std::vector<char> dynamic_smem;
  std::vector<Shadow> dynamic_shadow;
  Region cache[4];  // the regions the last accesses fell in (a kernel touches a few at a time)
  unsigned cache_next = 0;
  bool aborted = false;
  std::string violation;
  cudaError_t violation_error = cudaSuccess;

  // Every launch: kernel name -> "grid block smem" -> count (HANDGRAD_SIMT_LAUNCHES).
  std::map<std::string, std::map<std::string, long>> launches;
};
// Created at first use and never destroyed (device buffers may be freed during exit). A plain
// pointer, not a function-local static: g() runs on every emulated access and must inline.
State* g_state = nullptr;
inline State& g() {
  if (__builtin_expect(g_state == nullptr, 0)) g_state = new State;
  return *g_state;
}

std::string dim_str(dim3 d) { return std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z); }
std::string idx_str(uint3 d) { return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")"; }

uint3 thread_index(int linear, dim3 block) {
  return {unsigned(linear % block.x), unsigned(linear / block.x % block.y), unsigned(linear / (block.x * block.y))};
}

// ---------------------------------------------------------------------------------------------
// __shared__ arrays: the statics simt.h puts in section hg_simt_shared, from the executable's
// symbol table (name, address, size). GCC ignores the section of a template's statics (they stay
// in .bss): those count when their function is a kernel of handgrad::cuda (named *_kernel, the
// project's rule for __global__ functions), so a host static (a cached handle) never does.
constexpr const char* kTemplateKernelStatics = "_ZZN8handgrad4cuda";
void read_shared_symbols() {
  State& s = g();
  s.symbols_read = true;
  uintptr_t bias = 0;
  dl_iterate_phdr([](dl_phdr_info* info, size_t, void* out) {
    *static_cast<uintptr_t*>(out) = info->dlpi_addr;  // the first object is the executable
    return 1;
  }, &bias);
  const int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) return;
  void* map = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return;
  const char* base = static_cast<const char*>(map);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
  const char* section_names = base + sh[eh->e_shstrndx].sh_offset;
  auto in_shared_section = [&](const Elf64_Sym& sym) {
    return sym.st_shndx != SHN_UNDEF && sym.st_shndx < eh->e_shnum &&
           std::strcmp(section_names + sh[sym.st_shndx].sh_name, "hg_simt_shared") == 0;
  };
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB) continue;
    const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
    const char* strtab = base + sh[sh[i].sh_link].sh_offset;
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k) {
      const Elf64_Sym& sym = syms[k];
      const char* name = strtab + sym.st_name;
      const bool in_section = in_shared_section(sym);
      if (ELF64_ST_TYPE(sym.st_info) != STT_OBJECT || sym.st_size == 0 ||
          (!in_section && std::strncmp(name, kTemplateKernelStatics, std::strlen(kTemplateKernelStatics)) != 0))
        continue;
      int status = 0;
      char* demangled = abi::__cxa_demangle(name, nullptr, nullptr, &status);
      std::string shown = short_name(status == 0 ? demangled : name);
      std::free(demangled);
      // "sgemm_kernel<...>(float*, ...)::As" -> "sgemm_kernel<...>::As": the parameters go.
      const size_t close = shown.rfind(")::");
      if (close != std::string::npos) {
        int depth = 0;
        for (size_t open = close + 1; open-- > 0;) {
          depth += shown[open] == ')' ? 1 : shown[open] == '(' ? -1 : 0;
          if (depth == 0) {
            shown.erase(open, close + 1 - open);
            break;
          }
        }
      }
      if (!in_section) {  // a static of handgrad::cuda outside the section: a template kernel's?
        std::string owner = shown.substr(0, shown.rfind("::"));
        if (!owner.empty() && owner.back() == '>') owner.erase(owner.find('<'));
        if (owner.size() < 7 || owner.compare(owner.size() - 7, 7, "_kernel") != 0) continue;
      }
      const uintptr_t lo = bias + sym.st_value;
      s.shared_symbols.push_back({lo, lo + sym.st_size, shown, 0});
    }
  }
  munmap(map, st.st_size);
  std::sort(s.shared_symbols.begin(), s.shared_symbols.end(),
            [](const SharedSymbol& a, const SharedSymbol& b) { return a.lo < b.lo; });
  s.shared_symbols.erase(std::unique(s.shared_symbols.begin(), s.shared_symbols.end(),
                                     [](const SharedSymbol& a, const SharedSymbol& b) { return a.lo == b.lo; }),
                         s.shared_symbols.end());
  size_t words = 0;
  for (SharedSymbol& sym : s.shared_symbols) {
    sym.shadow_offset = words;
    words += (sym.hi - sym.lo + 3) / 4;
  }
  s.shared_shadow.assign(words, Shadow{});
}

std::string describe_allocation(const Region& r) {
  return "a device allocation of " + std::to_string(r.hi - r.lo) + " bytes";
}
std::string describe_shared_symbol(const Region& r) {
  const auto* sym = static_cast<const SharedSymbol*>(r.what);
  return "__shared__ " + sym->name + " (" + std::to_string(r.hi - r.lo) + " bytes)";
}
std::string describe_params(const Region& r) {
  return "the kernel's parameters (" + std::to_string(r.hi - r.lo) + " bytes)";
}
std::string describe_dynamic(const Region& r) {
  return "the dynamic shared memory (" + std::to_string(r.hi - r.lo) + " bytes)";
}

// ---------------------------------------------------------------------------------------------
// Violations: recorded once per launch; from inside a thread the launch is abandoned at once.
void violate(cudaError_t err, const std::string& what) {
  State& s = g();
  if (s.aborted) return;
  s.aborted = true;
  s.violation_error = err;
  std::string where = std::string(s.cfg->name) + " (launched at " + s.cfg->site + ", grid " + dim_str(s.cfg->grid) +
                      " block " + dim_str(s.cfg->block) + ")";
  if (s.running_thread) {
    const ThreadCtx& t = s.running_thread->ctx;
    where += ", block " + idx_str(t.block_idx) + " thread " + idx_str(t.thread_idx);
  }
  s.violation = what + " in " + where;
  std::fprintf(stderr, "handgrad simt: %s\n", s.violation.c_str());
  if (s.running) switch_to_scheduler(*s.running);  // never resumed: the launch is over
}

// ---------------------------------------------------------------------------------------------
// The per-access check.
// The region holding address a; with slack > 0, else the closest one that ends at most `slack`
// bytes below a (so that a read one past an array is reported as that, with the array's name).
bool find_region(uintptr_t a, Region* r, uintptr_t slack = 0) {
  State& s = g();
  bool found = false;
  auto consider = [&](const Region& c) {
    if (a >= c.lo && (a < c.hi + slack || a == c.lo) && (!found || c.lo > r->lo)) {
      *r = c;
      found = true;
    }
  };
  {
    std::lock_guard<std::mutex> lock(s.alloc_mu);
    auto it = s.allocations.upper_bound(a);
    if (it != s.allocations.begin()) {
      const Allocation& al = std::prev(it)->second;
      consider(Region{al.lo, al.hi, al.shadow, false, &describe_allocation, &al});
    }
  }
  if (!s.dynamic_smem.empty()) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(s.dynamic_smem.data());
    consider(Region{lo, lo + s.cfg->dynamic_smem, s.dynamic_shadow.data(), true, &describe_dynamic, nullptr});
  }
  auto it = std::upper_bound(s.shared_symbols.begin(), s.shared_symbols.end(), a,
                             [](uintptr_t x, const SharedSymbol& sym) { return x < sym.lo; });
  if (it != s.shared_symbols.begin()) {
    const SharedSymbol& sym = *std::prev(it);
    consider(Region{sym.lo, sym.hi, s.shared_shadow.data() + sym.shadow_offset, true, &describe_shared_symbol, &sym});
  }
  return found;
}

std::string hex(uintptr_t a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(a));
  return buf;
}

std::string thread_name(uint32_t linear) {
  if (linear == kManyReaders) return "other threads";
  return "thread " + idx_str(thread_index(int(linear), g().cfg->block));
}

// The violations an access can make, reported out of the hot path.
[[gnu::cold, gnu::noinline]] void report_race(const char* kind, const Region& r, uintptr_t word, uint32_t other,
                                              bool same_interval) {
  violate(cudaErrorLaunchFailure, std::string(kind) + " race on " + r.describe(r) + " at offset " + std::to_string(word * 4) +
                                      " with " + thread_name(other) +
                                      (same_interval ? " (no __syncthreads between them)" : " of another block"));
}
[[gnu::cold, gnu::noinline]] void report_param_write() {
  violate(cudaErrorIllegalAddress, "write to the kernel's parameters");
}
[[gnu::cold, gnu::noinline]] void report_uninitialised(const Region& r, uintptr_t word) {
  violate(cudaErrorLaunchFailure, "read of " + r.describe(r) + " at offset " + std::to_string(word * 4) +
                                      ", which no thread of this block has written");
}

// The access's region, when it is no plain one of the fast path: the parameters, a region not yet
// cached, or a violation (outside every region, past its end, misaligned). `hit`: the cached
// region the fast path found a holding, if any. Null: nothing to check.
[[gnu::noinline]] Region* find_or_report(uintptr_t a, size_t size, bool write, bool aligned_access, Region* hit) {
  State& s = g();
  if (s.aborted) return nullptr;
  auto what = [&] { return std::string(write ? "write" : "read") + " of " + std::to_string(size) + " bytes"; };
  if (!hit) {
    hit = &s.cache[s.cache_next++ % 4];
    if (a >= s.params_lo && a < s.params_hi) {
      *hit = Region{s.params_lo, s.params_hi, nullptr, false, &describe_params, nullptr};
    } else if (!find_region(a, hit)) {
      Region near;
      if (find_region(a, &near, 4096)) {
        *hit = Region{};
        violate(cudaErrorIllegalAddress, what() + " at offset " + std::to_string(a - near.lo) + " of " + near.describe(near) +
                                             ": " + std::to_string(a + size - near.hi) + " bytes past its end");
        return nullptr;
      }
      *hit = Region{};
      for (const Fiber* other : s.all_fibers)
        if (a >= reinterpret_cast<uintptr_t>(other->lo) && a < reinterpret_cast<uintptr_t>(other->hi)) {
          violate(cudaErrorIllegalAddress, what() + " at " + hex(a) + ": another thread's local memory");
          return nullptr;
        }
      violate(cudaErrorIllegalAddress,
              what() + " at " + hex(a) + ", which is no device memory, shared memory or local memory of this thread");
      return nullptr;
    }
  }
  const Region& r = *hit;
  if (a + size > r.hi) {
    violate(cudaErrorIllegalAddress, what() + " at offset " + std::to_string(a - r.lo) + " of " + r.describe(r) + ": " +
                                         std::to_string(a + size - r.hi) + " bytes past its end");
    return nullptr;
  }
  if (aligned_access && (size & (size - 1)) == 0 && a % size != 0) {
    violate(cudaErrorMisalignedAddress, "misaligned " + what() + " at offset " + std::to_string(a - r.lo) + " of " + r.describe(r));
    return nullptr;
  }
  return hit;
}

// Every load and store of kernel code: where it lands, then its shadow words. An earlier access
// to a word (at epoch e, by thread t) conflicts with this one when it was in this launch and
// either in another block (global memory: blocks are never ordered; shared memory: another
// block's is gone) or in this barrier interval by another thread.
void check_access(uintptr_t a, size_t size, bool write, bool aligned_access) {
  State& s = g();
  Region* r = nullptr;
  for (Region& c : s.cache)
    if (a - c.lo < c.hi - c.lo) {
      r = &c;
      break;
    }
  if (!r || a + size > r->hi || (aligned_access && (a & (size - 1)) != 0)) {
    r = find_or_report(a, size, write, aligned_access, r);
    if (!r) return;
  }
  if (!r->shadow) {
    if (write) report_param_write();
    return;
  }
  const uint32_t me = uint32_t(s.running_thread->ctx.linear);
  const uint32_t E = s.epoch, B = s.block_epoch, L = s.launch_epoch;
  const bool shared = r->shared;
  auto conflict = [&](uint32_t e, uint32_t t) { return e >= L && (e < B ? !shared : (e == E && t != me)); };
  for (uintptr_t w = (a - r->lo) / 4, last = (a + size - 1 - r->lo) / 4; w <= last; ++w) {
    Shadow& sh = r->shadow[w];
    if (write) {
      if (conflict(sh.w_epoch, sh.w_thread)) return report_race("write-after-write", *r, w, sh.w_thread, sh.w_epoch == E);
      if (conflict(sh.r_epoch, sh.r_thread)) return report_race("write-after-read", *r, w, sh.r_thread, sh.r_epoch == E);
      sh.w_epoch = E;
      sh.w_thread = me;
    } else {
      if (shared && sh.w_epoch < B) return report_uninitialised(*r, w);
      if (conflict(sh.w_epoch, sh.w_thread)) return report_race("read-after-write", *r, w, sh.w_thread, sh.w_epoch == E);
      if (sh.r_epoch == E) {
        if (sh.r_thread != me) sh.r_thread = kManyReaders;
      } else if (shared || sh.r_epoch < L || sh.r_epoch >= B) {
        // (Global memory another block of this launch read keeps that record: any write to it
        // later in the launch races with that read, whichever block makes it.)
        sh.r_epoch = E;
        sh.r_thread = me;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Running a block.
[[noreturn]] void fiber_main() {
  State& s = g();
  for (;;) {
    Fiber* self = s.running;
    if (s.next_unstarted < int(s.threads.size()) && !s.aborted) {
      ThreadSlot& t = s.threads[s.next_unstarted++];
      t.fiber = self;
      t.state = ThreadSlot::Ready;
      s.running_thread = &t;
      current_thread = &t.ctx;
      running_stack_lo = reinterpret_cast<uintptr_t>(self->lo);
      s.run_thread(reinterpret_cast<const void*>(s.params_lo));
      running_stack_lo = 0;
      current_thread = nullptr;
      s.running_thread = nullptr;
      t.state = ThreadSlot::Done;
      t.fiber = nullptr;
      continue;
    }
    self->idle = true;
    switch_to_scheduler(*self);
  }
}

// Switches to `f` until it blocks, finishes its threads, or a violation ends the launch.
void run_fiber(Fiber* f, ThreadSlot* t) {
  State& s = g();
  s.running = f;
  s.running_thread = t;
  current_thread = t ? &t->ctx : nullptr;
  running_stack_lo = reinterpret_cast<uintptr_t>(f->lo);
  switch_to(*f);
  running_stack_lo = 0;
  s.running = nullptr;
  s.running_thread = nullptr;
  current_thread = nullptr;
  if (f->idle) {
    f->idle = false;
    s.free_fibers.push_back(f);
  }
}

Fiber* take_fiber() {
  State& s = g();
  if (s.free_fibers.empty()) {
    s.all_fibers.push_back(new_fiber());
    return s.all_fibers.back();
  }
  Fiber* f = s.free_fibers.back();
  s.free_fibers.pop_back();
  return f;
}

// Threads waiting at a warp shuffle whose whole mask has arrived exchange and go on. False when
// none could; a violation when a mask can never complete.
bool release_warps() {
  State& s = g();
  const int n = int(s.threads.size());
  bool released = false;
  for (int w0 = 0; w0 < n && !s.aborted; w0 += 32) {
    for (int l = w0; l < std::min(n, w0 + 32); ++l) {
      ThreadSlot& t = s.threads[l];
      if (t.state != ThreadSlot::AtWarp) continue;
      const unsigned mask = t.mask;
      bool complete = true;
      for (int lane = 0; lane < 32; ++lane) {
        if (!(mask >> lane & 1)) continue;
        if (w0 + lane >= n) {
          violate(cudaErrorLaunchFailure, std::string(t.site) + " with mask " + hex(mask) + " names lane " +
                                              std::to_string(lane) + ", which this block does not have");
          return false;
        }
        const ThreadSlot& u = s.threads[w0 + lane];
        if (u.state == ThreadSlot::AtWarp && u.mask != mask) {
          violate(cudaErrorLaunchFailure, std::string(t.site) + ": lanes " + std::to_string(l - w0) + " and " +
                                              std::to_string(lane) + " of a warp shuffle with different masks");
          return false;
        }
        if (u.state == ThreadSlot::Done || u.state == ThreadSlot::AtBarrier) {
          violate(cudaErrorLaunchFailure, std::string(t.site) + " waits for lane " + std::to_string(lane) + ", which " +
                                              (u.state == ThreadSlot::Done ? "has exited" : "waits at __syncthreads"));
          return false;
        }
        if (u.state != ThreadSlot::AtWarp) complete = false;
      }
      if (!complete) continue;
      for (int lane = 0; lane < 32; ++lane) {
        if (!(mask >> lane & 1)) continue;
        ThreadSlot& u = s.threads[w0 + lane];
        if (!(mask >> u.src_lane & 1)) {
          violate(cudaErrorLaunchFailure, std::string(u.site) + ": lane " + std::to_string(lane) + " reads lane " +
                                              std::to_string(u.src_lane) + ", which is not in the mask " + hex(mask));
          return false;
        }
        u.result = s.threads[w0 + u.src_lane].bits;
      }
      for (int lane = 0; lane < 32; ++lane)
        if (mask >> lane & 1) s.threads[w0 + lane].state = ThreadSlot::Ready;
      released = true;
    }
  }
  return released;
}

void run_block(uint3 block_idx) {
  State& s = g();
  const LaunchConfig& c = *s.cfg;
  const int n = int(c.block.x * c.block.y * c.block.z);
  s.threads.assign(n, ThreadSlot{});
  for (int i = 0; i < n; ++i) s.threads[i].ctx = {thread_index(i, c.block), block_idx, c.block, c.grid, i};
  s.next_unstarted = 0;
  s.block_epoch = ++s.epoch;
  for (;;) {
    for (ThreadSlot& t : s.threads) {
      if (s.aborted) return;
      if (t.state == ThreadSlot::Ready && t.fiber) run_fiber(t.fiber, &t);
    }
    while (s.next_unstarted < n && !s.aborted) run_fiber(take_fiber(), nullptr);
    if (s.aborted) return;
    int done = 0, at_barrier = 0, at_warp = 0;
    for (const ThreadSlot& t : s.threads) {
      done += t.state == ThreadSlot::Done;
      at_barrier += t.state == ThreadSlot::AtBarrier;
      at_warp += t.state == ThreadSlot::AtWarp;
    }
    if (done == n) return;
    if (at_warp) {
      if (release_warps()) continue;
      if (!s.aborted) violate(cudaErrorLaunchFailure, "warp shuffles that can never complete (a lane waits at a barrier)");
      return;
    }
    const ThreadSlot* first = nullptr;
    for (const ThreadSlot& t : s.threads)
      if (t.state == ThreadSlot::AtBarrier) {
        first = &t;
        break;
      }
    if (done > 0) {
      const ThreadSlot* gone = nullptr;
      for (const ThreadSlot& t : s.threads)
        if (t.state == ThreadSlot::Done) {
          gone = &t;
          break;
        }
      violate(cudaErrorLaunchFailure, "barrier divergence: " + std::to_string(at_barrier) + " threads wait at __syncthreads (" +
                                          first->site + ") that " + std::to_string(done) + " threads (the first: thread " +
                                          idx_str(gone->ctx.thread_idx) + ") exited without reaching");
      return;
    }
    for (const ThreadSlot& t : s.threads)
      if (std::strcmp(t.site, first->site) != 0) {
        violate(cudaErrorLaunchFailure, std::string("barrier divergence: thread ") + idx_str(first->ctx.thread_idx) +
                                            " waits at __syncthreads (" + first->site + "), thread " +
                                            idx_str(t.ctx.thread_idx) + " at another (" + t.site + ")");
        return;
      }
    ++s.epoch;
    for (ThreadSlot& t : s.threads) t.state = ThreadSlot::Ready;
  }
}

// Fibers that were inside threads of an abandoned launch start over.
void recycle_fibers_after_abort() {
  State& s = g();
  for (ThreadSlot& t : s.threads)
    if (t.fiber) {
      fiber_reset(*t.fiber);
      s.free_fibers.push_back(t.fiber);
      t.fiber = nullptr;
    }
  for (Fiber* f : s.all_fibers)
    if (std::find(s.free_fibers.begin(), s.free_fibers.end(), f) == s.free_fibers.end()) {
      fiber_reset(*f);  // one that was between threads when the launch ended
      s.free_fibers.push_back(f);
    }
}

thread_local cudaError_t g_last_error = cudaSuccess;  // per host thread, as cudart keeps it

// Launch-time checks, as a GPU's driver makes them (an H100's limits).
std::string refused_launch(const LaunchConfig& c, cudaError_t* err) {
  State& s = g();
  *err = cudaErrorInvalidConfiguration;
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  if (threads == 0 || uint64_t(c.grid.x) * c.grid.y * c.grid.z == 0) return "an empty grid or block";
  if (threads > kMaxThreadsPerBlock || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64)
    return "a block of " + dim_str(c.block) + " threads (at most 1024, and z <= 64)";
  if (c.grid.x > 2147483647u || c.grid.y > kMaxGridYZ || c.grid.z > kMaxGridYZ)
    return "a grid of " + dim_str(c.grid) + " blocks (y and z at most " + std::to_string(kMaxGridYZ) + " here)";
  *err = cudaErrorInvalidValue;
  auto it = s.max_dynamic_smem.find(c.kernel);
  const size_t allowed = it == s.max_dynamic_smem.end() ? kSharedPerBlock : size_t(it->second);
  if (c.dynamic_smem > allowed)
    return std::to_string(c.dynamic_smem) + " bytes of dynamic shared memory, over the kernel's limit of " +
           std::to_string(allowed) + (it == s.max_dynamic_smem.end() ? " (cudaFuncSetAttribute raises it)" : "");
  return "";
}

}  // namespace

void launch(const LaunchConfig& cfg, void (*run_thread)(const void*), const void* params, size_t params_bytes) {
  State& s = g();
  std::lock_guard<std::recursive_mutex> lock(s.launch_mu);
  if (current_thread) {
    std::fprintf(stderr, "handgrad simt: a kernel launched from inside a kernel (%s)\n", cfg.name);
    std::abort();
  }
  if (!s.symbols_read) read_shared_symbols();
  s.launches[cfg.name][dim_str(cfg.grid) + " x " + dim_str(cfg.block) + (cfg.dynamic_smem ? " smem " + std::to_string(cfg.dynamic_smem) : "")]++;
  cudaError_t err = cudaSuccess;
  const std::string refused = refused_launch(cfg, &err);
  if (!refused.empty()) {
    s.violation = std::string("launch of ") + cfg.name + " at " + cfg.site + " refused: " + refused;
    std::fprintf(stderr, "handgrad simt: %s\n", s.violation.c_str());
    g_last_error = err;
    return;
  }
  // The epochs are 32-bit: long before they could wrap (the fused MLP makes ~3e5 barrier
  // intervals per launch), every shadow word is cleared between two launches and they restart.
  if (s.epoch > (uint32_t(1) << 31)) {
    std::lock_guard<std::mutex> alloc_lock(s.alloc_mu);
    for (auto& [lo, al] : s.allocations) std::memset(al.shadow, 0, ((al.hi - al.lo + 3) / 4 + 1) * sizeof(Shadow));
    std::fill(s.shared_shadow.begin(), s.shared_shadow.end(), Shadow{});
    s.epoch = 0;
  }
  s.cfg = &cfg;
  s.run_thread = run_thread;
  s.params_lo = reinterpret_cast<uintptr_t>(params);
  s.params_hi = s.params_lo + params_bytes;
  s.launch_epoch = ++s.epoch;
  s.aborted = false;
  s.violation.clear();
  for (Region& c : s.cache) c = Region{};
  s.dynamic_smem.assign(cfg.dynamic_smem, 0);
  s.dynamic_shadow.assign((cfg.dynamic_smem + 3) / 4, Shadow{});
  for (unsigned z = 0; z < cfg.grid.z && !s.aborted; ++z)
    for (unsigned y = 0; y < cfg.grid.y && !s.aborted; ++y)
      for (unsigned x = 0; x < cfg.grid.x && !s.aborted; ++x) run_block({x, y, z});
  if (s.aborted) {
    recycle_fibers_after_abort();
    g_last_error = s.violation_error;
  }
  s.threads.clear();
  s.cfg = nullptr;
}

void syncthreads(const char* site) {
  State& s = g();
  ThreadSlot& t = *s.running_thread;
  Fiber* f = s.running;
  t.state = ThreadSlot::AtBarrier;
  t.site = site;
  switch_to_scheduler(*f);
}

uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane, const char* site) {
  State& s = g();
  ThreadSlot& t = *s.running_thread;
  Fiber* f = s.running;
  t.state = ThreadSlot::AtWarp;
  t.site = site;
  t.mask = mask;
  t.bits = bits;
  t.src_lane = src_lane;
  switch_to_scheduler(*f);
  return t.result;
}

void* dynamic_shared() { return g().dynamic_smem.data(); }

const std::string& last_violation() { return g().violation; }

// ---------------------------------------------------------------------------------------------
// The runtime side, for kernels/simt/cuda_runtime.cpp.
void* device_alloc(size_t bytes) {
  State& s = g();
  const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);  // cudaMalloc's alignment; the checks use `bytes`
  if (!p) return nullptr;
  auto* shadow = static_cast<Shadow*>(std::calloc((bytes + 3) / 4 + 1, sizeof(Shadow)));
  if (!shadow) {
    std::free(p);
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(s.alloc_mu);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
  s.allocations[lo] = Allocation{lo, lo + bytes, shadow};
  return p;
}

bool device_free(void* p) {
  State& s = g();
  std::lock_guard<std::recursive_mutex> launch(s.launch_mu);  // cudaFree waits for running kernels
  std::lock_guard<std::mutex> lock(s.alloc_mu);
  auto it = s.allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.allocations.end()) return false;
  std::free(it->second.shadow);
  std::free(p);
  s.allocations.erase(it);
  return true;
}

size_t device_bytes_from(const void* p) {
  State& s = g();
  std::lock_guard<std::mutex> lock(s.alloc_mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = s.allocations.upper_bound(a);
  if (it == s.allocations.begin()) return 0;
  --it;
  if (a < it->second.lo || (a >= it->second.hi && a != it->second.lo)) return 0;
  return it->second.hi - a;
}

size_t device_bytes_in_use() {
  State& s = g();
  std::lock_guard<std::mutex> lock(s.alloc_mu);
  size_t n = 0;
  for (const auto& [lo, a] : s.allocations) n += a.hi - a.lo;
  return n;
}

void set_max_dynamic_smem(const void* kernel, int bytes) {
  std::lock_guard<std::recursive_mutex> lock(g().launch_mu);
  g().max_dynamic_smem[kernel] = bytes;
}

cudaError_t take_last_error(bool clear) {
  const cudaError_t e = g_last_error;
  if (clear) g_last_error = cudaSuccess;
  return e;
}

std::vector<std::string> launch_summary() {
  State& s = g();
  std::lock_guard<std::recursive_mutex> lock(s.launch_mu);
  std::vector<std::string> out;
  for (const auto& [name, shapes] : s.launches)
    for (const auto& [shape, count] : shapes) out.push_back(name + "\t" + shape + "\t" + std::to_string(count));
  return out;
}

namespace {
// HANDGRAD_SIMT_LAUNCHES=<file>: every kernel and launch shape this process ran is appended to it at
// exit (tests/simt_coverage.py reads it).
struct LaunchLog {
  ~LaunchLog() {
    const char* path = std::getenv("HANDGRAD_SIMT_LAUNCHES");
    if (!path || !*path) return;
    std::vector<std::string> lines = launch_summary();
    if (lines.empty()) return;
    std::string text;
    for (const std::string& l : lines) text += l + "\n";
    const int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write(fd, text.data(), text.size()) < 0) {}
    close(fd);
  }
} g_launch_log;
}  // namespace

}  // namespace handgrad::simt

// ---------------------------------------------------------------------------------------------
// The hooks that -fsanitize=thread puts before every load and store of the .cu files' code.
namespace {
inline void hook(void* p, size_t n, bool write, bool aligned) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), stack_lo = handgrad::simt::running_stack_lo;
  if (stack_lo != 0 && a - stack_lo >= handgrad::simt::kStackBytes)
    handgrad::simt::check_access(a, n, write, aligned);
}
}  // namespace

extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
#define HG_SIMT_HOOKS(n)                                                         \
  void __tsan_read##n(void* a) { hook(a, n, false, true); }                      \
  void __tsan_write##n(void* a) { hook(a, n, true, true); }                      \
  void __tsan_unaligned_read##n(void* a) { hook(a, n, false, false); }           \
  void __tsan_unaligned_write##n(void* a) { hook(a, n, true, false); }           \
  void __tsan_volatile_read##n(void* a) { hook(a, n, false, true); }             \
  void __tsan_volatile_write##n(void* a) { hook(a, n, true, true); }
HG_SIMT_HOOKS(1)
HG_SIMT_HOOKS(2)
HG_SIMT_HOOKS(4)
HG_SIMT_HOOKS(8)
HG_SIMT_HOOKS(16)
#undef HG_SIMT_HOOKS
void __tsan_read_range(void* a, unsigned long n) { hook(a, n, false, false); }
void __tsan_write_range(void* a, unsigned long n) { hook(a, n, true, false); }
void __tsan_vptr_read(void**) {}
void __tsan_vptr_update(void**, void*) {}
// Atomics: kernels use none; host code in the .cu files does (the guard of a function-local
// static). Done as asked, sequentially consistent whatever the order argument says.
#define HG_SIMT_ATOMICS(bits, type)                                                                  \
  type __tsan_atomic##bits##_load(const volatile type* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  void __tsan_atomic##bits##_store(volatile type* a, type v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
  type __tsan_atomic##bits##_exchange(volatile type* a, type v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
  type __tsan_atomic##bits##_fetch_add(volatile type* a, type v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
  type __tsan_atomic##bits##_fetch_sub(volatile type* a, type v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
  int __tsan_atomic##bits##_compare_exchange_strong(volatile type* a, type* expected, type v, int, int) { \
    return __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);   \
  }                                                                                                  \
  int __tsan_atomic##bits##_compare_exchange_weak(volatile type* a, type* expected, type v, int, int) { \
    return __atomic_compare_exchange_n(a, expected, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);    \
  }
HG_SIMT_ATOMICS(8, unsigned char)
HG_SIMT_ATOMICS(16, unsigned short)
HG_SIMT_ATOMICS(32, unsigned int)
HG_SIMT_ATOMICS(64, unsigned long long)
#undef HG_SIMT_ATOMICS
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) {}
}
