#include "linux/guest.hpp"

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <x86intrin.h>
#include <cpuid.h>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <cerrno>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <system_error>
#include <tuple>

#include "kvm/layout.hpp"
#include "linux/host_fs.hpp"
#include "linux/policy.hpp"
#include "linux/process_table.hpp"
#include "linux/procfs.hpp"
#include "linux/syscalls.hpp"
#include "loader/elf_loader.hpp"
#include "loader/script.hpp"

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

// The user context of a thread in the syscall entry code: sysretq resumes at rcx with rflags from r11.
kvm_regs user_at_sysret(const kvm_regs& r) {
  kvm_regs user = r;
  user.rip = r.rcx;
  user.rflags = r.r11;
  return user;
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}

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

// Whether a syscall interrupted by a handled signal may restart (SA_RESTART); sleeps and waits with
// a timeout fail with EINTR instead, as on Linux.
bool restarts_after_handler(const kvm_regs& r) {
  switch (r.rax) {
    case SYS_nanosleep: case SYS_clock_nanosleep: case SYS_epoll_wait: case SYS_epoll_pwait: case SYS_epoll_pwait2:
    case SYS_poll: case SYS_ppoll: case SYS_select: case SYS_pselect6: case SYS_rt_sigsuspend: case SYS_pause:
    case SYS_rt_sigtimedwait:
      return false;
    case SYS_futex:
      return r.r10 == 0;  // FUTEX_WAIT with a timeout
    default:
      return true;
  }
}

// Writes that raise SIGPIPE on a broken pipe or socket (the send family unless MSG_NOSIGNAL).
bool raises_sigpipe(const SyscallArgs& a) {
  switch (a.nr) {
    case SYS_write: case SYS_writev: case SYS_pwritev: case SYS_sendfile: case SYS_splice: case SYS_tee:
    case SYS_vmsplice: return true;
    case SYS_sendto: return !(a.a[3] & MSG_NOSIGNAL);
    case SYS_sendmsg: case SYS_sendmmsg: return !(a.a[2] & MSG_NOSIGNAL);
    default: return false;
  }
}

bool has_error_code(int vector) { return kvm::exception_has_error_code(vector); }

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
// system library directories are readable by default, see README "Libraries"), and opened without
// following symlinks, so a program the guest wrote cannot name a file it may not read as its
// interpreter and find it in its memory.
static loader::FileReader interpreter_reader(const PathPolicy& policy) {
  return [&policy](const std::string& path) {
    auto r = policy.resolve(path, Access::Read, true);
    if (auto* err = std::get_if<int>(&r)) {
      const std::string why = *err == -EACCES ? "not readable (allow with " + policy.suggestion(path, Access::Read) + ")"
                                              : std::strerror(-*err);
      throw loader::LoadError(*err == -ENOENT ? 127 : 126, path + ": " + why);
    }
    const std::string host = std::get<PathPolicy::Resolved>(r).host_path;
    const int fd = fileops::open_host(host, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0) throw loader::LoadError(fd == -ENOENT ? 127 : 126, path + ": " + std::strerror(-fd));
    struct CloseOnExit {
      int fd;
      ~CloseOnExit() { ::close(fd); }
    } closer{fd};
    try {
      return loader::read_program_fd(fd, host);
    } catch (const loader::LoadError& e) {  // named as the program names it, not by its host path
      const std::string what = e.what();
      throw loader::LoadError(e.exit_status, what.starts_with(host) ? path + what.substr(host.size()) : what);
    }
  };
}

Guest::Image Guest::load_image(const std::string& host_path, const std::vector<uint8_t>& file, uint64_t user_size,
                               const PathPolicy& policy) {
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
  finish_threads();
  program_path_ = img.path;
  memory_ = img.memory;
  mm_ = img.mm;
  // execve keeps the main thread's object (the vCPU loop that called it is still using it); only its
  // vCPU is new, in the new VM.
  if (threads_.empty()) threads_.push_back(std::make_unique<GuestThread>());
  GuestThread& main = *threads_.front();
  Process& p = *process_;
  {
    // Under the threads' lock: kill() from another guest process kicks main's vCPU.
    std::lock_guard<std::mutex> lk(threads_mutex_);
    main.vcpu.reset();
    vm_ = std::make_unique<kvm::Vm>(memory_, false);
    main.tid = p.pid;
    main.vcpu = std::make_unique<kvm::Vcpu>(*vm_, 0);
  }
  main.state = GuestThread::Running;
  main.pending = false;
  kvm::Vcpu& vcpu = *main.vcpu;
  vcpu.bind_to_this_thread();
  if (deadline_ns_) vcpu.set_deadline(deadline_ns_);

  p.set_address_space(mm_);
  p.keep_only_thread(p.thread().tid, p.pid);
  p.attach(&vcpu);
  p.set_vcpu_count(1);
  p.exe_path = img.path;
  p.brk_start = p.brk_current = img.elf.brk_start;
  p.stack_top = img.stack_top;
  p.stack_size = kStackSize;
  p.vdso_base = img.vdso;
  p.clock = {};
  p.clock.tsc_khz = vcpu.tsc_khz();
  p.clock.tsc_offset = int64_t(vcpu.guest_tsc() - __rdtsc());
  vm_->set_tsc_offset(p.clock.tsc_offset);  // later threads' vCPUs, forks and workers: the same timeline
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
  std::tie(p.env_start, p.env_end) = loader::environment_strings(*mm_, rsp);
  const std::string name = execfn.substr(execfn.rfind('/') + 1);  // Linux's comm: the exec'd file name
  ThreadContext& main_ctx = p.main_thread();
  std::memset(main_ctx.comm, 0, sizeof main_ctx.comm);
  std::strncpy(main_ctx.comm, name.c_str(), sizeof main_ctx.comm - 1);
  vcpu.enter_user_mode(mm_->cr3(), img.start, rsp);
  threads_.front()->flush_generation = mm_->flush_generation();
}

