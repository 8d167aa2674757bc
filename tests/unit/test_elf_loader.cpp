// ELF loading: real static, static-PIE and dynamic binaries, one hand-made file per validation rule,
// and a few thousand corrupted copies of a real binary that must load or fail cleanly.
#include <elf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "guest_memory_test_access.hpp"
#include "loader/elf_loader.hpp"

namespace kvms::loader {
namespace {

namespace fs = std::filesystem;
using kvm::kPageSize;
using kvm::page_down;
using kvm::page_up;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kUserSize = 1ull << 32;
constexpr uint64_t kDynBase = 0x1000'0000;

struct Guest {
  std::shared_ptr<kvm::GuestMemory> mem = kvm::GuestMemory::create(kUserSize, 16 << 20);
  kvm::AddressSpace as{mem};
};

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

template <typename T> T get(const Bytes& image, uint64_t offset) {
  T v;
  std::memcpy(&v, image.data() + offset, sizeof v);
  return v;
}

template <typename T> void set(Bytes& image, uint64_t offset, const T& v) {
  std::memcpy(image.data() + offset, &v, sizeof v);
}

Elf64_Ehdr header_of(const Bytes& image) { return get<Elf64_Ehdr>(image, 0); }

std::vector<Elf64_Phdr> phdrs_of(const Bytes& image) {
  const Elf64_Ehdr eh = header_of(image);
  std::vector<Elf64_Phdr> out;
  for (int i = 0; i < eh.e_phnum; ++i) out.push_back(get<Elf64_Phdr>(image, eh.e_phoff + i * sizeof(Elf64_Phdr)));
  return out;
}

uint64_t phdr_offset(const Bytes& image, int index) { return header_of(image).e_phoff + index * sizeof(Elf64_Phdr); }

int expected_prot(uint32_t flags) {
  return ((flags & PF_R) ? kvm::kProtRead : 0) | ((flags & PF_W) ? kvm::kProtWrite : 0) |
         ((flags & PF_X) ? kvm::kProtExec : 0);
}

// Guest bytes read straight from guest memory, whatever the page permissions.
Bytes guest_bytes(const Guest& g, uint64_t addr, uint64_t len) {
  const uint8_t* p = kvm::GuestMemoryTestAccess::user_base(*g.mem) + addr;
  return Bytes(p, p + len);
}

// Checks what load_elf did against an independent reading of the file.
void expect_loaded_like_file(const Guest& g, const Bytes& image, const LoadedElf& elf) {
  const Elf64_Ehdr eh = header_of(image);
  EXPECT_EQ(elf.entry, eh.e_entry + elf.load_bias);
  EXPECT_EQ(elf.phent, sizeof(Elf64_Phdr));
  EXPECT_EQ(elf.phnum, eh.e_phnum);
  uint64_t highest_end = 0;
  for (const Elf64_Phdr& ph : phdrs_of(image)) {
    if (ph.p_type != PT_LOAD) continue;
    const uint64_t addr = ph.p_vaddr + elf.load_bias;
    highest_end = std::max(highest_end, addr + ph.p_memsz);
    SCOPED_TRACE(testing::Message() << "segment at " << std::hex << addr);
    for (uint64_t page = page_down(addr); page < addr + ph.p_memsz; page += kPageSize) {
      const kvm::Mapping* m = g.as.find(page);
      ASSERT_NE(m, nullptr) << std::hex << page;
      EXPECT_EQ(m->prot, expected_prot(ph.p_flags)) << std::hex << page;
    }
    EXPECT_TRUE(guest_bytes(g, addr, ph.p_filesz) == Bytes(image.begin() + ph.p_offset,
                                                           image.begin() + ph.p_offset + ph.p_filesz));
    const Bytes bss = guest_bytes(g, addr + ph.p_filesz, page_up(addr + ph.p_memsz) - (addr + ph.p_filesz));
    EXPECT_TRUE(std::all_of(bss.begin(), bss.end(), [](uint8_t b) { return b == 0; })) << "bss not zero";
  }
  EXPECT_EQ(elf.brk_start, page_up(highest_end));
  EXPECT_EQ(elf.highest, page_up(highest_end));
  // AT_PHDR must point at the program headers as they are in memory.
  ASSERT_NE(elf.phdr, 0u);
  EXPECT_TRUE(guest_bytes(g, elf.phdr, eh.e_phnum * sizeof(Elf64_Phdr)) ==
              Bytes(image.begin() + eh.e_phoff, image.begin() + eh.e_phoff + eh.e_phnum * sizeof(Elf64_Phdr)));
  const kvm::Mapping* entry = g.as.find(elf.entry);
  ASSERT_NE(entry, nullptr);
  EXPECT_TRUE(entry->prot & kvm::kProtExec);
}

// ---- real binaries ----

// Programs compiled at test time from one small C file, each built the first time a test asks for it
// (ctest runs every test in its own process, so building all of them up front would repeat work).
class RealBinaries : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/kvms-elf-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    built_.clear();
    std::ofstream(dir_ + "/hello.c") << "#include <stdio.h>\n"
                                        "static char big[1 << 20];\n"
                                        "__thread int tls_value = 42;\n"
                                        "int main(int argc, char** argv) {\n"
                                        "  big[argc] = 1;\n"
                                        "  printf(\"%d\\n\", tls_value + big[0]);\n"
                                        "}\n";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  // "static", "static-pie" or "dynamic".
  static std::string path(const std::string& kind) {
    const std::string out = dir_ + "/" + kind;
    if (built_.insert(kind).second) {
      const std::string flags = kind == "dynamic" ? "" : "-" + kind;
      const std::string cmd = "gcc -O1 " + flags + " -o " + out + " " + dir_ + "/hello.c";
      EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    return out;
  }
  static inline std::string dir_;
  static inline std::set<std::string> built_;
};

TEST_F(RealBinaries, BusyboxStatic) {
  Guest g;
  const Bytes image = read_file("/bin/busybox");
  ASSERT_GT(image.size(), 4096u);
  const LoadedElf elf = load_elf(g.as, image, kDynBase);
  EXPECT_EQ(header_of(image).e_type, ET_EXEC);
  EXPECT_EQ(elf.load_bias, 0u);
  EXPECT_EQ(elf.entry, header_of(image).e_entry);
  EXPECT_EQ(elf.phdr, 0x400000u + header_of(image).e_phoff);  // first PT_LOAD maps offset 0 at 0x400000
  EXPECT_EQ(elf.lowest, 0x400000u);
  EXPECT_TRUE(elf.interpreter.empty());
  EXPECT_FALSE(elf.executable_stack);
  expect_loaded_like_file(g, image, elf);
}

TEST_F(RealBinaries, GccStatic) {
  Guest g;
  const Bytes image = read_file(path("static"));
  const LoadedElf elf = load_elf(g.as, image, kDynBase);
  EXPECT_EQ(elf.load_bias, 0u);
  EXPECT_TRUE(elf.interpreter.empty());
  EXPECT_FALSE(elf.executable_stack);
  ASSERT_TRUE(elf.has_tls);
  for (const auto& ph : phdrs_of(image)) {
    if (ph.p_type != PT_TLS) continue;
    EXPECT_EQ(elf.tls.vaddr, ph.p_vaddr);
    EXPECT_EQ(elf.tls.filesz, ph.p_filesz);
    EXPECT_EQ(elf.tls.memsz, ph.p_memsz);
    EXPECT_EQ(elf.tls.align, ph.p_align);
  }
  int tls_value;
  ASSERT_TRUE(g.as.read(elf.tls.vaddr, tls_value));
  EXPECT_EQ(tls_value, 42);
  expect_loaded_like_file(g, image, elf);
}

TEST_F(RealBinaries, GccStaticPieGoesAtDynBase) {
  Guest g;
  const Bytes image = read_file(path("static-pie"));
  ASSERT_EQ(header_of(image).e_type, ET_DYN);
  const LoadedElf elf = load_elf(g.as, image, kDynBase);
  EXPECT_EQ(elf.load_bias, kDynBase);
  EXPECT_EQ(elf.lowest, kDynBase);
  EXPECT_EQ(elf.entry, kDynBase + header_of(image).e_entry);
  ASSERT_TRUE(elf.has_tls);
  int tls_value;
  ASSERT_TRUE(g.as.read(elf.tls.vaddr, tls_value));
  EXPECT_EQ(tls_value, 42);
  expect_loaded_like_file(g, image, elf);
}

TEST_F(RealBinaries, DynamicReportsInterpreterAndPtPhdr) {
  Guest g;
  const Bytes image = read_file(path("dynamic"));
  const LoadedElf elf = load_elf(g.as, image, kDynBase);
  EXPECT_EQ(elf.interpreter, "/lib64/ld-linux-x86-64.so.2");
  bool has_pt_phdr = false;
  for (const auto& ph : phdrs_of(image)) {
    if (ph.p_type != PT_PHDR) continue;
    has_pt_phdr = true;
    EXPECT_EQ(elf.phdr, kDynBase + ph.p_vaddr);
  }
  EXPECT_TRUE(has_pt_phdr);
  expect_loaded_like_file(g, image, elf);
}

TEST_F(RealBinaries, InterpreterLoadsBesideTheProgram) {
  Guest g;
  const Bytes program = read_file(path("dynamic"));
  const Bytes ld_so = read_file(fs::canonical("/lib64/ld-linux-x86-64.so.2"));
  const LoadedElf exe = load_elf(g.as, program, kDynBase);
  const LoadedElf interp = load_elf(g.as, ld_so, 0x7000'0000);
  EXPECT_EQ(interp.load_bias, 0x7000'0000u);
  EXPECT_TRUE(interp.interpreter.empty());
  expect_loaded_like_file(g, program, exe);
  expect_loaded_like_file(g, ld_so, interp);
}

// ---- load_program: the program and its interpreter, as execve does ----

constexpr ProgramLayout kLayout{0x1000'0000, 0x8000'0000, 0xf000'0000};

FileReader reader_of(std::map<std::string, Bytes> files) {
  return [files = std::move(files)](const std::string& path) {
    auto it = files.find(path);
    if (it == files.end()) throw LoadError(127, path + ": No such file or directory");
    return it->second;
  };
}

TEST_F(RealBinaries, DynamicProgramStartsInItsInterpreter) {
  Guest g;
  const Bytes program = read_file(path("dynamic"));
  const Bytes ld_so = read_file(fs::canonical("/lib64/ld-linux-x86-64.so.2"));
  const LoadedProgram lp = load_program(g.as, program, "/prog", kLayout, reader_of({{"/lib64/ld-linux-x86-64.so.2", ld_so}}));
  EXPECT_EQ(lp.program.interpreter, "/lib64/ld-linux-x86-64.so.2");
  EXPECT_EQ(lp.program.lowest, kLayout.pie_base);  // a PIE with an interpreter goes at pie_base
  EXPECT_EQ(lp.interp_base, lp.interpreter.lowest);
  EXPECT_EQ(lp.interpreter.load_bias, lp.interp_base);  // ld.so's first vaddr is 0
  EXPECT_LE(lp.interpreter.highest, kLayout.interp_below);
  EXPECT_GT(lp.interp_base, lp.program.highest);
  EXPECT_EQ(lp.start, lp.interpreter.entry);
  EXPECT_EQ(lp.start, lp.interp_base + header_of(ld_so).e_entry);
  EXPECT_EQ(g.as.find(lp.program.entry)->name, "/prog");  // named for /proc/self/maps
  EXPECT_EQ(g.as.find(lp.start)->name, "/lib64/ld-linux-x86-64.so.2");
  expect_loaded_like_file(g, program, lp.program);
  expect_loaded_like_file(g, ld_so, lp.interpreter);
}

TEST_F(RealBinaries, InterpreterGoesBelowWhatIsMappedUnderTheLimit) {
  Guest g;
  ASSERT_EQ(g.as.map(kLayout.interp_below - 0x10'0000, 0x10'0000, kvm::kProtRead, "below the limit"), 0);
  const LoadedProgram lp = load_program(g.as, read_file(path("dynamic")), "/prog", kLayout,
                                        reader_of({{"/lib64/ld-linux-x86-64.so.2",
                                                    read_file(fs::canonical("/lib64/ld-linux-x86-64.so.2"))}}));
  EXPECT_LE(lp.interpreter.highest, kLayout.interp_below - 0x10'0000);
}

TEST_F(RealBinaries, StaticProgramsHaveNoInterpreter) {
  Guest g;
  const LoadedProgram lp = load_program(g.as, read_file(path("static-pie")), "/prog", kLayout, reader_of({}));
  EXPECT_EQ(lp.program.lowest, kLayout.static_pie_base);
  EXPECT_EQ(lp.interp_base, 0u);
  EXPECT_EQ(lp.start, lp.program.entry);
}

TEST_F(RealBinaries, MissingInterpreterIs127) {
  Guest g;
  try {
    load_program(g.as, read_file(path("dynamic")), "/prog", kLayout, reader_of({}));
    FAIL() << "loaded without its interpreter";
  } catch (const LoadError& e) {
    EXPECT_EQ(e.exit_status, 127);
    EXPECT_NE(std::string(e.what()).find("interpreter /lib64/ld-linux-x86-64.so.2"), std::string::npos) << e.what();
  }
}

TEST_F(RealBinaries, BadInterpretersAre126) {
  const Bytes program = read_file(path("dynamic"));
  for (const Bytes& interp : {Bytes{'#', '!', '/', 'b', 'i', 'n'}, program /* has an interpreter itself */}) {
    Guest g;
    try {
      load_program(g.as, program, "/prog", kLayout, reader_of({{"/lib64/ld-linux-x86-64.so.2", interp}}));
      ADD_FAILURE() << "loaded with a bad interpreter";
    } catch (const LoadError& e) {
      EXPECT_EQ(e.exit_status, 126);
      EXPECT_NE(std::string(e.what()).find("interpreter /lib64/ld-linux-x86-64.so.2: "), std::string::npos) << e.what();
    }
  }
}

TEST_F(RealBinaries, InterpreterOf) {
  EXPECT_EQ(interpreter_of(path("dynamic")), "/lib64/ld-linux-x86-64.so.2");
  EXPECT_EQ(interpreter_of(path("static")), "");
  EXPECT_EQ(interpreter_of(path("static-pie")), "");
  EXPECT_EQ(interpreter_of("/nonexistent"), "");
  EXPECT_EQ(interpreter_of("/etc/hostname"), "");
}

TEST_F(RealBinaries, RefusesToLoadOverExistingMappings) {
  Guest g;
  const Bytes image = read_file(path("static-pie"));
  ASSERT_EQ(g.as.map(kDynBase + 0x10000, kPageSize, kvm::kProtRead, "other"), 0);
  EXPECT_THROW(load_elf(g.as, image, kDynBase), LoadError);
  EXPECT_EQ(g.as.mappings().size(), 1u);
}

TEST_F(RealBinaries, DynHonoursLargestAlignment) {
  Guest g;
  Bytes image = read_file(path("static-pie"));
  const auto phdrs = phdrs_of(image);
  for (size_t i = 0; i < phdrs.size(); ++i)
    if (phdrs[i].p_type == PT_LOAD)
      set<uint64_t>(image, phdr_offset(image, i) + offsetof(Elf64_Phdr, p_align), 0x200000);
  const LoadedElf elf = load_elf(g.as, image, kDynBase + kPageSize);
  EXPECT_EQ(elf.load_bias, kDynBase + 0x200000);
  expect_loaded_like_file(g, image, elf);
}

// ---- read_program_file ----

TEST(ReadProgramFile, ReadsWholeFile) {
  EXPECT_EQ(read_program_file("/bin/busybox"), read_file("/bin/busybox"));
}

LoadError read_error(const std::string& path, uint64_t max_bytes = 1ull << 30) {
  try {
    read_program_file(path, max_bytes);
  } catch (const LoadError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << path;
  return LoadError(0, "");
}

TEST(ReadProgramFile, MissingIs127) {
  const LoadError e = read_error("/nonexistent/program");
  EXPECT_EQ(e.exit_status, 127);
  EXPECT_STREQ(e.what(), "/nonexistent/program: No such file or directory");
}

TEST(ReadProgramFile, DirectoryIs126) {
  const LoadError e = read_error("/tmp");
  EXPECT_EQ(e.exit_status, 126);
  EXPECT_STREQ(e.what(), "/tmp: Is a directory");
}

TEST(ReadProgramFile, TooLargeIs126) {
  const LoadError e = read_error("/bin/busybox", 1000);
  EXPECT_EQ(e.exit_status, 126);
  EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos);
}

TEST(ReadProgramFile, UnreadableIs126) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can read anything";
  char tmpl[] = "/tmp/kvms-unreadable-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ::chmod(tmpl, 0);
  const LoadError e = read_error(tmpl);
  ::unlink(tmpl);
  EXPECT_EQ(e.exit_status, 126);
  EXPECT_NE(std::string(e.what()).find("Permission denied"), std::string::npos);
}

// ---- hand-made files, one per validation rule ----

// A minimal ET_EXEC: text (R+X) at 0x401000 from offset 0x1000, data (R+W) with bss at 0x402000 from
// offset 0x2000, and a PT_GNU_STACK. Headers sit at offset 0, outside every segment.
struct TinyElf {
  Elf64_Ehdr eh{};
  std::vector<Elf64_Phdr> ph;
  uint64_t file_size = 0x2100;

  TinyElf() {
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = 0x401010;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    ph.push_back(load(0x1000, 0x401000, 0x100, 0x100, PF_R | PF_X));
    ph.push_back(load(0x2000, 0x402000, 0x100, 0x3000, PF_R | PF_W));
    ph.push_back({PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16});
  }
  static Elf64_Phdr load(uint64_t offset, uint64_t vaddr, uint64_t filesz, uint64_t memsz, uint32_t flags) {
    return {PT_LOAD, flags, offset, vaddr, vaddr, filesz, memsz, kPageSize};
  }
  // Headers, then every byte i of the body holds (i * 7) so copied bytes are recognisable.
  Bytes build() const {
    Bytes out(file_size);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 7 + 1);
    Elf64_Ehdr h = eh;
    if (h.e_phnum == 0 && !ph.empty()) h.e_phnum = static_cast<uint16_t>(ph.size());
    std::memcpy(out.data(), &h, std::min<size_t>(sizeof h, out.size()));
    const uint64_t table = ph.size() * sizeof(Elf64_Phdr);
    if (h.e_phoff < out.size() && table <= out.size() - h.e_phoff)
      std::memcpy(out.data() + h.e_phoff, ph.data(), table);
    return out;
  }
};

// The LoadError message from loading `image`, or "" when it loads.
std::string load_error(const Bytes& image, uint64_t dyn_base = kDynBase) {
  Guest g;
  try {
    load_elf(g.as, image, dyn_base);
  } catch (const LoadError& e) {
    EXPECT_EQ(e.exit_status, 126);
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    return e.what();
  }
  return "";
}

std::string load_error(const TinyElf& elf, uint64_t dyn_base = kDynBase) { return load_error(elf.build(), dyn_base); }

#define EXPECT_LOAD_ERROR(elf, fragment) EXPECT_PRED_FORMAT2(::testing::IsSubstring, fragment, load_error(elf))

TEST(TinyElf, Loads) {
  Guest g;
  const TinyElf t;
  const Bytes image = t.build();
  const LoadedElf elf = load_elf(g.as, image, kDynBase);
  EXPECT_EQ(elf.entry, 0x401010u);
  EXPECT_EQ(elf.lowest, 0x401000u);
  EXPECT_EQ(elf.highest, 0x405000u);
  EXPECT_EQ(elf.brk_start, 0x405000u);
  EXPECT_EQ(elf.phdr, 0u);  // no segment holds the headers
  EXPECT_FALSE(elf.executable_stack);
  EXPECT_FALSE(elf.has_tls);
  EXPECT_EQ(g.as.find(0x401000)->prot, kvm::kProtRead | kvm::kProtExec);
  EXPECT_EQ(g.as.find(0x402000)->prot, kvm::kProtRead | kvm::kProtWrite);
  EXPECT_EQ(g.as.find(0x404fff)->prot, kvm::kProtRead | kvm::kProtWrite);
  EXPECT_EQ(g.as.find(0x405000), nullptr);
  EXPECT_EQ(guest_bytes(g, 0x401000, 0x100), Bytes(image.begin() + 0x1000, image.begin() + 0x1100));
  EXPECT_EQ(guest_bytes(g, 0x402000, 0x100), Bytes(image.begin() + 0x2000, image.begin() + 0x2100));
  EXPECT_EQ(guest_bytes(g, 0x401100, 0xf00), Bytes(0xf00, 0));  // text page tail
  EXPECT_EQ(guest_bytes(g, 0x402100, 0x2f00), Bytes(0x2f00, 0));  // bss
  // Pure bss pages are anonymous memory; pages holding file bytes are not.
  EXPECT_EQ(g.as.find(0x403000)->name, "");
  EXPECT_NE(g.as.find(0x402000)->name, "");
}

TEST(TinyElf, HeadersInsideASegmentGiveAtPhdr) {
  TinyElf t;
  t.ph[0] = TinyElf::load(0, 0x400000, 0x1100, 0x1100, PF_R | PF_X);
  Guest g;
  const LoadedElf elf = load_elf(g.as, t.build(), kDynBase);
  EXPECT_EQ(elf.phdr, 0x400040u);
}

TEST(TinyElf, PtPhdrWins) {
  TinyElf t;
  t.ph[0] = TinyElf::load(0, 0x400000, 0x1100, 0x1100, PF_R | PF_X);
  t.ph.insert(t.ph.begin(), Elf64_Phdr{PT_PHDR, PF_R, 0x40, 0x400040, 0x400040, 4 * 56, 4 * 56, 8});
  Guest g;
  EXPECT_EQ(load_elf(g.as, t.build(), kDynBase).phdr, 0x400040u);
  t.ph[0].p_vaddr = 0x300000;
  EXPECT_LOAD_ERROR(t, "PT_PHDR lies outside the loaded segments");
}

TEST(TinyElf, StackFlags) {
  TinyElf t;
  t.ph[2].p_flags |= PF_X;
  Guest g1;
  EXPECT_TRUE(load_elf(g1.as, t.build(), kDynBase).executable_stack);
  t.ph.pop_back();
  Guest g2;
  EXPECT_TRUE(load_elf(g2.as, t.build(), kDynBase).executable_stack);  // no PT_GNU_STACK: executable
}

TEST(TinyElf, Interpreter) {
  TinyElf t;
  const char path[] = "/lib/ld.so";
  t.ph.push_back({PT_INTERP, PF_R, 0x1800, 0, 0, sizeof path, sizeof path, 1});
  Bytes image = t.build();
  std::memcpy(image.data() + 0x1800, path, sizeof path);
  Guest g;
  EXPECT_EQ(load_elf(g.as, image, kDynBase).interpreter, "/lib/ld.so");

  image[0x1800 + sizeof path - 1] = 'x';
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not NUL-terminated", load_error(image));
  t.ph.back().p_offset = 0x2100 - 4;
  EXPECT_LOAD_ERROR(t, "PT_INTERP lies outside the file");
  t.ph.back().p_offset = UINT64_MAX - 2;
  EXPECT_LOAD_ERROR(t, "overflows");
  t.ph.back().p_filesz = 1;
  EXPECT_LOAD_ERROR(t, "PT_INTERP has a bad length");
  t.ph.back().p_filesz = 1 << 20;
  EXPECT_LOAD_ERROR(t, "PT_INTERP has a bad length");
}

TEST(TinyElf, Tls) {
  TinyElf t;
  t.ph.push_back({PT_TLS, PF_R, 0x2000, 0x402000, 0x402000, 0x10, 0x40, 16});
  Guest g;
  const LoadedElf elf = load_elf(g.as, t.build(), kDynBase);
  ASSERT_TRUE(elf.has_tls);
  EXPECT_EQ(elf.tls.vaddr, 0x402000u);
  EXPECT_EQ(elf.tls.filesz, 0x10u);
  EXPECT_EQ(elf.tls.memsz, 0x40u);
  EXPECT_EQ(elf.tls.align, 16u);

  t.ph.back().p_filesz = 0x80;
  EXPECT_LOAD_ERROR(t, "PT_TLS: file size exceeds memory size");
  t.ph.back().p_filesz = 0x10;
  t.ph.back().p_align = 12;
  EXPECT_LOAD_ERROR(t, "PT_TLS: alignment 0xc is not a power of two");
  t.ph.back().p_align = 16;
  t.ph.back().p_vaddr = 0x900000;
  EXPECT_LOAD_ERROR(t, "PT_TLS lies outside the loaded segments");
  // Only .tbss, at address 0 (Go's cgo binaries): nothing to read from it, so it loads.
  t.ph.back().p_vaddr = t.ph.back().p_paddr = t.ph.back().p_offset = 0;
  t.ph.back().p_filesz = 0;
  t.ph.back().p_memsz = 8;
  Guest fresh;
  const LoadedElf tbss_only = load_elf(fresh.as, t.build(), kDynBase);
  EXPECT_EQ(tbss_only.tls.filesz, 0u);
  EXPECT_EQ(tbss_only.tls.memsz, 8u);
}

TEST(TinyElf, NeighboursSharingAPageGetBothPermissions) {
  TinyElf t;
  t.ph[1] = TinyElf::load(0x1100, 0x401100, 0x80, 0x200, PF_R | PF_W);  // right after text, same page
  const Bytes image = t.build();
  Guest g;
  load_elf(g.as, image, kDynBase);
  EXPECT_EQ(g.as.find(0x401000)->prot, kvm::kProtRead | kvm::kProtWrite | kvm::kProtExec);
  EXPECT_EQ(guest_bytes(g, 0x401000, 0x180), Bytes(image.begin() + 0x1000, image.begin() + 0x1180));
  EXPECT_EQ(guest_bytes(g, 0x401180, 0x180), Bytes(0x180, 0));
}

TEST(TinyElf, ProtNoneSegmentStillGetsItsBytes) {
  TinyElf t;
  t.ph[1].p_flags = 0;
  const Bytes image = t.build();
  Guest g;
  load_elf(g.as, image, kDynBase);
  EXPECT_EQ(g.as.find(0x402000)->prot, kvm::kProtNone);
  EXPECT_EQ(guest_bytes(g, 0x402000, 0x100), Bytes(image.begin() + 0x2000, image.begin() + 0x2100));
}

TEST(TinyElf, EmptyLoadSegmentsAreIgnored) {
  TinyElf t;
  t.ph.push_back(TinyElf::load(0, 0x401000, 0, 0, PF_R));  // would overlap if it mapped anything
  Guest g;
  EXPECT_NO_THROW(load_elf(g.as, t.build(), kDynBase));
}

TEST(TinyElf, DynamicGoesAtDynBase) {
  TinyElf t;
  t.eh.e_type = ET_DYN;
  t.eh.e_entry = 0x1010;
  t.ph[0].p_vaddr = 0x1000;
  t.ph[1].p_vaddr = 0x2000;
  Guest g;
  const LoadedElf elf = load_elf(g.as, t.build(), 0x2000'0000);
  EXPECT_EQ(elf.lowest, 0x2000'0000u);
  EXPECT_EQ(elf.load_bias, 0x2000'0000u - 0x1000);
  EXPECT_EQ(elf.entry, 0x2000'0010u);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "outside user memory", load_error(t.build(), kUserSize - 0x2000));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "outside user memory", load_error(t.build(), 0x1000));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "overflows", load_error(t.build(), UINT64_MAX - 0xfff));
}

TEST(TinyElf, HeaderErrors) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not an ELF file", load_error(Bytes{}));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not an ELF file", load_error(Bytes{0x7f, 'E', 'L'}));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not an ELF file", load_error(Bytes(100, '#')));
  const Bytes whole = TinyElf().build();
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "truncated ELF header",
                      load_error(Bytes(whole.begin(), whole.begin() + 40)));
  TinyElf t;
  t.eh.e_ident[EI_CLASS] = ELFCLASS32;
  EXPECT_LOAD_ERROR(t, "not a 64-bit ELF file");
  t = TinyElf();
  t.eh.e_ident[EI_DATA] = ELFDATA2MSB;
  EXPECT_LOAD_ERROR(t, "not a little-endian ELF file");
  t = TinyElf();
  t.eh.e_machine = EM_386;
  EXPECT_LOAD_ERROR(t, "not an x86-64 ELF file (e_machine 3)");
  t = TinyElf();
  t.eh.e_machine = EM_AARCH64;
  EXPECT_LOAD_ERROR(t, "not an x86-64 ELF file");
  t = TinyElf();
  t.eh.e_type = ET_REL;
  EXPECT_LOAD_ERROR(t, "not an executable or shared object (e_type 1)");
  t = TinyElf();
  t.eh.e_type = ET_CORE;
  EXPECT_LOAD_ERROR(t, "not an executable or shared object");
  t = TinyElf();
  t.eh.e_phentsize = 32;
  EXPECT_LOAD_ERROR(t, "bad program header size 32 (expected 56)");
}

TEST(TinyElf, ProgramHeaderTableErrors) {
  TinyElf t;
  t.ph.clear();
  EXPECT_LOAD_ERROR(t, "no program headers");
  t = TinyElf();
  t.eh.e_phnum = 257;
  EXPECT_LOAD_ERROR(t, "too many program headers (257, at most 256)");
  t.eh.e_phnum = 0xffff;
  EXPECT_LOAD_ERROR(t, "too many program headers");
  t = TinyElf();
  t.eh.e_phoff = 0x2100 - 3 * 56 + 1;
  EXPECT_LOAD_ERROR(t, "program headers lie outside the file");
  t.eh.e_phoff = 0x10'0000;
  EXPECT_LOAD_ERROR(t, "program headers lie outside the file");
  t.eh.e_phoff = UINT64_MAX - 8;
  EXPECT_LOAD_ERROR(t, "overflows");
  t = TinyElf();
  t.ph = {Elf64_Phdr{PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16}};
  EXPECT_LOAD_ERROR(t, "no loadable segments");
}

TEST(TinyElf, SegmentErrors) {
  auto with = [](auto edit) {
    TinyElf t;
    edit(t.ph[1]);
    return load_error(t);
  };
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 1: file size exceeds memory size",
                      with([](Elf64_Phdr& p) { p.p_filesz = p.p_memsz + 1; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 1: segment lies outside the file",
                      with([](Elf64_Phdr& p) { p.p_filesz = 0x101; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 1: segment lies outside the file",
                      with([](Elf64_Phdr& p) { p.p_offset = 0x3000, p.p_vaddr = 0x403000; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 1: offset + size overflows",
                      with([](Elf64_Phdr& p) { p.p_offset = UINT64_MAX - 0xfff, p.p_filesz = 0x1000; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "larger than the address space",
                      with([](Elf64_Phdr& p) { p.p_memsz = 1ull << 40; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "larger than the address space",
                      with([](Elf64_Phdr& p) { p.p_memsz = UINT64_MAX; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 1: address + size overflows",
                      with([](Elf64_Phdr& p) { p.p_vaddr = UINT64_MAX - 0xfff; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "outside user memory",
                      with([](Elf64_Phdr& p) { p.p_vaddr = 0x1'0000'2000; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 1: alignment 0x3000 is not a power of two",
                      with([](Elf64_Phdr& p) { p.p_align = 0x3000; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not congruent modulo the page size",
                      with([](Elf64_Phdr& p) { p.p_vaddr = 0x402008; }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "program header 0 and program header 1: segments overlap",
                      with([](Elf64_Phdr& p) { p.p_vaddr = 0x401000; }));
  EXPECT_EQ(with([](Elf64_Phdr& p) { p.p_align = 0; }), "");  // 0 and 1 mean unaligned
  EXPECT_EQ(with([](Elf64_Phdr& p) { p.p_align = 1; }), "");
}

TEST(TinyElf, AddressErrors) {
  TinyElf t;
  t.ph[0].p_vaddr = 0x1000;  // below kUserMin
  t.eh.e_entry = 0x1010;
  EXPECT_LOAD_ERROR(t, "outside user memory [0x10000, 0x100000000)");
  t = TinyElf();
  t.ph[1].p_vaddr = kUserSize - 0x2000;  // ends past the limit
  EXPECT_LOAD_ERROR(t, "outside user memory");
  t.ph[1].p_vaddr = kUserSize + 0x500000;  // spans more than all of user memory
  EXPECT_LOAD_ERROR(t, "more than the address space");
  t = TinyElf();
  t.ph[0].p_vaddr = 0x500000;  // segments listed out of order but disjoint: fine
  t.eh.e_entry = 0x500000;
  EXPECT_EQ(load_error(t), "");
}

TEST(TinyElf, EntryErrors) {
  TinyElf t;
  t.eh.e_entry = 0x402010;  // in the data segment
  EXPECT_LOAD_ERROR(t, "entry point 0x402010 is not inside an executable segment");
  t.eh.e_entry = 0x401100;  // just past text's bytes
  EXPECT_LOAD_ERROR(t, "not inside an executable segment");
  t.eh.e_entry = 0;
  EXPECT_LOAD_ERROR(t, "not inside an executable segment");
}

TEST(TinyElf, EveryTruncationFails) {
  const Bytes whole = TinyElf().build();
  for (size_t size = 0; size < whole.size(); ++size) {
    const std::string error = load_error(Bytes(whole.begin(), whole.begin() + size));
    EXPECT_NE(error, "") << "truncated to " << size;
  }
}

// ---- corrupted copies of a real binary ----

// Loads `image` into a fresh guest; a successful load must leave a sane result behind. True if it loaded.
bool load_or_fail_cleanly(const Bytes& image, uint64_t dyn_base, const std::string& what) {
  Guest g;
  try {
    const LoadedElf elf = load_elf(g.as, image, dyn_base);
    EXPECT_GE(elf.lowest, kvm::kUserMin) << what;
    EXPECT_LE(elf.highest, kUserSize) << what;
    const kvm::Mapping* entry = g.as.find(elf.entry);
    EXPECT_TRUE(entry && (entry->prot & kvm::kProtExec)) << what;
    return true;
  } catch (const LoadError& e) {
    EXPECT_EQ(e.exit_status, 126) << what;
    EXPECT_NE(std::string(e.what()), "") << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": unexpected exception " << e.what();
  }
  return false;
}

class Corrupted : public RealBinaries {
 protected:
  std::mt19937_64 rng{20240611};
  uint64_t pick(uint64_t n) { return rng() % n; }
  uint64_t interesting(uint64_t file_size) {
    const uint64_t values[] = {0,           1,           7,          0xfff,          0x1000,         0x1001,
                               file_size - 1, file_size, file_size + 1, 0x10000,       0x400000,       0x200000,
                               kUserSize - 0x1000, kUserSize, 1ull << 40, 1ull << 47, 1ull << 63,
                               UINT64_MAX - 0xfff, UINT64_MAX - 1, UINT64_MAX, rng()};
    return values[pick(std::size(values))];
  }
  void corrupt_program_headers(Bytes& image, int edits) {
    const int phnum = header_of(image).e_phnum;
    for (int i = 0; i < edits; ++i) {
      const uint64_t base = phdr_offset(image, pick(phnum));
      const size_t field = pick(8);  // p_type, p_flags, then the six 64-bit fields
      if (field == 0) set<uint32_t>(image, base, uint32_t(pick(3) == 0 ? rng() : PT_LOAD + pick(8)));
      else if (field == 1) set<uint32_t>(image, base + 4, uint32_t(pick(8)));
      else set<uint64_t>(image, base + 8 * (field - 1), interesting(image.size()));
    }
  }
  void run(const std::string& binary, uint64_t dyn_base);
  void attempt(const Bytes& image, uint64_t dyn_base, const std::string& what) {
    ++(load_or_fail_cleanly(image, dyn_base, what) ? loaded_ : rejected_);
  }
  int loaded_ = 0, rejected_ = 0;
};

void Corrupted::run(const std::string& binary, uint64_t dyn_base) {
  const Bytes original = read_file(binary);
  const Elf64_Ehdr eh = header_of(original);
  const uint64_t headers_end = eh.e_phoff + eh.e_phnum * sizeof(Elf64_Phdr);
  ASSERT_TRUE(load_or_fail_cleanly(original, dyn_base, "original"));

  for (int i = 0; i < 1500; ++i) {  // random byte flips in the ELF and program headers
    Bytes image = original;
    for (int flips = 1 + pick(6); flips > 0; --flips) image[pick(headers_end)] ^= uint8_t(1 + pick(255));
    attempt(image, dyn_base, "flips #" + std::to_string(i));
  }
  for (int i = 0; i < 1500; ++i) {  // absurd values in program header fields
    Bytes image = original;
    corrupt_program_headers(image, 1 + pick(3));
    attempt(image, dyn_base, "phdr fields #" + std::to_string(i));
  }
  for (int i = 0; i < 300; ++i) {  // absurd values in ELF header fields
    Bytes image = original;
    const uint64_t v = interesting(image.size());
    switch (pick(4)) {
      case 0: set<uint64_t>(image, offsetof(Elf64_Ehdr, e_phoff), v); break;
      case 1: set<uint16_t>(image, offsetof(Elf64_Ehdr, e_phnum), uint16_t(v)); break;
      case 2: set<uint64_t>(image, offsetof(Elf64_Ehdr, e_entry), v); break;
      case 3: set<uint16_t>(image, offsetof(Elf64_Ehdr, e_phentsize), uint16_t(v)); break;
    }
    attempt(image, dyn_base, "ehdr fields #" + std::to_string(i));
  }
  for (int i = 0; i < 300; ++i) {  // one PT_LOAD moved onto another
    Bytes image = original;
    const auto phdrs = phdrs_of(image);
    const int a = pick(phdrs.size()), b = pick(phdrs.size());
    set<uint64_t>(image, phdr_offset(image, a) + offsetof(Elf64_Phdr, p_vaddr), phdrs[b].p_vaddr + pick(0x3000));
    attempt(image, dyn_base, "moved #" + std::to_string(i));
  }
  // Truncations: every byte of the headers, around every segment's ends, and at random.
  std::vector<uint64_t> cuts;
  for (uint64_t c = 0; c <= headers_end + 8; ++c) cuts.push_back(c);
  for (const auto& ph : phdrs_of(original))
    for (uint64_t c : {ph.p_offset, ph.p_offset + 1, ph.p_offset + ph.p_filesz - 1, ph.p_offset + ph.p_filesz})
      if (c < original.size()) cuts.push_back(c);
  for (int i = 0; i < 50; ++i) cuts.push_back(pick(original.size()));
  for (uint64_t c : cuts)
    attempt(Bytes(original.begin(), original.begin() + c), dyn_base, "truncated at " + std::to_string(c));
  // Both outcomes must be common, or the corruption is not exercising the checks.
  EXPECT_GT(loaded_, 100);
  EXPECT_GT(rejected_, 1000);
  std::printf("%s: %d corrupted copies loaded, %d rejected\n", binary.c_str(), loaded_, rejected_);
}

TEST_F(Corrupted, StaticBinary) { run(path("static"), kDynBase); }
TEST_F(Corrupted, StaticPieBinary) { run(path("static-pie"), kDynBase); }
TEST_F(Corrupted, DynamicBinary) { run(path("dynamic"), kDynBase); }

}  // namespace
}  // namespace kvms::loader
