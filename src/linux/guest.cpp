#include "linux/guest.hpp"

#include <elf.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <x86intrin.h>
#include <cpuid.h>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <cerrno>
#include <thread>
#include <cstring>
#include <ctime>
#include <tuple>

#include "kvm/layout.hpp"
#include "linux/policy.hpp"
#include "linux/process_table.hpp"
#include "linux/syscalls.hpp"
#include "loader/elf_loader.hpp"

extern "C" const uint8_t kvms_vdso_blob[];
extern "C" const uint8_t kvms_vdso_blob_end[];

namespace kvms::linux {
namespace {

using kvm::kPageSize;
using kvm::page_up;

constexpr uint64_t kStackSize = 8ull << 20;
constexpr uint64_t kStackGuard = 1ull << 20;   // unmapped space above the stack
constexpr uint64_t kPieBase = 1ull << 30;      // where static-PIE programs are placed
constexpr uint64_t kVdsoRoom = 1ull << 20;     // kept free below the stack for the vDSO
constexpr uint64_t kHwcap2Fsgsbase = 1 << 1;
constexpr uint64_t kSyscallOutLength = 2;  // `out imm8, al` in entry.asm

uint64_t monotonic_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}

int signal_for(int vector) {
  switch (vector) {
    case 0: case 16: case 19: return SIGFPE;
    case 1: case 3: return SIGTRAP;
    case 6: return SIGILL;
    case 12: case 17: return SIGBUS;
    default: return SIGSEGV;
  }
}

bool has_error_code(int vector) {
  return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30;
}

std::string hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Maps the vDSO (its PT_LOAD segments, read+execute) with the clock page just below it.
uint64_t map_vdso(kvm::AddressSpace& as, uint64_t below) {
  const auto* ehdr = reinterpret_cast<const Elf64_Ehdr*>(kvms_vdso_blob);
  const auto* phdrs = reinterpret_cast<const Elf64_Phdr*>(kvms_vdso_blob + ehdr->e_phoff);
  uint64_t extent = 0;
  for (int i = 0; i < ehdr->e_phnum; ++i)
    if (phdrs[i].p_type == PT_LOAD) extent = std::max(extent, phdrs[i].p_vaddr + phdrs[i].p_memsz);
  extent = page_up(extent);
  auto base = as.find_free(extent + kPageSize, below - extent - kPageSize);
  if (!base) throw std::runtime_error("no room for the vDSO");
  const uint64_t image = *base + kPageSize;
  if (as.map(*base, kPageSize, kvm::kProtRead, "[vvar]") || as.map(image, extent, kvm::kProtRead | kvm::kProtExec, "[vdso]"))
    throw std::runtime_error("cannot map the vDSO");
  for (int i = 0; i < ehdr->e_phnum; ++i)
    if (phdrs[i].p_type == PT_LOAD) as.poke(image + phdrs[i].p_vaddr, kvms_vdso_blob + phdrs[i].p_offset, phdrs[i].p_filesz);
  return image;
}

}  // namespace

std::string find_program(const std::string& program) {
  if (program.empty()) throw loader::LoadError(127, "empty program name");
  if (program.find('/') != std::string::npos) return program;
  const char* path = getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    struct stat st{};
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  throw loader::LoadError(127, program + ": command not found");
}

// The dynamic loader a program names is read like any file the guest opens: through the policy (the
// system library directories are readable by default, see README "Libraries"), so a program the
// guest wrote cannot name a file it may not read as its interpreter and find it in its memory.
static loader::FileReader interpreter_reader(const PathPolicy& policy) {
  return [&policy](const std::string& path) {
    auto r = policy.resolve(path, Access::Read, true);
    if (auto* err = std::get_if<int>(&r)) {
      const std::string why = *err == -EACCES ? "not readable (allow with " + policy.suggestion(path, Access::Read) + ")"
                                              : std::strerror(-*err);
      throw loader::LoadError(*err == -ENOENT ? 127 : 126, path + ": " + why);
    }
    const std::string host = std::get<PathPolicy::Resolved>(r).host_path;
    try {
      return loader::read_program_file(host);
    } catch (const loader::LoadError& e) {  // named as the program names it, not by its host path
      const std::string what = e.what();
      throw loader::LoadError(e.exit_status, what.starts_with(host) ? path + what.substr(host.size()) : what);
    }
  };
}