std::unique_ptr<Guest> Guest::create(const GuestConfig& config) {
  std::unique_ptr<Guest> g(new Guest);
  const std::string path = find_program(config.program);
  Image img = load_image(path, loader::read_program_file(path), page_up(config.address_space), *config.policy);
  g->process_ = std::make_unique<Process>(img.mm, config.policy, config.process);
  Process& p = *g->process_;
  p.cwd = config.cwd;
  p.host = g.get();
  p.table = std::make_shared<ProcessTable>(p.pid);
  p.view = p.table->view(p.pid);
  const char* stdio_names[] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
  for (int fd = 0; fd < 3; ++fd)
    if (auto f = inherit_host_fd(fd, stdio_names[fd])) p.fds.install_at(fd, std::move(f), false);
  g->install(std::move(img), config.argv, config.envp, config.program);
  // The program the user named (not the guest): its canonical path is what /proc/self/exe shows and
  // opens from now on, without following symlinks, whatever the guest puts at that path later.
  if (char* real = ::realpath(path.c_str(), nullptr)) {
    p.exe_path = real;
    ::free(real);
  }
  return g;
}

std::unique_ptr<Guest> Guest::from_parts(std::string program_path, std::shared_ptr<kvm::GuestMemory> memory,
                                         std::shared_ptr<kvm::AddressSpace> mm, std::unique_ptr<Process> process) {
  std::unique_ptr<Guest> g(new Guest);
  g->program_path_ = std::move(program_path);
  g->memory_ = std::move(memory);
  g->mm_ = std::move(mm);
  g->process_ = std::move(process);
  g->process_->host = g.get();
  g->process_->set_address_space(g->mm_);
  return g;
}

std::shared_ptr<kvm::GuestMemory> Guest::snapshot_memory() const { return mm_->snapshot_memory(); }

int64_t Guest::fork(Process& p, const CloneRequest& req) {
  const uint64_t flags = req.flags, parent_tid = req.parent_tid, child_tid = req.child_tid;
  Charge slot, memory;
  if (int error = p.charge_fork(slot, memory)) return error;
  std::unique_ptr<Guest> child(new Guest);
  kvm::VcpuState state = p.vcpu().save();  // only the calling thread goes on in the child
  state.regs.rax = 0;
  state.regs.rip += kSyscallOutLength;  // the child returns from the syscall the parent is in
  if (req.stack) state.regs.rsp = req.stack;
  if (flags & CLONE_SETTLS) state.fs_base = req.tls;
  try {
    child->program_path_ = program_path_;
    child->memory_ = snapshot_memory();
    child->mm_ = std::make_shared<kvm::AddressSpace>(*mm_, child->memory_);
    child->mm_->apply_fork_flags(kvm::kWipeOnFork | kvm::kDontFork);  // MADV_WIPEONFORK / MADV_DONTFORK
    child->vm_ = std::make_unique<kvm::Vm>(child->memory_, false);
    child->vm_->set_tsc_offset(p.clock.tsc_offset);  // the clock page it inherits is on that timeline
    auto main = std::make_unique<GuestThread>();
    main->vcpu = std::make_unique<kvm::Vcpu>(*child->vm_, 0);
    main->vcpu->restore(state);
    main->state = GuestThread::Running;
    child->threads_.push_back(std::move(main));
  } catch (const std::exception& e) {
    p.log_host_failure(std::string("fork failed on the host, the guest sees ENOMEM: ") + e.what());
    return -ENOMEM;
  }
  Guest* raw = child.get();
  // CLONE_PARENT: a sibling of the caller, whose parent is told when it ends.
  const int ppid = (flags & CLONE_PARENT) ? p.ppid : p.pid;
  const int pid = p.table->add_child(ppid, [raw](const siginfo_t& info) { raw->receive_signal(info); }, int(flags & 0xff));
  if (pid < 0) return pid;  // the tree is being ended
  auto cp = std::make_unique<Process>(p, child->mm_);
  cp->memory_charge = std::move(memory);
  cp->process_slot = std::move(slot);
  cp->set_vcpu_count(1);
  cp->pid = pid;
  cp->keep_only_thread(p.thread().tid, pid);
  if (flags & 0x100000000ull)  // clone3's CLONE_CLEAR_SIGHAND: handlers back to the default, SIG_IGN kept
    for (auto& act : cp->sigactions)
      if (act.handler != uint64_t(SIG_IGN)) act = {};
  for (auto& [tid, t] : cp->threads) {  // a child starts with no signals pending
    t.pending_signals = 0;
    t.pending_queue.clear();
  }
  child->threads_.front()->tid = pid;
  cp->ppid = ppid;
  cp->view = p.table->view(pid);
  if (cp->view) {
    std::lock_guard<std::mutex> lk(cp->view->mutex);
    cp->view->comm = p.thread().comm;
  }
  publish_child_disposition(*cp);  // inherited with the handlers (after CLONE_CLEAR_SIGHAND)
  cp->server = nullptr;
  cp->host = raw;
  cp->exit_status.reset();
  cp->parent_death_signal = 0;
  cp->child_subreaper = false;
  cp->thread().clear_child_tid = (flags & CLONE_CHILD_CLEARTID) ? child_tid : 0;
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
    const uint32_t uid = child->has_process() ? child->process().uid : 0;
    // Its CPU time: this host thread ran its main thread (guest time and kvmserver's handling);
    // its other threads' ended before run() returned. Plus its waited-for children's.
    const uint64_t cpu_ns = thread_cpu_ns() + child->other_threads_cpu_ns() + table->children_cpu_ns(pid);
    table->detach(pid);  // no kill reaches the child from here on: it is about to be destroyed
    child.reset();       // closes the child's fds before the parent can see it gone (pipe EOF)
    table->exited(pid, status, uid, cpu_ns);
  }).detach();
  if (flags & CLONE_VFORK) {
    Process::BlockingSection unlocked(p);
    p.table->wait_vfork_release(pid);
  }
  return pid;
}

int64_t Guest::execve(Process& p, const ExecName& name, std::vector<std::string> argv,
                      std::vector<std::string> envp) {
  execfn_ = name.filename;  // AT_EXECFN: the name the guest gave, also when a script's interpreter runs
  return exec_file(p, name, std::move(argv), std::move(envp), 0);
}

