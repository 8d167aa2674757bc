// ELF64 x86-64 loading. Everything in the image is untrusted: every field is checked before use and
// all offset/size arithmetic is overflow-checked, so a malformed file ends in a LoadError, never in a
// wild read of the image or a write outside the guest.
#include "loader/elf_loader.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <optional>
#include <set>

#include "kvm/layout.hpp"

namespace kvms::loader {
namespace {

using kvm::kPageSize;
using kvm::page_down;
using kvm::page_up;

constexpr int kNotExecutable = 126;
constexpr int kNotFound = 127;
constexpr uint64_t kMaxProgramHeaders = 256;
constexpr uint64_t kMaxInterpreterPath = 4096;  // PATH_MAX, as Linux limits PT_INTERP

[[noreturn]] void fail(const std::string& message) { throw LoadError(kNotExecutable, message); }

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string segment_name(size_t index) { return "program header " + std::to_string(index); }

// `sum` names the quantity for the message, e.g. "program header 3: offset + size".
uint64_t checked_add(uint64_t a, uint64_t b, const std::string& sum) {
  uint64_t result;
  if (__builtin_add_overflow(a, b, &result)) fail(sum + " overflows");
  return result;
}

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& product) {
  uint64_t result;
  if (__builtin_mul_overflow(a, b, &result)) fail(product + " overflows");
  return result;
}

// 0 and 1 both mean "no alignment constraint" in ELF.
bool valid_alignment(uint64_t align) { return (align & (align - 1)) == 0; }

bool inside_file(uint64_t offset, uint64_t size, uint64_t file_size, const std::string& what) {
  return checked_add(offset, size, what + ": offset + size") <= file_size;
}

int prot_of(uint32_t flags) {
  return ((flags & PF_R) ? kvm::kProtRead : 0) | ((flags & PF_W) ? kvm::kProtWrite : 0) |
         ((flags & PF_X) ? kvm::kProtExec : 0);
}

// ---- headers ----

Elf64_Ehdr read_elf_header(std::span<const uint8_t> image) {
  if (image.size() < SELFMAG || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0) fail("not an ELF file");
  if (image.size() < EI_NIDENT) fail("truncated ELF header");
  if (image[EI_CLASS] != ELFCLASS64) fail("not a 64-bit ELF file");
  if (image[EI_DATA] != ELFDATA2LSB) fail("not a little-endian ELF file");
  if (image.size() < sizeof(Elf64_Ehdr)) fail("truncated ELF header");
  Elf64_Ehdr ehdr;
  std::memcpy(&ehdr, image.data(), sizeof ehdr);
  if (ehdr.e_machine != EM_X86_64) fail("not an x86-64 ELF file (e_machine " + std::to_string(ehdr.e_machine) + ")");
  if (ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN)
    fail("not an executable or shared object (e_type " + std::to_string(ehdr.e_type) + ")");
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr))
    fail("bad program header size " + std::to_string(ehdr.e_phentsize) + " (expected " +
         std::to_string(sizeof(Elf64_Phdr)) + ")");
  if (ehdr.e_phnum == 0) fail("no program headers");
  if (ehdr.e_phnum > kMaxProgramHeaders)
    fail("too many program headers (" + std::to_string(ehdr.e_phnum) + ", at most " +
         std::to_string(kMaxProgramHeaders) + ")");
  return ehdr;
}

uint64_t program_headers_size(const Elf64_Ehdr& ehdr) {
  return checked_mul(ehdr.e_phnum, sizeof(Elf64_Phdr), "program header table size");
}

// Copied out because the image gives no alignment guarantee for e_phoff.
std::vector<Elf64_Phdr> read_program_headers(std::span<const uint8_t> image, const Elf64_Ehdr& ehdr) {
  if (!inside_file(ehdr.e_phoff, program_headers_size(ehdr), image.size(), "program headers"))
    fail("program headers lie outside the file");
  std::vector<Elf64_Phdr> phdrs(ehdr.e_phnum);
  std::memcpy(phdrs.data(), image.data() + ehdr.e_phoff, phdrs.size() * sizeof(Elf64_Phdr));
  return phdrs;
}