Guest::Image Guest::load_image(const std::string& host_path, uint64_t user_size, const PathPolicy& policy) {
  const std::vector<uint8_t> file = loader::read_program_file(host_path);
  Image img;
  img.path = host_path;
  // Enough page-table pages to map every user page, plus the fixed kernel pages; sparse until used.
  const uint64_t kernel_size = page_up((16ull << 20) + user_size / 256);
  img.memory = kvm::GuestMemory::create(user_size, kernel_size);
  img.mm = std::make_shared<kvm::AddressSpace>(img.memory);
  kvm::install_kernel_area(*img.mm);
  img.stack_top = user_size - kStackGuard;
  // Like Linux: a PIE with an interpreter at ELF_ET_DYN_BASE (2/3 of the address space), the
  // interpreter top-down below the stack, leaving room for the vDSO between them.
  const loader::ProgramLayout layout{std::min(kPieBase, user_size / 4), kvm::page_down(user_size / 3 * 2),
                                     img.stack_top - kStackSize - kVdsoRoom};
  try {
    const loader::LoadedProgram prog = loader::load_program(*img.mm, file, host_path, layout, interpreter_reader(policy));
    img.elf = prog.program;
    img.interp_base = prog.interp_base;
    img.start = prog.start;
  } catch (const loader::LoadError& e) {
    throw loader::LoadError(e.exit_status, host_path + ": " + e.what());
  }
  const int stack_prot = kvm::kProtRead | kvm::kProtWrite | (img.elf.executable_stack ? kvm::kProtExec : 0);
  if (img.mm->map(img.stack_top - kStackSize, kStackSize, stack_prot, "[stack]") != 0)
    throw loader::LoadError(126, host_path + ": no room for the stack");
  img.vdso = map_vdso(*img.mm, img.stack_top - kStackSize);
  return img;
}

void Guest::install(Image img, const std::vector<std::string>& argv, const std::vector<std::string>& envp,
                    const std::string& execfn) {
  program_path_ = img.path;
  memory_ = img.memory;
  mm_ = img.mm;
  vcpu_.reset();
  vm_ = std::make_unique<kvm::Vm>(memory_, false);
  vcpu_ = std::make_unique<kvm::Vcpu>(*vm_, 0);
  if (deadline_ns_) vcpu_->set_deadline(deadline_ns_);

  Process& p = *process_;
  p.set_address_space(mm_);
  p.attach(vcpu_.get());
  p.exe_path = img.path;
  p.brk_start = p.brk_current = img.elf.brk_start;
  p.stack_top = img.stack_top;
  p.stack_size = kStackSize;
  p.vdso_base = img.vdso;
  p.clock = {};
  p.clock.tsc_khz = vcpu_->tsc_khz();
  p.clock.tsc_offset = int64_t(vcpu_->guest_tsc() - __rdtsc());
  refresh_clock_page(p);

  loader::StackSpec spec;
  spec.argv = argv;
  spec.envp = envp;
  spec.execfn = execfn;
  unsigned eax, ebx, ecx, edx;
  __cpuid(1, eax, ebx, ecx, edx);
  spec.hwcap = edx;
  spec.hwcap2 = (kvm::Kvm::instance().cr4_extra() & (1u << 16)) ? kHwcap2Fsgsbase : 0;
  spec.uid = spec.euid = p.uid;
  spec.gid = spec.egid = p.gid;
  spec.sysinfo_ehdr = img.vdso;
  spec.minsigstksz = 4096;
  spec.interp_base = img.interp_base;
  if (getrandom(spec.random, sizeof spec.random, 0) != sizeof spec.random) throw std::runtime_error("getrandom failed");
  const uint64_t rsp = loader::build_initial_stack(*mm_, img.stack_top, kStackSize, spec, img.elf);
  std::tie(p.arg_start, p.arg_end) = loader::argument_strings(*mm_, rsp);
  const std::string name = execfn.substr(execfn.rfind('/') + 1);  // Linux's comm: the exec'd file name
  std::memset(p.comm, 0, sizeof p.comm);
  std::strncpy(p.comm, name.c_str(), sizeof p.comm - 1);
  vcpu_->enter_user_mode(mm_->cr3(), img.start, rsp);
  mm_->clear_tlb_flush();
}