int64_t Guest::exec_file(Process& p, const ExecName& name, std::vector<std::string> argv,
                         std::vector<std::string> envp, int script_depth) {
  const std::string& guest_path = name.guest_path;
  std::string host_path;
  auto where = procfs::lookup(p, guest_path, true);
  if (auto* err = std::get_if<int>(&where)) return *err;
  if (auto* made_up = std::get_if<procfs::Node>(&where)) {
    if (made_up->kind != procfs::Node::Kind::ExeLink) return -EACCES;  // not an executable file
    host_path = p.exe_path;  // /proc/self/exe: the running program again
  } else {
    const std::string& path = std::get<std::string>(where);
    auto r = p.policy().resolve(path, Access::Read, true);
    if (auto* err = std::get_if<int>(&r)) {
      if (*err == -EACCES) p.log_denied(path, p.policy().suggestion(path, Access::Read));
      return *err;
    }
    host_path = std::get<PathPolicy::Resolved>(r).host_path;
  }
  // Opened without following symlinks (the policy checked this canonical path; a directory of it
  // swapped for a symlink since must not lead elsewhere), and read from this fd only.
  const int fd = fileops::open_host(host_path, O_RDONLY | O_NONBLOCK, 0);
  if (fd < 0) return fd;
  struct CloseOnExit {
    int fd;
    ~CloseOnExit() { ::close(fd); }
  } closer{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0) return -errno;
  if (S_ISDIR(st.st_mode)) return -EACCES;
  if (p.threads.size() > 1 && &p.thread() != &p.main_thread()) {
    p.log("execve from a thread other than the main thread of a threaded program is not supported");
    return -ENOSYS;
  }
  if (!(st.st_mode & 0111)) return -EACCES;
  {
    char head[256];
    const ssize_t n = ::pread(fd, head, sizeof head, 0);
    if (n >= 2 && head[0] == '#' && head[1] == '!') {
      const auto line = loader::script_line(head, size_t(n));
      if (!line) return -ENOEXEC;
      if (name.filename_gone) return -ENOENT;  // the interpreter could not open the script
      if (script_depth >= 4) return -ELOOP;  // Linux: at most 4 scripts before the binary
      // argv becomes: interpreter, its argument (if any), the script's path, then argv[1..].
      std::vector<std::string> args{line->interpreter};
      if (!line->argument.empty()) args.push_back(line->argument);
      args.push_back(name.filename);
      if (argv.size() > 1) args.insert(args.end(), std::make_move_iterator(argv.begin() + 1), std::make_move_iterator(argv.end()));
      ExecName interpreter{line->interpreter, line->interpreter};
      if (interpreter.guest_path.front() != '/')
        interpreter.guest_path = (p.cwd == "/" ? "" : p.cwd) + "/" + interpreter.guest_path;
      return exec_file(p, interpreter, std::move(args), std::move(envp), script_depth + 1);
    }
  }
  // Reading the file and the new image are host memory: a program bigger than what the tree has
  // left is refused before it is read.
  const ResourceAccount& account = p.account();
  const uint64_t left = account.limit(ResourceAccount::kMemory) - std::min(account.used(ResourceAccount::kMemory),
                                                                           account.limit(ResourceAccount::kMemory));
  if (uint64_t(st.st_size) > left) {
    p.log_refusal(ResourceAccount::kMemory, "execve " + guest_path + ": ENOMEM");
    return -ENOMEM;
  }
  try {
    pending_exec_ = load_image(host_path, loader::read_program_fd(fd, host_path, left), memory_->user_size(), p.policy());
  } catch (const loader::LoadError& e) {
    p.log(std::string("execve: ") + e.what());
    return e.exit_status == 127 ? -ENOENT : -ENOEXEC;
  } catch (const std::exception& e) {
    p.log_host_failure(std::string("execve failed on the host, the guest sees ENOMEM: ") + e.what());
    return -ENOMEM;
  }
  // Until the old image is gone, both are held: the new one is reserved now and the reservation
  // dropped once the process's own charge follows the new image (complete_syscall).
  exec_reservation_ = Charge(p.shared_account(), ResourceAccount::kMemory);
  if (!exec_reservation_.grow(pending_exec_->mm->mapped_bytes() + pending_exec_->mm->page_table_pages() * kvm::kPageSize)) {
    pending_exec_.reset();
    p.log_refusal(ResourceAccount::kMemory, "execve " + guest_path + ": ENOMEM");
    return -ENOMEM;
  }
  exec_args_ = {std::move(argv), std::move(envp), execfn_};
  return 0;
}

void Guest::kill(int sig) {
  kill_signal_ = sig;
  if (process_) {
    process_->lock.stop = true;
    process_->lock.changed.notify_all();
  }
  std::lock_guard<std::mutex> lk(threads_mutex_);
  for (auto& t : threads_)
    if (t->state != GuestThread::Done && t->vcpu) t->vcpu->kick();
}

void Guest::receive_signal(const siginfo_t& info) {
  if (info.si_signo == SIGKILL) return kill(SIGKILL);
  {
    std::lock_guard<std::mutex> lk(incoming_mutex_);
    if (incoming_.size() >= 4096) return;  // a flood: the rest is lost, as past RLIMIT_SIGPENDING
    incoming_.push_back(info);
    has_incoming_ = true;
  }
  if (process_) process_->lock.changed.notify_all();
  kick_threads();
}

void Guest::wait_while_stopped() {
  Process& p = *process_;
  if (const int sig = p.lock.group_stop.load()) {
    kick_threads();  // the other threads stop at their next exit
    if (!stop_reported_.exchange(true) && p.table) p.table->stopped(p.pid, sig, p.uid);
    std::unique_lock<std::mutex> lk(p.lock.mutex);
    while (p.lock.group_stop.load() && !kill_signal_.load() && !ending_) {
      take_incoming_locked();  // another process's SIGCONT ends the stop as it is queued
      if (!p.lock.group_stop.load()) break;
      p.lock.changed.wait_for(lk, std::chrono::milliseconds(50));
    }
  }
  if (p.lock.continued.exchange(false)) {
    const bool was_reported = stop_reported_.exchange(false);
    if (was_reported && p.table) p.table->continued(p.pid, p.uid);
  }
}

void Guest::kick_threads() {
  std::lock_guard<std::mutex> lk(threads_mutex_);
  for (auto& t : threads_)
    if (t->state == GuestThread::Running && t->vcpu) t->vcpu->kick();
}

void Guest::take_incoming_locked() {
  if (!has_incoming_.load()) return;
  std::vector<siginfo_t> taken;
  {
    std::lock_guard<std::mutex> lk(incoming_mutex_);
    taken.swap(incoming_);
    has_incoming_ = false;
  }
  for (const siginfo_t& info : taken) post_signal_locked(*process_, info, 0);
}

Guest::~Guest() {
  try {
    finish_threads();
  } catch (...) {
  }
}