// ---- PT_LOAD segments ----

struct Segment {
  size_t index;  // in the program header table, for messages
  uint64_t vaddr, memsz, offset, filesz;
  int prot;
  uint64_t end() const { return vaddr + memsz; }  // overflow-checked in check_load_segment
};

void check_load_segment(const Elf64_Phdr& ph, size_t index, uint64_t file_size, uint64_t limit) {
  const std::string what = segment_name(index);
  if (ph.p_filesz > ph.p_memsz) fail(what + ": file size exceeds memory size");
  if (ph.p_memsz > limit) fail(what + ": memory size " + hex(ph.p_memsz) + " is larger than the address space");
  if (!inside_file(ph.p_offset, ph.p_filesz, file_size, what)) fail(what + ": segment lies outside the file");
  // The end is rounded up to a page later, so that must not wrap either.
  if (checked_add(ph.p_vaddr, ph.p_memsz, what + ": address + size") > UINT64_MAX - kPageSize)
    fail(what + ": address + size overflows");
  if (!valid_alignment(ph.p_align)) fail(what + ": alignment " + hex(ph.p_align) + " is not a power of two");
  if ((ph.p_offset - ph.p_vaddr) % kPageSize != 0)
    fail(what + ": file offset and address are not congruent modulo the page size");
}

std::vector<Segment> collect_load_segments(const std::vector<Elf64_Phdr>& phdrs, uint64_t file_size, uint64_t limit) {
  std::vector<Segment> segments;
  for (size_t i = 0; i < phdrs.size(); ++i) {
    const Elf64_Phdr& ph = phdrs[i];
    if (ph.p_type != PT_LOAD) continue;
    check_load_segment(ph, i, file_size, limit);
    if (ph.p_memsz == 0) continue;  // maps nothing, as in Linux
    segments.push_back({i, ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz, prot_of(ph.p_flags)});
  }
  if (segments.empty()) fail("no loadable segments");
  std::stable_sort(segments.begin(), segments.end(),
                   [](const Segment& a, const Segment& b) { return a.vaddr < b.vaddr; });
  for (size_t i = 1; i < segments.size(); ++i)
    if (segments[i].vaddr < segments[i - 1].end())
      fail(segment_name(segments[i - 1].index) + " and " + segment_name(segments[i].index) + ": segments overlap");
  return segments;
}

uint64_t largest_alignment(const std::vector<Elf64_Phdr>& phdrs) {
  uint64_t align = kPageSize;
  for (const auto& ph : phdrs)
    if (ph.p_type == PT_LOAD) align = std::max(align, ph.p_align);
  return align;
}

// Where the image goes: guest address = base + (vaddr - first_page).
struct Placement {
  uint64_t first_page = 0;  // page_down of the lowest PT_LOAD vaddr
  uint64_t span = 0;        // page-aligned size from first_page to the end of the highest segment
  uint64_t base = 0;        // guest address of first_page
  uint64_t to_guest(uint64_t vaddr) const { return base + (vaddr - first_page); }
  uint64_t load_bias() const { return base - first_page; }  // may wrap for ET_DYN: bias is modular
  bool contains(uint64_t vaddr, uint64_t size) const {
    return vaddr >= first_page && size <= span && vaddr - first_page <= span - size;
  }
};

