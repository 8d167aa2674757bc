#pragma once
// Loading ELF64 x86-64 executables into a guest address space, the way Linux's binfmt_elf does.
#include <cstdint>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kvm/address_space.hpp"

namespace kvms::loader {

// A program that cannot be started. exit_status follows the shell: 127 for a missing file, 126 for a
// file that is not a runnable x86-64 ELF (or unsupported). message is one line, no trailing newline.
class LoadError : public std::runtime_error {
 public:
  LoadError(int exit_status, const std::string& message) : std::runtime_error(message), exit_status(exit_status) {}
  int exit_status;
};

struct TlsSegment {
  uint64_t vaddr = 0, filesz = 0, memsz = 0, align = 0;  // vaddr after the load bias
};

struct LoadedElf {
  uint64_t entry = 0;       // after the load bias
  uint64_t load_bias = 0;   // 0 for ET_EXEC
  uint64_t phdr = 0;        // guest address of the program headers (AT_PHDR)
  uint64_t phent = 0, phnum = 0;
  uint64_t lowest = 0, highest = 0;  // page-aligned extent of the PT_LOAD segments in the guest
  uint64_t brk_start = 0;   // page-aligned end of the highest segment: where the heap starts
  bool executable_stack = false;  // PT_GNU_STACK with PF_X, or no PT_GNU_STACK
  bool has_tls = false;
  TlsSegment tls;
  std::string interpreter;  // PT_INTERP path, empty when static
};

// Checks that `image` is a well-formed ELF64 little-endian x86-64 ET_EXEC or ET_DYN and maps its
// PT_LOAD segments into `as` with their permissions (bss zeroed). ET_DYN goes at `dyn_base` (page
// aligned; the caller picks it). Throws LoadError on anything malformed: bad magic/class/machine,
// truncated headers, segments overlapping each other or lying outside the file, absurd sizes or
// alignments, addresses outside the address space, no PT_LOAD, entry outside every executable segment.
// The pages holding file bytes are named file_name (the file's path, for /proc/self/maps; a name
// also keeps madvise(MADV_DONTNEED) from zeroing them); pure bss pages stay anonymous, as in Linux.
LoadedElf load_elf(kvm::AddressSpace& as, std::span<const uint8_t> image, uint64_t dyn_base,
                   const std::string& file_name = "[elf]");

// Where load_program puts position-independent images (all page aligned, inside user memory).
struct ProgramLayout {
  uint64_t static_pie_base = 0;  // ET_DYN without PT_INTERP (static-pie, or ld.so run directly)
  uint64_t pie_base = 0;         // ET_DYN with PT_INTERP: Linux's ELF_ET_DYN_BASE, scaled to the guest
  uint64_t interp_below = 0;     // the interpreter goes top-down in the free space below this address
};

struct LoadedProgram {
  LoadedElf program;
  LoadedElf interpreter;     // meaningful only when program.interpreter is not empty
  uint64_t interp_base = 0;  // AT_BASE: guest address of the interpreter's lowest page (0 when static)
  uint64_t start = 0;        // where execution begins: the interpreter's entry, else the program's
};

// Reads the file a PT_INTERP names (throws LoadError like read_program_file).
using FileReader = std::function<std::vector<uint8_t>(const std::string& path)>;

// Loads a program as Linux's execve does: the program at its addresses (ET_EXEC) or at a layout
// base (ET_DYN), and, when it has a PT_INTERP, that interpreter (the dynamic loader, read with
// read_interpreter) at a free base below layout.interp_below; execution starts at the interpreter,
// which finds the program through AT_PHDR/AT_ENTRY and itself through AT_BASE. Throws LoadError:
// 127 when the interpreter is missing, 126 when it is malformed or itself names an interpreter.
// program_name names the program's mappings (its guest path).
LoadedProgram load_program(kvm::AddressSpace& as, std::span<const uint8_t> image, const std::string& program_name,
                           const ProgramLayout& layout, const FileReader& read_interpreter);

// The PT_INTERP of the ELF file at path, "" for a static program or anything that is not a
// well-formed ELF (reads only the headers; never throws).
std::string interpreter_of(const std::string& path);

// Reads a whole file for loading; LoadError(127) when missing, LoadError(126) when unreadable,
// a directory, or larger than max_bytes.
std::vector<uint8_t> read_program_file(const std::string& path, uint64_t max_bytes = 1ull << 30);

// Auxiliary vector entries and the strings the initial stack carries.
struct StackSpec {
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::string execfn;            // AT_EXECFN
  std::string platform = "x86_64";  // AT_PLATFORM
  uint64_t hwcap = 0, hwcap2 = 0;
  uint64_t uid = 0, euid = 0, gid = 0, egid = 0;
  bool secure = false;
  uint64_t clock_ticks = 100;
  uint64_t minsigstksz = 0;      // AT_MINSIGSTKSZ (0 = omit)
  uint64_t sysinfo_ehdr = 0;     // AT_SYSINFO_EHDR, the vDSO (0 = omit)
  uint64_t interp_base = 0;      // AT_BASE (0 for static programs)
  uint8_t random[16] = {};       // AT_RANDOM's bytes (the caller fills them with fresh randomness)
};

// Writes argv/envp/auxv and their strings below stack_top (as Linux lays them out: strings at the
// top, then AT_RANDOM bytes, platform string, 16-byte aligned auxv/envp/argv/argc) and returns the
// initial rsp (16-byte aligned, pointing at argc). Throws LoadError(126) if it does not fit in
// stack_size bytes.
uint64_t build_initial_stack(kvm::AddressSpace& as, uint64_t stack_top, uint64_t stack_size,
                             const StackSpec& spec, const LoadedElf& program);

// [start, end) of the argv strings of the initial stack at rsp (what Linux keeps as arg_start and
// arg_end for /proc/self/cmdline); {0, 0} when argc is 0 or the stack does not read as one.
std::pair<uint64_t, uint64_t> argument_strings(const kvm::AddressSpace& as, uint64_t rsp);
// The same for the envp strings (env_start and env_end, /proc/self/environ); {0, 0} when there are
// none or the stack does not read as one.
std::pair<uint64_t, uint64_t> environment_strings(const kvm::AddressSpace& as, uint64_t rsp);

}  // namespace kvms::loader