void Guest::end_process(const RunResult& r) {
  {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    if (!end_result_) end_result_ = r;
    ending_ = true;
    for (auto& t : threads_)
      if (t->state == GuestThread::Running) t->vcpu->kick();
  }
  process_->lock.stop = true;
  process_->lock.changed.notify_all();
  threads_cv_.notify_all();
}

// Stops every other running thread at its next VM exit or syscall boundary. A kick can land just
// before a thread enters a blocking host call and be lost, so it is repeated until the thread parks.
void Guest::stop_other_threads(GuestThread& self) {
  process_->lock.stop = true;
  process_->lock.changed.notify_all();
  std::unique_lock<std::mutex> lk(threads_mutex_);
  for (;;) {
    bool all_stopped = true;
    for (auto& t : threads_)
      if (t.get() != &self && t->state == GuestThread::Running) {
        all_stopped = false;
        t->vcpu->kick();
      }
    if (all_stopped) break;
    threads_cv_.wait_for(lk, std::chrono::milliseconds(10));
    process_->lock.changed.notify_all();
  }
}

void Guest::resume_other_threads(GuestThread& self) {
  if (!ending_) process_->lock.stop = false;
  std::lock_guard<std::mutex> lk(threads_mutex_);
  for (auto& t : threads_)
    if (t.get() != &self && t->state == GuestThread::Parked) t->state = GuestThread::Running;
  threads_cv_.notify_all();
}

void Guest::finish_threads() {
  if (threads_.size() <= 1) return;
  if (process_) stop_other_threads(*threads_.front());
  {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    for (size_t i = 1; i < threads_.size(); ++i) threads_[i]->state = GuestThread::Done;
  }
  threads_cv_.notify_all();
  for (size_t i = 1; i < threads_.size(); ++i)
    if (threads_[i]->host.joinable()) threads_[i]->host.join();
  threads_.resize(1);
}

void Guest::thread_host_main(GuestThread* t) {
  pthread_setname_np(pthread_self(), ("guest tid " + std::to_string(t->tid)).c_str());
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(threads_mutex_);
      threads_cv_.wait(lk, [&] { return t->state != GuestThread::Parked; });
      if (t->state == GuestThread::Done) return;
    }
    RunResult r;
    const uint64_t cpu_at_start = thread_cpu_ns();
    try {
      r = run_thread(*t, false, 0, false);
    } catch (const std::exception& e) {
      r = {RunResult::Faulted, 128 + SIGSEGV, std::string("internal error: ") + e.what()};
      end_process(r);
    }
    other_threads_cpu_ns_ += thread_cpu_ns() - cpu_at_start;  // the process's CPU time (wait4's rusage)
    std::lock_guard<std::mutex> lk(threads_mutex_);
    if (t->state == GuestThread::Running) t->state = r.reason == RunResult::Exited ? GuestThread::Done : GuestThread::Parked;
    threads_cv_.notify_all();
    if (t->state == GuestThread::Done) return;
  }
}

void Guest::start_host_thread(GuestThread& t) {
  if (t.host.joinable()) t.host.join();
  t.host = std::thread([this, tp = &t] { thread_host_main(tp); });
}

Guest::GuestThread* Guest::new_thread_slot(Process& p) {
  {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    for (size_t i = 1; i < threads_.size(); ++i)
      if (threads_[i]->state == GuestThread::Done) {
        if (threads_[i]->host.joinable()) threads_[i]->host.join();  // it has returned or is returning
        return threads_[i].get();
      }
  }
  // A new vCPU (and host thread) is host memory the tree pays for.
  if (!p.reserve_memory(host_cost::kVcpu)) return nullptr;
  auto t = std::make_unique<GuestThread>();
  t->vcpu = std::make_unique<kvm::Vcpu>(*vm_, int(threads_.size()));
  std::lock_guard<std::mutex> lk(threads_mutex_);
  threads_.push_back(std::move(t));
  p.set_vcpu_count(threads_.size());
  return threads_.back().get();
}

int64_t Guest::clone_thread(Process& p, const CloneRequest& req) {
  if (!p.table) return -EAGAIN;
  if (p.threads.size() >= p.limits().threads) {
    p.log_cap("--max-threads", p.limits().threads, "clone: EAGAIN");
    return -EAGAIN;
  }
  kvm::VcpuState state = p.vcpu().save();
  state.regs.rax = 0;
  state.regs.rip += kSyscallOutLength;
  state.regs.rsp = req.stack;
  if (req.flags & CLONE_SETTLS) {
    state.sregs.fs.base = req.tls;
    state.sregs.fs.present = 1;
    state.sregs.fs.unusable = 0;
  }
  GuestThread* t = nullptr;
  try {
    t = new_thread_slot(p);
    if (!t) return -ENOMEM;
    t->vcpu->restore(state);
  } catch (const std::exception& e) {
    p.log_host_failure(std::string("clone: cannot add a thread on the host: ") + e.what());
    if (t) {  // the slot is free again for the next clone
      std::lock_guard<std::mutex> lk(threads_mutex_);
      t->state = GuestThread::Done;
    }
    return -EAGAIN;
  }
  const int tid = p.table->allocate_id();
  ThreadContext ctx = p.thread();
  ctx.tid = tid;
  ctx.vcpu = t->vcpu.get();
  ctx.clear_child_tid = (req.flags & CLONE_CHILD_CLEARTID) ? req.child_tid : 0;
  ctx.robust_list = ctx.robust_list_len = ctx.rseq = ctx.rseq_len = 0;
  ctx.pending_signals = 0;
  ctx.pending_queue.clear();
  ctx.altstack_sp = ctx.altstack_size = 0;
  ctx.altstack_flags = 2;
  ctx.exit_code.reset();
  // Like Linux, a tid that cannot be stored is not the clone's failure (the thread exists).
  if (req.flags & CLONE_CHILD_SETTID) p.mm().write<int32_t>(req.child_tid, tid);
  if (req.flags & CLONE_PARENT_SETTID) p.mm().write<int32_t>(req.parent_tid, tid);
  p.threads[tid] = ctx;
  t->tid = tid;
  t->pending = false;
  t->flush_generation = mm_->flush_generation();
  {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    t->state = GuestThread::Running;
  }
  start_host_thread(*t);
  return tid;
}

