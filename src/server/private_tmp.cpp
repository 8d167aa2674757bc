#include "server/private_tmp.hpp"

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <variant>

namespace kvms::server {

namespace fs = std::filesystem;

PrivateDir::PrivateDir() {
  std::string pattern = (fs::temp_directory_path() / "kvmserver-tmp-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error(std::string("cannot create a private /tmp: ") + strerror(errno));
  path_ = pattern;
}

PrivateDir::~PrivateDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

void PrivateDir::reset_from(const PrivateDir& source) {
  for (const auto& entry : fs::directory_iterator(path_)) fs::remove_all(entry.path());
  for (const auto& entry : fs::directory_iterator(source.path_))
    fs::copy(entry.path(), fs::path(path_) / entry.path().filename(), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
}

bool guest_may_write_tmp(const linux::PathPolicy& policy) {
  auto r = policy.resolve("/tmp", linux::Access::Write);
  return std::holds_alternative<linux::PathPolicy::Resolved>(r) && std::get<linux::PathPolicy::Resolved>(r).writable;
}

linux::PolicyConfig with_private_tmp(linux::PolicyConfig base, const std::string& dir) {
  base.volumes.push_back({dir, "/tmp", true});
  return base;
}

}  // namespace kvms::server
