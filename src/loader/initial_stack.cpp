// The initial process stack, laid out as Linux's exec does (fs/exec.c and create_elf_tables):
//
//   stack_top - 8    8 zero bytes (Linux's end marker)
//                    execfn string (AT_EXECFN points here)
//                    envp strings, envp[0] lowest
//                    argv strings, argv[0] lowest
//                    (aligned down to 16)
//                    platform string (AT_PLATFORM)
//                    16 random bytes (AT_RANDOM)
//                    (padding so that rsp is 16-byte aligned)
//   rsp  ->          argc, argv[0..argc), NULL, envp[0..envc), NULL, auxv pairs ..., AT_NULL 0
//
// The whole block is assembled in host memory and copied into the guest in one go.
#include <elf.h>

#include <cstring>

#include "loader/elf_loader.hpp"

namespace kvms::loader {
namespace {

using Auxv = std::vector<std::pair<uint64_t, uint64_t>>;

[[noreturn]] void too_big(uint64_t stack_size) {
  throw LoadError(126, "argument list too long: arguments, environment and auxiliary vector do not fit in the " +
                           std::to_string(stack_size) + "-byte stack");
}

uint64_t sum_or_fail(uint64_t a, uint64_t b, uint64_t stack_size) {
  uint64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) too_big(stack_size);
  return sum;
}

uint64_t strings_size(const std::vector<std::string>& strings, uint64_t stack_size) {
  uint64_t total = 0;
  for (const auto& s : strings) total = sum_or_fail(total, s.size() + 1, stack_size);
  return total;
}

// Guest addresses of everything the pointer tables refer to, filled in as the strings are placed.
struct StringAddresses {
  uint64_t execfn = 0, platform = 0, random = 0;
  std::vector<uint64_t> argv, envp;
};

Auxv auxiliary_vector(const StackSpec& spec, const LoadedElf& program, const StringAddresses& at) {
  Auxv auxv;
  auxv.reserve(24);
  auto add = [&auxv](uint64_t type, uint64_t value) { auxv.emplace_back(type, value); };
  if (spec.sysinfo_ehdr) add(AT_SYSINFO_EHDR, spec.sysinfo_ehdr);
  if (spec.minsigstksz) add(AT_MINSIGSTKSZ, spec.minsigstksz);
  add(AT_HWCAP, spec.hwcap);
  add(AT_PAGESZ, kvm::kPageSize);
  add(AT_CLKTCK, spec.clock_ticks);
  add(AT_PHDR, program.phdr);
  add(AT_PHENT, program.phent);
  add(AT_PHNUM, program.phnum);
  add(AT_BASE, spec.interp_base);
  add(AT_FLAGS, 0);
  add(AT_ENTRY, program.entry);
  add(AT_UID, spec.uid);
  add(AT_EUID, spec.euid);
  add(AT_GID, spec.gid);
  add(AT_EGID, spec.egid);
  add(AT_SECURE, spec.secure ? 1 : 0);
  add(AT_RANDOM, at.random);
  add(AT_HWCAP2, spec.hwcap2);
  add(AT_EXECFN, at.execfn);
  if (!spec.platform.empty()) add(AT_PLATFORM, at.platform);
  add(AT_NULL, 0);
  return auxv;
}

// A host buffer standing for the guest range [base, top).
class StackImage {
 public:
  StackImage(uint64_t base, uint64_t top) : base_(base), bytes_(top - base) {}
  void put(uint64_t addr, const void* src, uint64_t len) { std::memcpy(bytes_.data() + (addr - base_), src, len); }
  void put_string(uint64_t addr, const std::string& s) { put(addr, s.c_str(), s.size() + 1); }
  void put_word(uint64_t addr, uint64_t v) { put(addr, &v, sizeof v); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  uint64_t base_;
  std::vector<uint8_t> bytes_;
};

// Places each string at `cursor` upwards, recording where it went.
std::vector<uint64_t> place_strings(const std::vector<std::string>& strings, uint64_t cursor) {
  std::vector<uint64_t> addresses;
  for (const auto& s : strings) {
    addresses.push_back(cursor);
    cursor += s.size() + 1;
  }
  return addresses;
}

}  // namespace

uint64_t build_initial_stack(kvm::AddressSpace& as, uint64_t stack_top, uint64_t stack_size, const StackSpec& spec,
                             const LoadedElf& program) {
  if (stack_top & 15) throw LoadError(126, "initial stack top is not 16-byte aligned");
  if (stack_size > stack_top) too_big(stack_size);  // a stack reaching below address 0 is a caller bug

  // Sizes first, all checked, so nothing below can wrap.
  const uint64_t env_bytes = strings_size(spec.envp, stack_size);
  const uint64_t arg_bytes = strings_size(spec.argv, stack_size);
  uint64_t strings = sum_or_fail(8, spec.execfn.size() + 1, stack_size);
  strings = sum_or_fail(strings, sum_or_fail(env_bytes, arg_bytes, stack_size), stack_size);
  const uint64_t platform_bytes = spec.platform.empty() ? 0 : spec.platform.size() + 1;
  uint64_t below_strings = sum_or_fail(16, platform_bytes, stack_size);
  below_strings = sum_or_fail(below_strings, 15, stack_size);  // the 16-byte alignment of the string block
  const uint64_t aux_words = 2 * (auxiliary_vector(spec, program, {}).size());
  const uint64_t pointer_words = 1 + spec.argv.size() + 1 + spec.envp.size() + 1 + aux_words;
  const uint64_t tables = sum_or_fail(pointer_words * 8, 15, stack_size);
  if (sum_or_fail(sum_or_fail(strings, below_strings, stack_size), tables, stack_size) > stack_size)
    too_big(stack_size);

  StringAddresses at;
  at.execfn = stack_top - 8 - (spec.execfn.size() + 1);
  const uint64_t env_start = at.execfn - env_bytes;
  const uint64_t arg_start = env_start - arg_bytes;
  at.envp = place_strings(spec.envp, env_start);
  at.argv = place_strings(spec.argv, arg_start);
  at.platform = (arg_start & ~uint64_t{15}) - platform_bytes;
  at.random = at.platform - 16;

  const Auxv auxv = auxiliary_vector(spec, program, at);
  const uint64_t rsp = (at.random - pointer_words * 8) & ~uint64_t{15};

  StackImage image(rsp, stack_top);
  image.put_string(at.execfn, spec.execfn);
  for (size_t i = 0; i < spec.envp.size(); ++i) image.put_string(at.envp[i], spec.envp[i]);
  for (size_t i = 0; i < spec.argv.size(); ++i) image.put_string(at.argv[i], spec.argv[i]);
  if (platform_bytes) image.put_string(at.platform, spec.platform);
  image.put(at.random, spec.random, 16);

  uint64_t word = rsp;
  auto push = [&](uint64_t v) {
    image.put_word(word, v);
    word += 8;
  };
  push(spec.argv.size());
  for (uint64_t a : at.argv) push(a);
  push(0);
  for (uint64_t e : at.envp) push(e);
  push(0);
  for (auto [type, value] : auxv) push(type), push(value);

  if (!as.copy_to_user(rsp, image.bytes().data(), image.bytes().size()))
    throw LoadError(126, "the initial stack is not mapped writable below " + std::to_string(stack_top));
  return rsp;
}

namespace {

// [first, end of last) of the strings that the NULL-terminated pointer table at `table` points to.
std::pair<uint64_t, uint64_t> string_span(const kvm::AddressSpace& as, uint64_t table, uint64_t count) {
  uint64_t first = 0, last = 0;
  if (count == 0 || !as.read(table, first) || !as.read(table + 8 * (count - 1), last)) return {0, 0};
  const auto tail = as.read_string(last, 1u << 20);
  if (!tail || last < first) return {0, 0};
  return {first, last + tail->size() + 1};
}

}  // namespace

std::pair<uint64_t, uint64_t> argument_strings(const kvm::AddressSpace& as, uint64_t rsp) {
  uint64_t argc = 0;
  if (!as.read(rsp, argc) || argc > (1u << 20)) return {0, 0};
  return string_span(as, rsp + 8, argc);
}

std::pair<uint64_t, uint64_t> environment_strings(const kvm::AddressSpace& as, uint64_t rsp) {
  uint64_t argc = 0;
  if (!as.read(rsp, argc) || argc > (1u << 20)) return {0, 0};
  const uint64_t envp = rsp + 8 * (argc + 2);  // past argc, argv[] and its NULL
  uint64_t envc = 0;
  for (uint64_t ptr = 0;; ++envc) {
    if (envc > (1u << 20) || !as.read(envp + 8 * envc, ptr)) return {0, 0};
    if (ptr == 0) break;
  }
  return string_span(as, envp, envc);
}

}  // namespace kvms::loader