RunResult Guest::run(uint64_t deadline_ns, bool stop_on_kick) {
  GuestThread& main = *threads_.front();
  deadline_ns_ = deadline_ns;
  if (deadline_ns) main.vcpu->set_deadline(deadline_ns);
  // The first process of its table is reachable by its children's kill(2) and SIGCHLD while it runs.
  std::shared_ptr<ProcessTable> table = process_ && process_->table && process_->table->root_pid() == process_->pid
                                            ? process_->table : nullptr;
  if (table) table->attach_root([this](const siginfo_t& info) { receive_signal(info); });
  struct DisarmOnReturn {
    Guest& g;
    GuestThread& main;
    std::shared_ptr<ProcessTable> table;
    ~DisarmOnReturn() {
      if (table) table->detach_root();
      if (g.deadline_ns_) main.vcpu->set_deadline(0);
      g.deadline_ns_ = 0;
    }
  } disarm{*this, main, table};
  pause_requested_ = false;  // (one left from a run that returned otherwise is obsolete)
  {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    if (main.state == GuestThread::Parked) main.state = GuestThread::Running;
  }
  resume_other_threads(main);
  RunResult r = run_thread(main, true, deadline_ns, stop_on_kick);
  stop_other_threads(main);
  return r;
}

std::optional<RunResult> Guest::check_stop(GuestThread& t, bool is_main, uint64_t deadline_ns, bool kicked,
                                           bool stop_on_kick) {
  if (int sig = kill_signal_.load()) {
    if (!is_main) return RunResult{RunResult::Signaled, 128 + sig, ""};
    kill_signal_ = 0;
    end_process({RunResult::Signaled, 128 + sig, ""});
    return RunResult{RunResult::Signaled, 128 + sig, ""};
  }
  if (ending_) {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    return *end_result_;
  }
  if (!is_main) {
    if (process_->lock.stop) return RunResult{RunResult::Paused, 0, ""};
    return std::nullopt;
  }
  if (pause_requested_.exchange(false)) return RunResult{RunResult::Paused, 0, ""};
  if (deadline_ns && monotonic_now() >= deadline_ns) {
    end_process({RunResult::TimedOut, 124, "timed out"});
    return RunResult{RunResult::TimedOut, 124, "timed out"};
  }
  if (kicked && stop_on_kick) return RunResult{RunResult::Interrupted, 0, ""};
  return std::nullopt;
}

RunResult Guest::run_thread(GuestThread& t, bool is_main, uint64_t deadline_ns, bool stop_on_kick) {
  t.vcpu->bind_to_this_thread();  // before any syscall: a pending one may block in the host at once
  bool kicked = false;
  for (;;) {
    // Cleared before the checks, so a kick that lands after them still interrupts what comes next.
    if (kicked) t.vcpu->run_area()->immediate_exit = 0;
    if (auto stop = check_stop(t, is_main, deadline_ns, kicked, stop_on_kick)) return *stop;
    if (process_->lock.group_stop.load() || process_->lock.continued.load()) {
      wait_while_stopped();
      kicked = true;  // look again: a SIGKILL, or signals that came meanwhile
      continue;
    }
    if (kicked && has_deliverable_signal(t)) {
      std::unique_lock<std::mutex> lk(process_->lock.mutex);
      kvm_regs& r = t.vcpu->regs();
      std::optional<RunResult> end;
      // A stop signal interrupting a syscall: the call stays pending and starts again once the
      // process is continued, as Linux restarts it after a stop (no handler runs).
      if (take_default_stop(*process_, process_->threads.at(t.tid))) continue;
      if (t.pending) {  // a syscall the signal interrupted: it restarts after the handler, or fails
        kvm_regs user = user_at_sysret(r);
        const int sig = __builtin_ctzll(process_->threads.at(t.tid).pending_signals & ~process_->threads.at(t.tid).sigmask) + 1;
        if ((process_->sigactions[sig].flags & SA_RESTART) && restarts_after_handler(r)) {
          user.rip -= 2;  // the syscall instruction, with rax still the syscall number
        } else {
          user.rax = uint64_t(-EINTR);
        }
        r.rip += kSyscallOutLength;
        t.pending = false;
        end = deliver_signal(t, ResumePath::Sysret, user);
      } else if ((t.vcpu->sregs().cs.selector & 3) == 3) {  // stopped in user code
        end = deliver_signal(t, ResumePath::Direct, r);
      } else {
        end = deliver_signal_in_entry(t);
      }
      lk.unlock();
      if (end) {
        end_process(*end);
        return *end;
      }
    }
    kicked = false;
    if (t.pending) {
      if (auto end = complete_syscall(t)) return *end;
      kicked = t.pending;  // interrupted again
      continue;
    }
    const kvm::Exit e = t.vcpu->run();
    switch (e.kind) {
      case kvm::Exit::Syscall:
        ++exits_.syscall;
        t.last_spurious_fault = 0;
        if (auto end = complete_syscall(t)) return *end;
        kicked = t.pending;
        break;
      case kvm::Exit::Exception:
        ++exits_.exception;
        if (auto end = handle_exception(t, e.vector)) return *end;
        break;
      case kvm::Exit::Interrupted:
        ++exits_.interrupted;
        kicked = true;
        break;
      case kvm::Exit::Bus: {
        ++exits_.other;
        RunResult r{RunResult::Faulted, 128 + SIGBUS, "guest touched " + e.detail + " (SIGBUS)"};
        end_process(r);
        return r;
      }
      default: {
        ++exits_.other;
        RunResult r{RunResult::Faulted, 128 + SIGSEGV, "guest fault: " + (e.detail.empty() ? std::string("halted") : e.detail)};
        end_process(r);
        return r;
      }
    }
  }
}

