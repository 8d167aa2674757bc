// The initial stack: written by build_initial_stack, then parsed back the way a libc's _start would.
#include <elf.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "loader/elf_loader.hpp"

namespace kvms::loader {
namespace {

constexpr uint64_t kStackTop = 0xfff0'0000;
constexpr uint64_t kStackSize = 256 << 10;

struct Guest {
  std::shared_ptr<kvm::GuestMemory> mem = kvm::GuestMemory::create(1ull << 32, 16 << 20);
  kvm::AddressSpace as{mem};
  Guest() { EXPECT_EQ(as.map(kStackTop - kStackSize, kStackSize, kvm::kProtRead | kvm::kProtWrite, "[stack]"), 0); }
};

// What a program sees at its entry point.
struct ParsedStack {
  uint64_t argc = 0;
  std::vector<std::string> argv, envp;
  std::vector<uint64_t> argv_addresses, envp_addresses;
  std::vector<uint64_t> aux_order;
  std::map<uint64_t, uint64_t> aux;
};

uint64_t word_at(const kvm::AddressSpace& as, uint64_t addr) {
  uint64_t v = 0;
  EXPECT_TRUE(as.read(addr, v)) << std::hex << addr;
  return v;
}

std::string string_at(const kvm::AddressSpace& as, uint64_t addr) {
  auto s = as.read_string(addr);
  EXPECT_TRUE(s.has_value()) << std::hex << addr;
  return s.value_or("");
}

// Reads NULL-terminated pointer arrays starting at `pos`, advancing it past the NULL.
void read_string_array(const kvm::AddressSpace& as, uint64_t& pos, std::vector<uint64_t>& addresses,
                       std::vector<std::string>& strings) {
  for (uint64_t p; (p = word_at(as, pos)) != 0; pos += 8) {
    addresses.push_back(p);
    strings.push_back(string_at(as, p));
  }
  pos += 8;
}

ParsedStack parse(const kvm::AddressSpace& as, uint64_t rsp) {
  ParsedStack out;
  uint64_t pos = rsp;
  out.argc = word_at(as, pos);
  pos += 8;
  read_string_array(as, pos, out.argv_addresses, out.argv);
  read_string_array(as, pos, out.envp_addresses, out.envp);
  for (int guard = 0; guard < 64; ++guard, pos += 16) {
    const uint64_t type = word_at(as, pos);
    out.aux_order.push_back(type);
    out.aux[type] = word_at(as, pos + 8);
    if (type == AT_NULL) break;
  }
  return out;
}

StackSpec sample_spec() {
  StackSpec spec;
  spec.argv = {"/bin/prog", "-x", "hello world", ""};
  spec.envp = {"PATH=/usr/bin:/bin", "HOME=/root", "EMPTY="};
  spec.execfn = "/bin/prog";
  spec.hwcap = 0x178bfbff;
  spec.hwcap2 = 2;
  spec.uid = 1000;
  spec.euid = 1001;
  spec.gid = 100;
  spec.egid = 101;
  spec.secure = true;
  spec.clock_ticks = 100;
  spec.minsigstksz = 4096;
  spec.sysinfo_ehdr = 0x7fff'0000;
  spec.interp_base = 0x4000'0000;
  for (int i = 0; i < 16; ++i) spec.random[i] = static_cast<uint8_t>(0xa0 + i);
  return spec;
}

LoadedElf sample_program() {
  LoadedElf elf;
  elf.entry = 0x401234;
  elf.phdr = 0x400040;
  elf.phent = sizeof(Elf64_Phdr);
  elf.phnum = 9;
  return elf;
}

TEST(InitialStack, ArgvEnvpAndAuxvReadBack) {
  Guest g;
  const StackSpec spec = sample_spec();
  const LoadedElf program = sample_program();
  const uint64_t rsp = build_initial_stack(g.as, kStackTop, kStackSize, spec, program);
  EXPECT_EQ(rsp % 16, 0u);
  EXPECT_GE(rsp, kStackTop - kStackSize);

  const ParsedStack s = parse(g.as, rsp);
  EXPECT_EQ(s.argc, spec.argv.size());
  EXPECT_EQ(s.argv, spec.argv);
  EXPECT_EQ(s.envp, spec.envp);

  const std::vector<uint64_t> expected_order = {
      AT_SYSINFO_EHDR, AT_MINSIGSTKSZ, AT_HWCAP, AT_PAGESZ, AT_CLKTCK, AT_PHDR,   AT_PHENT,  AT_PHNUM,
      AT_BASE,         AT_FLAGS,       AT_ENTRY, AT_UID,    AT_EUID,   AT_GID,    AT_EGID,   AT_SECURE,
      AT_RANDOM,       AT_HWCAP2,      AT_EXECFN, AT_PLATFORM, AT_NULL};
  EXPECT_EQ(s.aux_order, expected_order);
  auto aux = s.aux;
  EXPECT_EQ(aux[AT_SYSINFO_EHDR], spec.sysinfo_ehdr);
  EXPECT_EQ(aux[AT_MINSIGSTKSZ], 4096u);
  EXPECT_EQ(aux[AT_HWCAP], spec.hwcap);
  EXPECT_EQ(aux[AT_PAGESZ], 4096u);
  EXPECT_EQ(aux[AT_CLKTCK], 100u);
  EXPECT_EQ(aux[AT_PHDR], program.phdr);
  EXPECT_EQ(aux[AT_PHENT], 56u);
  EXPECT_EQ(aux[AT_PHNUM], 9u);
  EXPECT_EQ(aux[AT_BASE], spec.interp_base);
  EXPECT_EQ(aux[AT_FLAGS], 0u);
  EXPECT_EQ(aux[AT_ENTRY], program.entry);
  EXPECT_EQ(aux[AT_UID], 1000u);
  EXPECT_EQ(aux[AT_EUID], 1001u);
  EXPECT_EQ(aux[AT_GID], 100u);
  EXPECT_EQ(aux[AT_EGID], 101u);
  EXPECT_EQ(aux[AT_SECURE], 1u);
  EXPECT_EQ(aux[AT_HWCAP2], 2u);
  EXPECT_EQ(string_at(g.as, aux[AT_EXECFN]), "/bin/prog");
  EXPECT_EQ(string_at(g.as, aux[AT_PLATFORM]), "x86_64");
  uint8_t random[16];
  ASSERT_TRUE(g.as.copy_from_user(random, aux[AT_RANDOM], 16));
  EXPECT_EQ(0, std::memcmp(random, spec.random, 16));
}

TEST(InitialStack, LinuxLayout) {
  Guest g;
  const StackSpec spec = sample_spec();
  const uint64_t rsp = build_initial_stack(g.as, kStackTop, kStackSize, spec, sample_program());
  const ParsedStack s = parse(g.as, rsp);

  // The top word is zero and execfn ends right below it.
  EXPECT_EQ(word_at(g.as, kStackTop - 8), 0u);
  EXPECT_EQ(s.aux.at(AT_EXECFN), kStackTop - 8 - (spec.execfn.size() + 1));
  // envp strings sit below execfn and argv strings below them, each block contiguous and in order.
  uint64_t expect = s.aux.at(AT_EXECFN);
  for (size_t i = spec.envp.size(); i-- > 0;) EXPECT_EQ(s.envp_addresses[i], expect -= spec.envp[i].size() + 1);
  for (size_t i = spec.argv.size(); i-- > 0;) EXPECT_EQ(s.argv_addresses[i], expect -= spec.argv[i].size() + 1);
  // Then the platform string and the random bytes, all above the pointer tables.
  EXPECT_LT(s.aux.at(AT_PLATFORM), s.argv_addresses[0]);
  EXPECT_EQ(s.aux.at(AT_RANDOM) + 16, s.aux.at(AT_PLATFORM));
  const uint64_t tables_end = rsp + 8 * (1 + s.argv.size() + 1 + s.envp.size() + 1 + 2 * s.aux_order.size());
  EXPECT_LE(tables_end, s.aux.at(AT_RANDOM));
  EXPECT_LT(s.aux.at(AT_RANDOM) - tables_end, 32u);  // only alignment padding between them
}

TEST(InitialStack, OptionalEntriesAreOmittedWhenZero) {
  Guest g;
  StackSpec spec = sample_spec();
  spec.sysinfo_ehdr = 0;
  spec.minsigstksz = 0;
  spec.secure = false;
  const ParsedStack s = parse(g.as, build_initial_stack(g.as, kStackTop, kStackSize, spec, sample_program()));
  EXPECT_EQ(s.aux.count(AT_SYSINFO_EHDR), 0u);
  EXPECT_EQ(s.aux.count(AT_MINSIGSTKSZ), 0u);
  EXPECT_EQ(s.aux_order.front(), uint64_t{AT_HWCAP});
  EXPECT_EQ(s.aux.at(AT_SECURE), 0u);
}

TEST(InitialStack, RspIsAlignedForEveryShape) {
  for (size_t argc = 0; argc < 5; ++argc)
    for (size_t envc = 0; envc < 4; ++envc)
      for (size_t len = 0; len < 18; len += 5)
        for (size_t execfn_len : {1, 2, 8, 9}) {
          Guest g;
          StackSpec spec = sample_spec();
          spec.argv.assign(argc, std::string(len, 'a'));
          spec.envp.assign(envc, std::string(len + 1, 'e'));
          spec.execfn = std::string(execfn_len, 'x');
          spec.sysinfo_ehdr = argc % 2 ? 0x7fff'0000 : 0;
          const uint64_t rsp = build_initial_stack(g.as, kStackTop, kStackSize, spec, sample_program());
          ASSERT_EQ(rsp % 16, 0u) << argc << " " << envc << " " << len;
          const ParsedStack s = parse(g.as, rsp);
          EXPECT_EQ(s.argv, spec.argv);
          EXPECT_EQ(s.envp, spec.envp);
          EXPECT_EQ(string_at(g.as, s.aux.at(AT_EXECFN)), spec.execfn);
          EXPECT_EQ(s.aux_order.back(), uint64_t{AT_NULL});
        }
}

TEST(InitialStack, TooBigForTheStack) {
  Guest g;
  StackSpec spec = sample_spec();
  spec.envp.push_back(std::string(kStackSize, 'x'));
  try {
    build_initial_stack(g.as, kStackTop, kStackSize, spec, sample_program());
    FAIL() << "no error";
  } catch (const LoadError& e) {
    EXPECT_EQ(e.exit_status, 126);
    EXPECT_NE(std::string(e.what()).find("argument list too long"), std::string::npos);
  }
  // Just under the limit still fits.
  spec.envp.back().resize(kStackSize - 4096);
  EXPECT_NO_THROW(build_initial_stack(g.as, kStackTop, kStackSize, spec, sample_program()));
}

TEST(InitialStack, ManyArguments) {
  Guest g;
  StackSpec spec = sample_spec();
  spec.argv.clear();
  for (int i = 0; i < 5000; ++i) spec.argv.push_back("arg" + std::to_string(i));
  const ParsedStack s = parse(g.as, build_initial_stack(g.as, kStackTop, kStackSize, spec, sample_program()));
  EXPECT_EQ(s.argc, 5000u);
  EXPECT_EQ(s.argv, spec.argv);
}

TEST(InitialStack, UnmappedStackThrows) {
  auto mem = kvm::GuestMemory::create(1ull << 32, 16 << 20);
  kvm::AddressSpace as(mem);
  EXPECT_THROW(build_initial_stack(as, kStackTop, kStackSize, sample_spec(), sample_program()), LoadError);
}

// AT_PHDR of a really loaded program leads to its program headers.
TEST(InitialStack, AtPhdrPointsAtLoadedHeaders) {
  Guest g;
  std::ifstream in("/bin/busybox", std::ios::binary);
  const std::vector<uint8_t> image(std::istreambuf_iterator<char>(in), {});
  const LoadedElf elf = load_elf(g.as, image, 0x1000'0000);
  const ParsedStack s = parse(g.as, build_initial_stack(g.as, kStackTop, kStackSize, sample_spec(), elf));
  Elf64_Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof eh);
  ASSERT_EQ(s.aux.at(AT_PHNUM), eh.e_phnum);
  for (uint64_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr in_memory, in_file;
    ASSERT_TRUE(g.as.read(s.aux.at(AT_PHDR) + i * s.aux.at(AT_PHENT), in_memory));
    std::memcpy(&in_file, image.data() + eh.e_phoff + i * sizeof in_file, sizeof in_file);
    EXPECT_EQ(0, std::memcmp(&in_memory, &in_file, sizeof in_file));
  }
  EXPECT_EQ(s.aux.at(AT_ENTRY), eh.e_entry);
}

}  // namespace
}  // namespace kvms::loader