Placement place(const Elf64_Ehdr& ehdr, const std::vector<Elf64_Phdr>& phdrs, const std::vector<Segment>& segments,
                uint64_t dyn_base, uint64_t limit) {
  Placement p;
  p.first_page = page_down(segments.front().vaddr);
  uint64_t end = 0;
  for (const auto& s : segments) end = std::max(end, s.end());
  p.span = page_up(end) - p.first_page;
  if (p.span > limit) fail("segments span " + hex(p.span) + " bytes, more than the address space");
  if (ehdr.e_type == ET_EXEC) {
    p.base = p.first_page;
  } else {
    // Like Linux, honour the largest p_align so huge-page-aligned segments stay aligned.
    const uint64_t align = largest_alignment(phdrs);
    if (align > limit) fail("segment alignment " + hex(align) + " is larger than the address space");
    const uint64_t rounded = checked_add(dyn_base, align - 1, "aligned load address");
    p.base = rounded & ~(align - 1);
  }
  const uint64_t guest_end = checked_add(p.base, p.span, "load address + size");
  if (p.base < kvm::kUserMin || guest_end > limit)
    fail("segments at [" + hex(p.base) + ", " + hex(guest_end) + ") lie outside user memory [" + hex(kvm::kUserMin) +
         ", " + hex(limit) + ")");
  return p;
}

void check_range_free(const kvm::AddressSpace& as, uint64_t start, uint64_t end) {
  const auto& maps = as.mappings();
  auto it = maps.lower_bound(start);
  if (it != maps.begin() && std::prev(it)->second.end > start) --it;
  if (it != maps.end() && it->first < end)
    fail("load range [" + hex(start) + ", " + hex(end) + ") overlaps an existing mapping");
}

// ---- mapping ----

// A page range of one segment: the pages holding file bytes, or the bss pages past them.
struct PageRange {
  uint64_t start, end;
  int prot;
  bool file_backed;
};

std::vector<PageRange> page_ranges(const std::vector<Segment>& segments, const Placement& p) {
  std::vector<PageRange> ranges;
  for (const auto& s : segments) {
    const uint64_t start = page_down(p.to_guest(s.vaddr));
    const uint64_t file_end = s.filesz ? page_up(p.to_guest(s.vaddr) + s.filesz) : start;
    const uint64_t end = page_up(p.to_guest(s.end()));
    if (file_end > start) ranges.push_back({start, file_end, s.prot, true});
    if (end > file_end) ranges.push_back({file_end, end, s.prot, false});
  }
  return ranges;
}

bool mergeable(const PageRange& a, const PageRange& b) {
  return a.end == b.start && a.prot == b.prot && a.file_backed == b.file_backed;
}

// Neighbouring segments may share a page (their bytes never overlap); such a page gets the union of
// their permissions. Splitting at every range boundary gives pieces each covered by a fixed set of ranges.
std::vector<PageRange> resolve_shared_pages(const std::vector<PageRange>& ranges) {
  std::set<uint64_t> cuts;
  for (const auto& r : ranges) cuts.insert({r.start, r.end});
  std::vector<PageRange> pieces;
  for (auto it = cuts.begin(); std::next(it) != cuts.end(); ++it) {
    PageRange piece{*it, *std::next(it), kvm::kProtNone, false};
    bool covered = false;
    for (const auto& r : ranges) {
      if (r.start <= piece.start && piece.end <= r.end) {
        covered = true;
        piece.prot |= r.prot;
        piece.file_backed |= r.file_backed;
      }
    }
    if (!covered) continue;
    if (!pieces.empty() && mergeable(pieces.back(), piece))
      pieces.back().end = piece.end;
    else
      pieces.push_back(piece);
  }
  return pieces;
}

void unmap_all(kvm::AddressSpace& as, const std::vector<PageRange>& pieces) {
  for (const auto& piece : pieces) as.unmap(piece.start, piece.end - piece.start);
}

