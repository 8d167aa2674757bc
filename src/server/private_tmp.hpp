#pragma once
// In ephemeral mode the guest's /tmp (when it may write there) is a private host directory: one for
// the template, and one per worker that every reset empties and refills from the template's, so a
// request's files are gone with the request like its memory.
#include <string>

#include "linux/policy.hpp"

namespace kvms::server {

class PrivateDir {
 public:
  PrivateDir();   // a new empty directory under the host's temporary directory
  ~PrivateDir();  // removed with its contents
  PrivateDir(const PrivateDir&) = delete;
  PrivateDir& operator=(const PrivateDir&) = delete;
  const std::string& path() const { return path_; }
  // Makes this directory's contents an exact copy of `source`'s.
  void reset_from(const PrivateDir& source);

 private:
  std::string path_;
};

// Whether the policy would let the guest write to /tmp.
bool guest_may_write_tmp(const linux::PathPolicy& policy);
// `base` with the guest's /tmp backed by host directory `dir`.
linux::PolicyConfig with_private_tmp(linux::PolicyConfig base, const std::string& dir);

}  // namespace kvms::server
