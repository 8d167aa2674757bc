// libFuzzer harness over the snapshot file reader (src/snapshot/format.cpp), natively, under ASan
// and UBSan: an input is a whole snapshot file. Built by -DKVMS_FUZZ=ON with clang
// (tests/fuzz/CMakeLists.txt), run by tests/fuzz/run_snapshot_fuzzer.sh over the corpus that
// tests/fuzz/snapshot_corpus.cpp writes.
//
// Each input is read twice: as it is (decode_header, then decode_description on the bytes the
// header points at), and once more with both hashes made right (when the header's description
// range lies inside the input), since a mutated file almost never keeps its XXH3 hashes and the
// checks behind them (the bounded reader, validate()) would otherwise go unexercised. Refusing an
// input with SnapshotError is the expected outcome; any other exception, a crash, a sanitizer
// report, a leak, a timeout or an allocation past -malloc_limit_mb is a finding. So are: the file
// read as kvmserver reads it (read_description on an fd: a memfd holding the input) refused or
// accepted where the bytes were not, or with another message; an accepted file whose description,
// encoded again, is not accepted with the same fields (the reader and the writer share one schema
// and must agree). An accepted file is also described (inspect) and, as it is, its memory image
// checked against its chunk hashes (verify_memory).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../unit/snapshot_samples.hpp"
#include "snapshot/format.hpp"

namespace {

using namespace kvms::snapshot;

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "snapshot_fuzzer: invariant broken: %s\n", what);
  std::abort();
}

// The input as a file (kvmserver reads snapshots with pread).
int file_holding(std::span<const uint8_t> bytes) {
  static const int fd = memfd_create("snapshot", MFD_CLOEXEC);
  if (fd < 0 || pwrite(fd, bytes.data(), bytes.size(), 0) != ssize_t(bytes.size()) || ftruncate(fd, off_t(bytes.size())) != 0)
    broken("cannot write the input to a memfd");
  return fd;
}

// What every reader of an accepted file does with it (inspect [--verify], serve), and the round trip.
void use_accepted(int fd, const Header& h, const Description& d, bool verify) {
  (void)describe(h, d);
  (void)missing_cpu_features(d, d.cpuid, d.xcr0);
  if (verify) {
    try {
      verify_memory(fd, h, d);
    } catch (const SnapshotError&) {
    }
  }
  const std::vector<uint8_t> again = samples::file_of(d);
  Description back;
  try {
    back = samples::decode_file(again);
  } catch (const SnapshotError&) {
    broken("an accepted description, encoded again, is refused");
  }
  if (encode(back) != encode(d)) broken("an accepted description does not survive encode and decode");
}

// `verify`: also check the memory image (1 MiB of buffer each time: only for the inputs as they
// are, which are rarely accepted; with their hashes made right, many are).
void read_file(std::span<const uint8_t> file, bool verify) {
  std::optional<std::string> refused_bytes, refused_file;
  try {
    (void)samples::decode_file(file);
  } catch (const SnapshotError& e) {
    refused_bytes = e.what();
  }
  const int fd = file_holding(file);
  try {
    Header h;
    const Description d = read_description(fd, &h);
    use_accepted(fd, h, d, verify);
  } catch (const SnapshotError& e) {
    refused_file = e.what();
  }
  if (refused_bytes != refused_file) broken("read_description and decode_header/decode_description disagree");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> file(data, size);
  read_file(file, true);
  if (size < kHeaderSize) return 0;
  const uint64_t offset = samples::get_u64(file, samples::kDescriptionOffsetAt);
  const uint64_t length = samples::get_u64(file, samples::kDescriptionSizeAt);
  if (offset != kHeaderSize || length > size - kHeaderSize) return 0;
  std::vector<uint8_t> sealed(file.begin(), file.end());
  samples::reseal(sealed);
  read_file(sealed, false);
  return 0;
}