// poke needs an accessible page, so PROT_NONE pieces are mapped readable until their bytes are in.
void map_segments(kvm::AddressSpace& as, std::span<const uint8_t> image, const std::vector<Segment>& segments,
                  const Placement& p, const std::string& file_name) {
  const std::vector<PageRange> pieces = resolve_shared_pages(page_ranges(segments, p));
  for (const auto& piece : pieces) {
    const int prot = piece.prot == kvm::kProtNone ? kvm::kProtRead : piece.prot;
    if (as.map(piece.start, piece.end - piece.start, prot, piece.file_backed ? file_name : "") != 0) {
      unmap_all(as, pieces);
      fail("cannot map [" + hex(piece.start) + ", " + hex(piece.end) + "): out of guest memory");
    }
  }
  // Fresh pages are zero, so copying only the file bytes leaves bss and the file page's tail zeroed.
  for (const auto& s : segments)
    if (s.filesz && !as.poke(p.to_guest(s.vaddr), image.data() + s.offset, s.filesz)) {
      unmap_all(as, pieces);
      fail(segment_name(s.index) + ": cannot copy the segment into guest memory");
    }
  for (const auto& piece : pieces)
    if (piece.prot == kvm::kProtNone) as.protect(piece.start, piece.end - piece.start, kvm::kProtNone);
}

// ---- other program headers ----

void check_entry(const Elf64_Ehdr& ehdr, const std::vector<Segment>& segments) {
  for (const auto& s : segments)
    if ((s.prot & kvm::kProtExec) && ehdr.e_entry >= s.vaddr && ehdr.e_entry < s.end()) return;
  fail("entry point " + hex(ehdr.e_entry) + " is not inside an executable segment");
}

std::string read_interpreter(const Elf64_Phdr& ph, std::span<const uint8_t> image) {
  if (ph.p_filesz < 2 || ph.p_filesz > kMaxInterpreterPath) fail("PT_INTERP has a bad length " + hex(ph.p_filesz));
  if (!inside_file(ph.p_offset, ph.p_filesz, image.size(), "PT_INTERP")) fail("PT_INTERP lies outside the file");
  const char* path = reinterpret_cast<const char*>(image.data() + ph.p_offset);
  if (path[ph.p_filesz - 1] != '\0') fail("PT_INTERP is not NUL-terminated");
  if (path[0] == '\0') fail("PT_INTERP is empty");
  return std::string(path);
}

// Linux takes AT_PHDR from the PT_LOAD whose file bytes hold the table; PT_PHDR, when present, says
// the same thing directly (and is what ld.so trusts).
uint64_t program_headers_address(const Elf64_Ehdr& ehdr, const std::vector<Elf64_Phdr>& phdrs,
                                 const std::vector<Segment>& segments, const Placement& p) {
  const uint64_t size = program_headers_size(ehdr);
  for (const auto& ph : phdrs) {
    if (ph.p_type != PT_PHDR) continue;
    if (!p.contains(ph.p_vaddr, size)) fail("PT_PHDR lies outside the loaded segments");
    return p.to_guest(ph.p_vaddr);
  }
  for (const auto& s : segments)
    if (s.offset <= ehdr.e_phoff && size <= s.filesz && ehdr.e_phoff - s.offset <= s.filesz - size)
      return p.to_guest(s.vaddr + (ehdr.e_phoff - s.offset));
  return 0;
}

// Thread-local data is not bounded by the segments (its .tbss part is never mapped), only by sanity.
constexpr uint64_t kMaxTlsSize = 1ull << 30;

TlsSegment read_tls(const Elf64_Phdr& ph, const Placement& p) {
  if (ph.p_filesz > ph.p_memsz) fail("PT_TLS: file size exceeds memory size");
  if (!valid_alignment(ph.p_align)) fail("PT_TLS: alignment " + hex(ph.p_align) + " is not a power of two");
  if (ph.p_memsz > kMaxTlsSize) fail("PT_TLS: memory size " + hex(ph.p_memsz) + " is absurd");
  // Only .tbss (no initialization image): nothing is read from its address, which may be anything
  // (Go's cgo binaries have 0).
  if (ph.p_filesz == 0) return {0, 0, ph.p_memsz, ph.p_align};
  if (!p.contains(ph.p_vaddr, ph.p_filesz)) fail("PT_TLS lies outside the loaded segments");
  return {p.to_guest(ph.p_vaddr), ph.p_filesz, ph.p_memsz, ph.p_align};
}