std::optional<RunResult> Guest::complete_syscall(GuestThread& t) {
  kvm::Vcpu& vcpu = *t.vcpu;
  kvm_regs& r = vcpu.regs();
  const SyscallArgs args{r.rax, {r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9}};
  if (args.nr == SYS_rt_sigreturn) return sigreturn(t);
  Process& p = *process_;
  std::unique_lock<std::mutex> lk(p.lock.mutex);
  Process::holds_lock = true;
  auto ctx = p.threads.find(t.tid);
  if (ctx == p.threads.end()) throw std::logic_error("guest thread without a thread context");
  p.make_current(&ctx->second);
  const bool rerun = t.pending;  // run again after a kick (kept_across_restart)
  ctx->second.restarting = rerun;
  const int64_t result = dispatch_syscall(p, args);
  Process::holds_lock = false;
  if (rerun)  // looked up again: the call may have changed the thread table (execve)
    if (auto self = p.threads.find(t.tid); self != p.threads.end()) self->second.restarting = false;

  // Interrupted by a kick (a stop, a kill, a deadline): the syscall starts again from the beginning
  // once the thread goes on, as Linux restarts a syscall after a signal handled in the kernel.
  if ((result == -EINTR || result == -512 /* ERESTARTSYS */) && (vcpu.run_area()->immediate_exit || p.lock.stop)) {
    t.pending = true;
    return std::nullopt;
  }
  if (ctx->second.exit_code && !p.exit_status) {  // exit(2) of one thread of several
    const ThreadContext gone = ctx->second;
    p.threads.erase(ctx);
    p.make_current(nullptr);
    if (gone.robust_list) release_robust_futexes(p, gone.robust_list, gone.tid);
    if (gone.clear_child_tid && p.mm().write<int32_t>(gone.clear_child_tid, 0)) futex_wake(p, gone.clear_child_tid, 1, ~0u);
    if (p.threads.empty()) {
      p.exit_status = *gone.exit_code;
    } else {
      lk.unlock();
      if (&t != threads_.front().get()) return RunResult{RunResult::Exited, *gone.exit_code, ""};
      // The main thread is gone but the process lives on in its other threads: wait for them.
      std::unique_lock<std::mutex> tl(threads_mutex_);
      threads_cv_.wait(tl, [&] {
        if (ending_) return true;
        for (size_t i = 1; i < threads_.size(); ++i)
          if (threads_[i]->state != GuestThread::Done) return false;
        return true;
      });
      if (end_result_) return *end_result_;
      return RunResult{RunResult::Exited, 0, ""};
    }
  }
  if (p.exit_status) {
    const int status = *p.exit_status;
    RunResult end = status > 128 ? RunResult{RunResult::Signaled, status, std::string("killed by signal ") + strsignal(status - 128)}
                                 : RunResult{RunResult::Exited, status, ""};
    lk.unlock();
    end_process(end);
    std::lock_guard<std::mutex> tl(threads_mutex_);
    return *end_result_;
  }
  if (pending_exec_) {  // the new program starts at its entry point; nothing of the old one returns
    lk.unlock();
    Image img = std::move(*pending_exec_);
    pending_exec_.reset();
    p.fds.close_on_exec();
    for (auto& act : p.sigactions)
      if (act.handler != uint64_t(SIG_IGN)) act = {};
    publish_child_disposition(p);
    p.posix_timers.by_id.clear();  // POSIX timers end at exec; ITIMER_REAL goes on
    ThreadContext& self = p.thread();
    self.altstack_sp = self.altstack_size = 0;
    self.altstack_flags = 2;
    self.rseq = self.rseq_len = self.robust_list = self.robust_list_len = self.clear_child_tid = 0;
    install(std::move(img), exec_args_.argv, exec_args_.envp, exec_args_.execfn);
    {
      std::lock_guard<std::mutex> relock(p.lock.mutex);
      p.settle_memory();
    }
    exec_reservation_.reset();
    if (p.table) p.table->release_vfork(p.pid);
    return std::nullopt;
  }
  if (p.pause) {  // left pending: registers untouched, the vCPU still at the syscall's `out`
    p.pause = false;
    t.pending = true;
    // A wait's own signal mask (ppoll, epoll_pwait...) is set again when the syscall runs again:
    // paused, the thread has its own mask (what a worker or a snapshot copies).
    ThreadContext& self = p.threads.at(t.tid);
    if (self.saved_sigmask) {
      self.sigmask = *self.saved_sigmask;
      self.saved_sigmask.reset();
    }
    self.restart_end.reset();  // its timeout starts again too: the pause is not the guest's time
    paused_syscall_ = args.nr;
    if (&t != threads_.front().get()) {
      // Another thread waits on the listener (Go's netpoller, any thread's epoll loop): the main
      // thread must return from run() too; it stops at its next chance (a wait is kicked and
      // restarts later).
      pause_requested_ = true;
      threads_.front()->vcpu->kick();
      p.lock.changed.notify_all();
    }
    return RunResult{RunResult::Paused, 0, ""};
  }
  t.pending = false;
  r.rax = uint64_t(result);
  // Step over the `out` ourselves rather than leave it to KVM's completion of the I/O exit: then the
  // registers alone say where the thread stands, so a snapshot taken now (a template's thread, a
  // fork) resumes correctly on any vCPU, and a resumed syscall (no I/O exit pending) works the same.
  // KVM skips the instruction only when rip is still on it.
  r.rip += kSyscallOutLength;
  vcpu.regs_changed();
  if (result == -EPIPE && raises_sigpipe(args)) send_signal_to_thread(p, ctx->second, SIGPIPE, SI_USER, p.pid);
  take_incoming_locked();  // another process's signal that came during the call: delivered on return
  if (ctx->second.pending_signals & ~ctx->second.sigmask) {
    auto end = deliver_signal(t, ResumePath::Sysret, user_at_sysret(r));
    if (end) {
      lk.unlock();
      end_process(*end);
      return end;
    }
  }
  if (auto self = p.threads.find(t.tid); self != p.threads.end() && self->second.saved_sigmask) {
    self->second.sigmask = *self->second.saved_sigmask;  // no handler's frame took it
    self->second.saved_sigmask.reset();
  }
  maybe_refresh_clock_page(p);
  if (t.flush_generation != mm_->flush_generation()) flush_tlb_before_resume(t);
  return std::nullopt;
}

std::vector<ThreadSnapshot> Guest::save_threads() {
  std::vector<ThreadSnapshot> out;
  for (auto& t : threads_) {
    if (t->state == GuestThread::Done) continue;
    out.push_back({t->tid, t->vcpu->save(), t->pending});
  }
  return out;
}

std::unique_ptr<Guest> Guest::fork_paused(const std::vector<ThreadSnapshot>& threads) const {
  std::unique_ptr<Guest> g(new Guest);
  g->program_path_ = program_path_;
  g->memory_ = kvm::GuestMemory::fork_private(memory_);
  g->mm_ = std::make_shared<kvm::AddressSpace>(*mm_, g->memory_);
  g->mm_->track_host_writes(true);
  g->vm_ = std::make_unique<kvm::Vm>(g->memory_, true);
  g->vm_->set_tsc_offset(process_->clock.tsc_offset);  // the template's clock page is on that timeline
  g->restore_threads(threads);
  return g;
}