std::unique_ptr<Guest> Guest::create(const GuestConfig& config) {
  std::unique_ptr<Guest> g(new Guest);
  const std::string path = find_program(config.program);
  Image img = load_image(path, page_up(config.address_space), *config.policy);
  g->process_ = std::make_unique<Process>(img.mm, config.policy, config.process);
  Process& p = *g->process_;
  p.cwd = config.cwd;
  p.host = g.get();
  p.table = std::make_shared<ProcessTable>(p.pid);
  const char* stdio_names[] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
  for (int fd = 0; fd < 3; ++fd)
    if (auto f = inherit_host_fd(fd, stdio_names[fd])) p.fds.install_at(fd, std::move(f), false);
  g->install(std::move(img), config.argv, config.envp, config.program);
  return g;
}

// A private copy of everything the guest has in memory: the pages resident in its mappings (the
// only ones that can hold anything but zeros) and the kernel area.
std::shared_ptr<kvm::GuestMemory> Guest::snapshot_memory() const {
  auto copy = kvm::GuestMemory::create(memory_->user_size(), memory_->kernel_size());
  auto copy_resident = [&](uint64_t gpa, uint64_t len) {
    uint8_t* src = memory_->host(gpa, len);
    std::vector<unsigned char> resident((len + kPageSize - 1) / kPageSize);
    if (!src || mincore(src, len, resident.data()) != 0) return;
    for (uint64_t i = 0; i < resident.size(); ++i)
      if (resident[i] & 1) std::memcpy(copy->host(gpa + i * kPageSize), src + i * kPageSize, kPageSize);
  };
  for (const auto& [start, m] : mm_->mappings())
    if (m.prot != kvm::kProtNone) copy_resident(start, m.end - start);
  copy_resident(kvm::kKernelPhys, memory_->kernel_size());
  return copy;
}

int64_t Guest::fork(Process& p, uint64_t flags, uint64_t parent_tid, uint64_t child_tid) {
  std::unique_ptr<Guest> child(new Guest);
  kvm::VcpuState state = vcpu_->save();
  state.regs.rax = 0;
  state.regs.rip += kSyscallOutLength;  // the child returns from the syscall the parent is in
  try {
    child->program_path_ = program_path_;
    child->memory_ = snapshot_memory();
    child->mm_ = std::make_shared<kvm::AddressSpace>(*mm_, child->memory_);
    child->vm_ = std::make_unique<kvm::Vm>(child->memory_, false);
    child->vcpu_ = std::make_unique<kvm::Vcpu>(*child->vm_, 0);
    child->vcpu_->restore(state);
  } catch (const std::exception& e) {
    p.log(std::string("fork failed: ") + e.what());
    return -ENOMEM;
  }
  Guest* raw = child.get();
  const int pid = p.table->add_child(p.pid, [raw](int sig) { raw->kill(sig); });
  auto cp = std::make_unique<Process>(p, child->mm_);
  cp->pid = cp->tid = pid;
  cp->ppid = p.pid;
  cp->server = nullptr;
  cp->host = raw;
  cp->exit_status.reset();
  cp->clear_child_tid = (flags & CLONE_CHILD_CLEARTID) ? child_tid : 0;
  if (flags & CLONE_CHILD_SETTID) cp->mm().write<int32_t>(child_tid, pid);
  if (flags & CLONE_PARENT_SETTID) p.mm().write<int32_t>(parent_tid, pid);
  child->set_process(std::move(cp));

  std::shared_ptr<ProcessTable> table = p.table;
  std::thread([child = std::move(child), table, pid]() mutable {
    pthread_setname_np(pthread_self(), ("guest pid " + std::to_string(pid)).c_str());
    RunResult r;
    try {
      r = child->run();
    } catch (const std::exception& e) {
      r = {RunResult::Faulted, 128 + SIGSEGV, std::string("internal error: ") + e.what()};
    }
    if (r.reason == RunResult::Faulted || r.reason == RunResult::Signaled)
      if (!r.message.empty() && r.reason == RunResult::Faulted)
        std::fprintf(stderr, "kvmserver: %s (pid %d): %s\n", child->program_path().c_str(), pid, r.message.c_str());
    const int status = r.status > 128 ? signal_wait_status(r.status - 128) : exit_wait_status(r.status);
    child.reset();  // closes the child's fds before the parent can see it gone (pipe EOF)
    table->exited(pid, status);
  }).detach();
  if (flags & CLONE_VFORK) p.table->wait_vfork_release(pid);
  return pid;
}