// Everything but PT_LOAD: interpreter, TLS, stack flags. The first of each kind wins, as in Linux.
void read_other_headers(LoadedElf& out, const std::vector<Elf64_Phdr>& phdrs, std::span<const uint8_t> image,
                        const Placement& p) {
  bool seen_interp = false, seen_stack = false;
  out.executable_stack = true;
  for (const auto& ph : phdrs) {
    if (ph.p_type == PT_INTERP && !seen_interp) {
      out.interpreter = read_interpreter(ph, image);
      seen_interp = true;
    } else if (ph.p_type == PT_TLS && !out.has_tls) {
      out.tls = read_tls(ph, p);
      out.has_tls = true;
    } else if (ph.p_type == PT_GNU_STACK && !seen_stack) {
      out.executable_stack = (ph.p_flags & PF_X) != 0;
      seen_stack = true;
    }
  }
}

// The page-aligned size of an image's PT_LOAD span and the alignment Linux would honour for it.
struct Footprint {
  bool fixed = false;  // ET_EXEC: goes at its own addresses
  uint64_t span = 0, align = kPageSize;
};

Footprint footprint(std::span<const uint8_t> image, uint64_t limit) {
  const Elf64_Ehdr ehdr = read_elf_header(image);
  const std::vector<Elf64_Phdr> phdrs = read_program_headers(image, ehdr);
  const std::vector<Segment> segments = collect_load_segments(phdrs, image.size(), limit);
  uint64_t end = 0;
  for (const auto& s : segments) end = std::max(end, s.end());
  return {ehdr.e_type == ET_EXEC, page_up(end) - page_down(segments.front().vaddr), largest_alignment(phdrs)};
}

// The highest address a at which [a, a+len) is free, a aligned, a+len <= below (Linux's top-down
// mmap search, which is where it puts the interpreter).
std::optional<uint64_t> free_below(const kvm::AddressSpace& as, uint64_t len, uint64_t align, uint64_t below) {
  const auto& maps = as.mappings();
  uint64_t gap_end = std::min(below, as.limit());
  for (auto r = std::make_reverse_iterator(maps.lower_bound(gap_end));; ++r) {
    const uint64_t gap_start = r == maps.rend() ? kvm::kUserMin : std::max(r->second.end, kvm::kUserMin);
    if (gap_end >= len && gap_end - len >= gap_start) {
      const uint64_t a = (gap_end - len) & ~(align - 1);
      if (a >= gap_start) return a;
    }
    if (r == maps.rend()) return std::nullopt;
    gap_end = std::min(gap_end, r->first);
  }
}

LoadedElf load_interpreter(kvm::AddressSpace& as, const std::string& path, std::span<const uint8_t> image,
                           uint64_t below) {
  try {
    const Footprint f = footprint(image, as.limit());
    uint64_t base = 0;
    if (!f.fixed) {
      auto found = f.align <= as.limit() ? free_below(as, f.span, f.align, below) : std::nullopt;
      if (!found) fail("no room for its " + hex(f.span) + " bytes");
      base = *found;
    }
    LoadedElf elf = load_elf(as, image, base, path);
    if (!elf.interpreter.empty()) fail("it names an interpreter itself (" + elf.interpreter + ")");
    return elf;
  } catch (const LoadError& e) {
    throw LoadError(e.exit_status, "interpreter " + path + ": " + e.what());
  }
}

}  // namespace

LoadedProgram load_program(kvm::AddressSpace& as, std::span<const uint8_t> image, const std::string& program_name,
                           const ProgramLayout& layout, const FileReader& read_interpreter) {
  // The program's own PT_INTERP decides its base, so look before loading.
  bool dynamic = false;
  {
    const Elf64_Ehdr ehdr = read_elf_header(image);
    for (const auto& ph : read_program_headers(image, ehdr)) dynamic |= ph.p_type == PT_INTERP;
  }
  LoadedProgram out;
  out.program = load_elf(as, image, dynamic ? layout.pie_base : layout.static_pie_base, program_name);
  out.start = out.program.entry;
  if (out.program.interpreter.empty()) return out;
  std::vector<uint8_t> interp;
  try {
    interp = read_interpreter(out.program.interpreter);
  } catch (const LoadError& e) {
    throw LoadError(e.exit_status, "interpreter " + std::string(e.what()));
  }
  out.interpreter = load_interpreter(as, out.program.interpreter, interp, layout.interp_below);
  out.interp_base = out.interpreter.lowest;
  out.start = out.interpreter.entry;
  return out;
}