void Guest::restore_threads(const std::vector<ThreadSnapshot>& snapshots) {
  // Threads started since the snapshot end; their vCPUs stay for later threads (KVM cannot remove one).
  {
    std::lock_guard<std::mutex> lk(threads_mutex_);
    for (size_t i = snapshots.size(); i < threads_.size(); ++i) threads_[i]->state = GuestThread::Done;
  }
  threads_cv_.notify_all();
  for (size_t i = snapshots.size(); i < threads_.size(); ++i)
    if (threads_[i]->host.joinable()) threads_[i]->host.join();
  for (size_t i = 0; i < snapshots.size(); ++i) {
    if (i == threads_.size()) {
      auto t = std::make_unique<GuestThread>();
      t->vcpu = std::make_unique<kvm::Vcpu>(*vm_, int(i));
      std::lock_guard<std::mutex> lk(threads_mutex_);
      t->state = i == 0 ? GuestThread::Running : GuestThread::Done;
      threads_.push_back(std::move(t));
    }
    GuestThread& t = *threads_[i];
    t.tid = snapshots[i].tid;
    t.pending = snapshots[i].pending;
    t.vcpu->restore(snapshots[i].state);
    t.flush_generation = mm_->flush_generation();
    if (i == 0) continue;
    bool restart;
    {
      std::lock_guard<std::mutex> lk(threads_mutex_);
      restart = t.state == GuestThread::Done;
      t.state = GuestThread::Parked;
    }
    if (restart) start_host_thread(t);
  }
  ending_ = false;
  end_result_.reset();
  kill_signal_ = 0;
  if (process_) set_process(std::move(process_));
}

void Guest::harvest_dirty(std::vector<uint64_t>& pages) {
  for (auto& t : threads_) t->vcpu->harvest_dirty(pages);
}

void Guest::set_process(std::unique_ptr<Process> p) {
  process_ = std::move(p);
  process_->host = this;  // a copied Process still names the guest it was copied from
  process_->set_vcpu_count(threads_.size());
  for (auto& t : threads_) {
    auto ctx = process_->threads.find(t->tid);
    if (ctx != process_->threads.end()) ctx->second.vcpu = t->vcpu.get();
  }
  process_->make_current(nullptr);
}

// Returns to ring 3 through the entry code's flush path: an iretq frame on the vCPU's own exception
// stack that resumes exactly where sysret would have.
void Guest::flush_tlb_before_resume(GuestThread& t) {
  kvm::Vcpu& vcpu = *t.vcpu;
  kvm_regs& r = vcpu.regs();
  const uint64_t frame[5] = {r.rcx, kvm::kUserCs, r.r11, r.rsp, kvm::kUserDs};
  r.rsp = mm_->push_iret_frame(vcpu.id(), frame);
  r.rip = kvm::kKernelVirt + kvm::kEntryOffset + kvm::kEntryFlushIret;
  vcpu.regs_changed();
  t.flush_generation = mm_->flush_generation();
}

std::optional<RunResult> Guest::handle_exception(GuestThread& t, int vector) {
  kvm::Vcpu& vcpu = *t.vcpu;
  kvm_regs& r = vcpu.regs();
  const std::optional<kvm::ExceptionFrame> frame = mm_->exception_frame(r.rsp, vector);
  // Another thread widened this page's access since this vCPU cached the old entry (TLBs are flushed
  // lazily, see flush_generation): the fault dropped the stale entry, so retrying is enough.
  if (vector == 14 && frame && frame->from_user()) {
    const uint64_t error = frame->error, addr = vcpu.sregs().cr2;
    std::unique_lock<std::mutex> lk(process_->lock.mutex);
    const kvm::Mapping* m = mm_->find(addr);
    const int need = (error & 2) ? kvm::kProtWrite : (error & 16) ? kvm::kProtExec : kvm::kProtRead;
    const bool again = t.last_spurious_fault == addr;
    if (m && (m->prot & need) == need && threads_.size() > 1 && !again) {
      t.last_spurious_fault = addr;
      r.rsp += 8;  // drop the error code: what is left is the iretq frame
      r.rip = kvm::kKernelVirt + kvm::kEntryOffset + kvm::kEntryIret;
      vcpu.regs_changed();
      return std::nullopt;
    }
  }
  RunResult fatal = report_exception(vcpu, vector);
  // A program that handles the signal (V8, JVMs, Python's faulthandler) gets it; the fault is fatal
  // only when the signal is blocked or left at its default action.
  const int sig = signal_for(vector);
  if (frame && frame->from_user()) {
    std::unique_lock<std::mutex> lk(process_->lock.mutex);
    ThreadContext& ctx = process_->threads.at(t.tid);
    const uint64_t handler = process_->sigactions[sig].handler;
    if (handler != uint64_t(SIG_DFL) && handler != uint64_t(SIG_IGN) && !(ctx.sigmask & (1ull << (sig - 1)))) {
      kvm_regs user = r;
      user.rip = frame->rip;
      user.rflags = frame->rflags;
      user.rsp = frame->rsp;
      FaultDetail fault{vector, frame->error, vector == 14 ? vcpu.sregs().cr2 : frame->rip};
      process_->make_current(&ctx);
      send_signal_to_thread(*process_, ctx, sig, fault_signal_code(sig, vector, fault.error), 0);
      auto end = deliver_signal(t, ResumePath::Iret, user, fault);
      if (!end) return std::nullopt;
      fatal = *end;
    }
  }
  end_process(fatal);
  return fatal;
}

bool Guest::has_deliverable_signal(GuestThread& t) {
  std::lock_guard<std::mutex> lk(process_->lock.mutex);
  take_incoming_locked();
  auto ctx = process_->threads.find(t.tid);
  return ctx != process_->threads.end() && (ctx->second.pending_signals & ~ctx->second.sigmask);
}