int64_t Guest::execve(Process& p, const std::string& guest_path, std::vector<std::string> argv,
                      std::vector<std::string> envp) {
  std::string host_path;
  if (guest_path == "/proc/self/exe") {
    host_path = p.exe_path;
  } else {
    auto r = p.policy().resolve(guest_path, Access::Read, true);
    if (auto* err = std::get_if<int>(&r)) {
      if (*err == -EACCES) p.log_denied(guest_path, p.policy().suggestion(guest_path, Access::Read));
      return *err;
    }
    host_path = std::get<PathPolicy::Resolved>(r).host_path;
  }
  struct stat st{};
  if (::stat(host_path.c_str(), &st) != 0) return -errno;
  if (S_ISDIR(st.st_mode)) return -EACCES;
  if (!(st.st_mode & 0111)) return -EACCES;
  try {
    pending_exec_ = load_image(host_path, memory_->user_size(), p.policy());
  } catch (const loader::LoadError& e) {
    p.log(std::string("execve: ") + e.what());
    return e.exit_status == 127 ? -ENOENT : -ENOEXEC;
  } catch (const std::exception& e) {
    p.log(std::string("execve: ") + e.what());
    return -ENOMEM;
  }
  exec_args_ = {std::move(argv), std::move(envp), guest_path};
  return 0;
}

void Guest::kill(int sig) {
  kill_signal_ = sig;
  vcpu_->kick();
}

RunResult Guest::run(uint64_t deadline_ns, bool syscall_pending, bool stop_on_kick) {
  deadline_ns_ = deadline_ns;
  if (deadline_ns) vcpu_->set_deadline(deadline_ns);
  struct DisarmOnReturn {
    Guest& g;
    ~DisarmOnReturn() {
      if (g.deadline_ns_) g.vcpu_->set_deadline(0);
      g.deadline_ns_ = 0;
    }
  } disarm{*this};

  if (syscall_pending)
    if (auto end = complete_syscall(true)) return *end;
  for (;;) {
    const kvm::Exit e = vcpu_->run();
    switch (e.kind) {
      case kvm::Exit::Syscall:
        ++exits_.syscall;
        if (auto end = complete_syscall(false)) return *end;
        break;
      case kvm::Exit::Exception:
        ++exits_.exception;
        return report_exception(e.vector);
      case kvm::Exit::Interrupted:
        ++exits_.interrupted;
        if (int sig = kill_signal_.exchange(0)) return {RunResult::Signaled, 128 + sig, ""};
        if (deadline_ns && monotonic_now() >= deadline_ns) return {RunResult::TimedOut, 124, "timed out"};
        if (stop_on_kick) return {RunResult::Interrupted, 0, ""};
        break;
      default:
        ++exits_.other;
        return {RunResult::Faulted, 128 + SIGSEGV, "guest fault: " + (e.detail.empty() ? std::string("halted") : e.detail)};
    }
  }
}