std::string interpreter_of(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct CloseOnExit {
    int fd;
    ~CloseOnExit() { ::close(fd); }
  } closer{fd};
  auto read_at = [fd](uint64_t offset, uint64_t len) {
    std::vector<uint8_t> buf(len);
    const ssize_t n = ::pread(fd, buf.data(), len, static_cast<off_t>(offset));
    buf.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return buf;
  };
  try {
    const std::vector<uint8_t> head = read_at(0, sizeof(Elf64_Ehdr));
    const Elf64_Ehdr ehdr = read_elf_header(head);
    const uint64_t table = program_headers_size(ehdr);
    std::vector<uint8_t> phdr_bytes = read_at(ehdr.e_phoff, table);
    if (phdr_bytes.size() != table) return "";
    for (uint64_t i = 0; i < ehdr.e_phnum; ++i) {
      Elf64_Phdr ph;
      std::memcpy(&ph, phdr_bytes.data() + i * sizeof ph, sizeof ph);
      if (ph.p_type != PT_INTERP) continue;
      if (ph.p_filesz < 2 || ph.p_filesz > kMaxInterpreterPath) return "";
      const std::vector<uint8_t> text = read_at(ph.p_offset, ph.p_filesz);
      if (text.size() != ph.p_filesz || text.back() != 0) return "";
      return std::string(reinterpret_cast<const char*>(text.data()));
    }
  } catch (const LoadError&) {
  }
  return "";
}

LoadedElf load_elf(kvm::AddressSpace& as, std::span<const uint8_t> image, uint64_t dyn_base,
                   const std::string& file_name) {
  const Elf64_Ehdr ehdr = read_elf_header(image);
  const std::vector<Elf64_Phdr> phdrs = read_program_headers(image, ehdr);
  const std::vector<Segment> segments = collect_load_segments(phdrs, image.size(), as.limit());
  check_entry(ehdr, segments);
  const Placement placement = place(ehdr, phdrs, segments, dyn_base, as.limit());

  LoadedElf out;
  out.load_bias = placement.load_bias();
  out.entry = placement.to_guest(ehdr.e_entry);
  out.phdr = program_headers_address(ehdr, phdrs, segments, placement);
  out.phent = sizeof(Elf64_Phdr);
  out.phnum = ehdr.e_phnum;
  out.lowest = placement.base;
  out.highest = placement.base + placement.span;
  out.brk_start = out.highest;
  read_other_headers(out, phdrs, image, placement);

  check_range_free(as, out.lowest, out.highest);
  map_segments(as, image, segments, placement, file_name);
  return out;
}

std::vector<uint8_t> read_program_file(const std::string& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw LoadError(err == ENOENT ? kNotFound : kNotExecutable, path + ": " + std::strerror(err));
  }
  struct CloseOnExit {
    int fd;
    ~CloseOnExit() { ::close(fd); }
  } closer{fd};
  return read_program_fd(fd, path, max_bytes);
}

std::vector<uint8_t> read_program_fd(int fd, const std::string& path, uint64_t max_bytes) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw LoadError(kNotExecutable, path + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw LoadError(kNotExecutable, path + ": Is a directory");
  if (!S_ISREG(st.st_mode)) throw LoadError(kNotExecutable, path + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) throw LoadError(kNotExecutable, path + ": file too large");

  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::read(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw LoadError(kNotExecutable, path + ": " + std::strerror(errno));
    if (n == 0) break;  // the file shrank while we read it
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

}  // namespace kvms::loader