// Caller holds the process lock.
std::optional<RunResult> Guest::deliver_signal(GuestThread& t, ResumePath where, const kvm_regs& user,
                                               const FaultDetail& fault) {
  Process& p = *process_;
  ThreadContext& ctx = p.threads.at(t.tid);
  auto d = take_signal(p, ctx);
  if (!d) return std::nullopt;
  if (p.exit_status) return RunResult{RunResult::Signaled, *p.exit_status, std::string("killed by signal ") + strsignal(d->sig)};
  kvm::Vcpu& vcpu = *t.vcpu;
  std::array<uint32_t, 1024> xsave;
  vcpu.get_xsave(xsave);
  const uint64_t frame = push_signal_frame(p, ctx, *d, user, xsave, fault);
  if (!frame) {
    p.exit_status = 128 + SIGSEGV;
    return RunResult{RunResult::Faulted, 128 + SIGSEGV,
                     "cannot deliver signal " + std::to_string(d->sig) + ": no room for its frame below " +
                         hex(signal_stack_top(ctx, *d, user.rsp)) + " (SIGSEGV)"};
  }
  kvm_regs h = user;
  h.rdi = uint64_t(d->sig);
  h.rsi = sigframe_siginfo(frame);
  h.rdx = sigframe_ucontext(frame);
  h.rax = 0;
  h.rsp = frame;
  h.rip = d->act.handler;
  h.rflags = (user.rflags & ~uint64_t(0x400 | 0x100 | 0x40000)) | 0x202;  // DF, TF, AC clear, IF set
  kvm_regs& r = vcpu.regs();
  switch (where) {
    case ResumePath::Sysret: {  // the vCPU goes on in the entry code: sysretq takes rip from rcx, rflags from r11
      const uint64_t kernel_rip = r.rip, kernel_rflags = r.rflags;
      r = h;
      r.rcx = h.rip;
      r.r11 = h.rflags;
      r.rip = kernel_rip;
      r.rflags = kernel_rflags;
      break;
    }
    case ResumePath::Direct:
      r = h;
      break;
    case ResumePath::Iret:
      resume_user_via_iret(t, h);
      break;
  }
  if (where != ResumePath::Iret) vcpu.regs_changed();
  return std::nullopt;
}

// Stopped in the entry code on its way back to user mode (a kick that landed after a syscall
// completed, or after a sigreturn): the signal is delivered from there, as Linux delivers on return
// to user mode. Left for the thread's next syscall only where the entry code has already started
// work of its own (mid TLB flush) or has not reached the host yet (the syscall's own `out`).
// Caller holds the process lock.
std::optional<RunResult> Guest::deliver_signal_in_entry(GuestThread& t) {
  kvm::Vcpu& vcpu = *t.vcpu;
  const kvm_regs& r = vcpu.regs();
  const uint64_t entry = kvm::kKernelVirt + kvm::kEntryOffset;
  if (r.rip == entry + kvm::kEntrySyscall + kSyscallOutLength) {  // at sysretq: rcx, r11 are the user's
    return deliver_signal(t, ResumePath::Sysret, user_at_sysret(r));
  }
  const bool flush = r.rip == entry + kvm::kEntryFlushIret;
  if (r.rip != entry + kvm::kEntryIret && !flush) return std::nullopt;
  auto frame = mm_->iret_frame(r.rsp);
  if (!frame || !frame->from_user()) return std::nullopt;
  kvm_regs user = r;
  user.rip = frame->rip;
  user.rflags = frame->rflags;
  user.rsp = frame->rsp;
  auto end = deliver_signal(t, ResumePath::Iret, user);
  if (flush && !end) {  // the mappings changed: still flush the TLB on the way out
    vcpu.regs().rip = entry + kvm::kEntryFlushIret;
    vcpu.regs_changed();
  }
  return end;
}

void Guest::resume_user_via_iret(GuestThread& t, const kvm_regs& user) {
  kvm::Vcpu& vcpu = *t.vcpu;
  const uint64_t frame[5] = {user.rip, kvm::kUserCs, user.rflags, user.rsp, kvm::kUserDs};
  kvm_regs& r = vcpu.regs();
  r = user;
  r.rsp = mm_->push_iret_frame(vcpu.id(), frame);
  r.rip = kvm::kKernelVirt + kvm::kEntryOffset + kvm::kEntryIret;
  vcpu.regs_changed();
}

std::optional<RunResult> Guest::sigreturn(GuestThread& t) {
  Process& p = *process_;
  kvm::Vcpu& vcpu = *t.vcpu;
  std::unique_lock<std::mutex> lk(p.lock.mutex);
  ++p.stats.calls[SYS_rt_sigreturn];
  ThreadContext& ctx = p.threads.at(t.tid);
  kvm_regs user = vcpu.regs();
  std::array<uint32_t, 1024> xsave;
  vcpu.get_xsave(xsave);
  bool restored = pop_signal_frame(p, ctx, user.rsp, user, xsave, kvm::Kvm::instance().xcr0());
  if (restored) {
    try {
      vcpu.set_xsave(xsave);  // KVM checks the area again: a refusal is the guest's fault, not ours
    } catch (const std::system_error&) {
      restored = false;
    }
  }
  if (!restored) {
    RunResult r{RunResult::Faulted, 128 + SIGSEGV, "rt_sigreturn with a bad signal frame at " + hex(user.rsp) + " (SIGSEGV)"};
    lk.unlock();
    end_process(r);
    return r;
  }
  t.pending = false;
  resume_user_via_iret(t, user);
  // As Linux on the way back to user mode: a signal the restored mask unblocks (one that came
  // while the handler held it back) is delivered now, not after the interrupted code's next
  // syscall, which may be the one that sets its disposition to SIG_DFL.
  take_incoming_locked();
  if (ctx.pending_signals & ~ctx.sigmask) {
    if (auto end = deliver_signal(t, ResumePath::Iret, user)) {
      lk.unlock();
      end_process(*end);
      return end;
    }
  }
  return std::nullopt;
}

RunResult Guest::report_exception(kvm::Vcpu& vcpu, int vector) {
  std::string msg = kvm::exception_name(vector);
  if (auto frame = mm_->exception_frame(vcpu.regs().rsp, vector)) {
    const uint64_t error = frame->error;
    msg += " at rip " + hex(frame->rip);
    if ((frame->cs & 3) == 0) msg += " (in kvmserver's guest kernel code)";
    if (vector == 14) {
      msg += std::string(", ") + ((error & 2) ? "writing" : (error & 16) ? "executing" : "reading") + " address " +
             hex(vcpu.sregs().cr2) + ((error & 1) ? " (protection violation)" : " (not mapped)");
    } else if (has_error_code(vector) && error) {
      msg += ", error code " + hex(error);
    }
  }
  const int sig = signal_for(vector);
  return {RunResult::Faulted, 128 + sig, msg + " (SIG" + sigabbrev_np(sig) + ")"};
}

}  // namespace kvms::linux
