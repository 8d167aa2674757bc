// Writes snapshot files for tests/fuzz/snapshot_fuzzer.cpp: the valid file of
// tests/unit/snapshot_samples.hpp and the files made from it that kvmserver must refuse (the same
// corpus tests/unit/test_snapshot_format.cpp checks), one file each, named by what was done to it.
//
// Usage: snapshot_corpus DIR [--seeds]
//   all (default): every bad file, with the bit flips and truncations spaced wider than the unit
//                  test's (still more than 5,000 files), to replay once;
//   --seeds:       the valid file and the hand-crafted ones whose hashes are right (a few hundred):
//                  the starting points for mutation, which the hash-checked flips are not.
// Prints how many files it wrote.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../unit/snapshot_samples.hpp"

namespace {

using namespace kvms::snapshot;

std::string file_name(int index, const samples::BadFile& f) {
  std::string name = std::to_string(index) + "-" + f.kind + "-" + f.what;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  return name.substr(0, 120);
}

bool write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return bool(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && std::strcmp(argv[2], "--seeds") != 0)) {
    std::fprintf(stderr, "usage: snapshot_corpus DIR [--seeds]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const bool seeds_only = argc == 3;
  const Description valid = samples::valid_description();
  if (!write_file(dir + "/valid", samples::file_of(valid))) {
    std::fprintf(stderr, "snapshot_corpus: cannot write to %s\n", dir.c_str());
    return 1;
  }
  int written = 1;
  bool ok = true;
  samples::for_each_bad_file(
      valid,
      [&](const samples::BadFile& f) {
        if (seeds_only && f.kind != "crafted" && f.kind != "patched" && f.kind != "sealed") return;
        ok = ok && write_file(dir + "/" + file_name(written, f), f.bytes);
        ++written;
      },
      /*flip_stride=*/8, /*truncate_stride=*/12);
  if (!ok) {
    std::fprintf(stderr, "snapshot_corpus: cannot write to %s\n", dir.c_str());
    return 1;
  }
  std::printf("%d\n", written);
  return 0;
}