std::optional<RunResult> Guest::complete_syscall(bool resumed) {
  kvm_regs& r = vcpu_->regs();
  const SyscallArgs args{r.rax, {r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9}};
  const int64_t result = dispatch_syscall(*process_, args);
  if (process_->exit_status) {
    const int status = *process_->exit_status;
    if (status > 128) return RunResult{RunResult::Signaled, status, std::string("killed by signal ") + strsignal(status - 128)};
    return RunResult{RunResult::Exited, status, ""};
  }
  if (pending_exec_) {  // the new program starts at its entry point; nothing of the old one returns
    Image img = std::move(*pending_exec_);
    pending_exec_.reset();
    Process& p = *process_;
    p.fds.close_on_exec();
    for (auto& act : p.sigactions)
      if (act.handler != uint64_t(SIG_IGN)) act = {};
    p.altstack_sp = p.altstack_size = 0;
    p.altstack_flags = 2;
    p.rseq = p.rseq_len = p.robust_list = p.robust_list_len = p.clear_child_tid = 0;
    install(std::move(img), exec_args_.argv, exec_args_.envp, exec_args_.execfn);
    if (p.table) p.table->release_vfork(p.pid);
    return std::nullopt;
  }
  if (process_->pause) {  // left pending: registers untouched, the vCPU still at the syscall's `out`
    process_->pause = false;
    return RunResult{RunResult::Paused, 0, ""};
  }
  r.rax = uint64_t(result);
  // A resumed syscall has no I/O exit for KVM to complete: step over the `out` ourselves. (Leaving rip
  // on the `out` would be wrong either way: a vCPU with an older exit pending would skip it, a fresh
  // one would execute it again.)
  if (resumed) r.rip += kSyscallOutLength;
  vcpu_->regs_changed();
  maybe_refresh_clock_page(*process_);
  if (mm_->tlb_flush_pending()) flush_tlb_before_resume();
  return std::nullopt;
}

std::unique_ptr<Guest> Guest::fork_paused(const kvm::VcpuState& state) const {
  std::unique_ptr<Guest> g(new Guest);
  g->program_path_ = program_path_;
  g->memory_ = kvm::GuestMemory::fork_private(memory_);
  g->mm_ = std::make_shared<kvm::AddressSpace>(*mm_, g->memory_);
  g->mm_->track_host_writes(true);
  g->vm_ = std::make_unique<kvm::Vm>(g->memory_, true);
  g->vcpu_ = std::make_unique<kvm::Vcpu>(*g->vm_, 0);
  g->vcpu_->restore(state);
  return g;
}

void Guest::set_process(std::unique_ptr<Process> p) {
  process_ = std::move(p);
  process_->attach(vcpu_.get());
  process_->host = this;  // a copied Process still names the guest it was copied from
}

// Returns to ring 3 through the entry code's flush path: an iretq frame on the exception stack that
// resumes exactly where sysret would have.
void Guest::flush_tlb_before_resume() {
  kvm_regs& r = vcpu_->regs();
  const uint64_t top = kvm::kStackOffset + kvm::kStackPages * kPageSize;
  const uint64_t frame_offset = top - 5 * sizeof(uint64_t);
  const uint64_t frame[5] = {r.rcx, kvm::kUserCs, r.r11, r.rsp, kvm::kUserDs};
  std::memcpy(memory_->kernel_base() + frame_offset, frame, sizeof frame);
  mm_->note_user_write(kvm::kKernelPhys + frame_offset, sizeof frame);
  r.rsp = kvm::kKernelVirt + frame_offset;
  r.rip = kvm::kKernelVirt + kvm::kEntryOffset + kvm::kEntryFlushIret;
  vcpu_->regs_changed();
  mm_->clear_tlb_flush();
}

RunResult Guest::report_exception(int vector) {
  const kvm_regs& r = vcpu_->regs();
  const uint64_t* frame = nullptr;
  if (r.rsp >= kvm::kKernelVirt && r.rsp - kvm::kKernelVirt + 6 * 8 <= memory_->kernel_size())
    frame = reinterpret_cast<const uint64_t*>(memory_->kernel_base() + (r.rsp - kvm::kKernelVirt));
  std::string msg = kvm::exception_name(vector);
  if (frame) {
    const bool code = has_error_code(vector);
    const uint64_t error = code ? frame[0] : 0;
    const uint64_t rip = frame[code ? 1 : 0], cs = frame[code ? 2 : 1];
    msg += " at rip " + hex(rip);
    if ((cs & 3) == 0) msg += " (in kvmserver's guest kernel code)";
    if (vector == 14) {
      msg += std::string(", ") + ((error & 2) ? "writing" : (error & 16) ? "executing" : "reading") + " address " +
             hex(vcpu_->sregs().cr2) + ((error & 1) ? " (protection violation)" : " (not mapped)");
    } else if (code && error) {
      msg += ", error code " + hex(error);
    }
  }
  const int sig = signal_for(vector);
  return {RunResult::Faulted, 128 + sig, msg + " (SIG" + sigabbrev_np(sig) + ")"};
}

}  // namespace kvms::linux
