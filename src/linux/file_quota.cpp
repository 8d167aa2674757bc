#include "linux/file_quota.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kvm/layout.hpp"

namespace kvms::linux {

namespace fileops {
bool is_memfd(const OpenFile& f);  // memfd.cpp
}  // namespace fileops

namespace {

using kvm::kPageSize;

// A name in a private /tmp costs at least a page, whatever it holds: the host spends an inode on
// it, and a guest creating empty files by the million must run out of room too.
uint64_t tmp_bytes_of(const struct stat& st) { return std::max<uint64_t>(uint64_t(st.st_blocks) * 512, kPageSize); }

// What a write of n bytes may allocate: its pages, and one more where it straddles a page boundary.
uint64_t allocation_for(uint64_t n) { return kvm::page_up(n) + kPageSize; }

}  // namespace

bool in_private_tmp(const Process& p, const std::string& guest_path) {
  return p.has_private_tmp && guest_path.size() > 5 && guest_path.compare(0, 5, "/tmp/") == 0;
}

WriteQuota::WriteQuota(Process& p, OpenFile& f, uint64_t& len) : p_(p) {
  if (f.kind != OpenFile::Kind::Regular) return;
  if (in_private_tmp(p, f.path))
    kind_ = Kind::TmpFile;
  else if (fileops::is_memfd(f))
    kind_ = Kind::Memfd;
  else
    return;
  file_ = &f;
  if (len == 0) return;  // nothing to reserve; what the file holds is still settled (ftruncate)
  ResourceAccount& account = p.account();
  auto reserve = [&](uint64_t n) {
    return kind_ == Kind::Memfd ? account.charge(ResourceAccount::kMemory, n) : account.reserve_tmp(n);
  };
  if (!reserve(allocation_for(len))) {
    // As much as still fits: a short write.
    auto left = [&](ResourceAccount::Resource r) {
      return account.used(r) < account.limit(r) ? account.limit(r) - account.used(r) : 0;
    };
    uint64_t room = left(ResourceAccount::kMemory);
    if (kind_ == Kind::TmpFile) room = std::min(room, left(ResourceAccount::kTmpBytes));
    const uint64_t fits = room > 2 * kPageSize ? kvm::page_down(room - 2 * kPageSize) : 0;
    const bool tmp_full = kind_ == Kind::TmpFile && left(ResourceAccount::kTmpBytes) <= left(ResourceAccount::kMemory);
    const auto limit = tmp_full ? ResourceAccount::kTmpBytes : ResourceAccount::kMemory;
    if (fits == 0 || !reserve(allocation_for(fits))) {
      p.log_refusal(limit, std::string("write to ") + f.path + ": ENOSPC");
      error_ = -ENOSPC;
      kind_ = Kind::None;
      return;
    }
    p.log_refusal(limit, std::string("write to ") + f.path + ": cut short");
    len = std::min(len, fits);
  }
  reserved_ = allocation_for(len);
}

WriteQuota::WriteQuota(Process& p, const std::string& path) : p_(p) {
  if (!in_private_tmp(p, path)) return;
  if (!p.account().reserve_tmp(kPageSize)) {
    const ResourceAccount& a = p.account();
    const bool tmp_full = a.used(ResourceAccount::kTmpBytes) + kPageSize > a.limit(ResourceAccount::kTmpBytes);
    p.log_refusal(tmp_full ? ResourceAccount::kTmpBytes : ResourceAccount::kMemory, "create " + path + ": ENOSPC");
    error_ = -ENOSPC;
    return;
  }
  kind_ = Kind::TmpName;
  reserved_ = kPageSize;
}

void WriteQuota::created(int host_fd) {
  struct stat st{};
  if (kind_ == Kind::TmpName && ::fstat(host_fd, &st) == 0) p_.account().set_tmp_file(st.st_ino, tmp_bytes_of(st));
}

void WriteQuota::created_at(const std::string& host_path) {
  struct stat st{};
  if (kind_ == Kind::TmpName && ::lstat(host_path.c_str(), &st) == 0) p_.account().set_tmp_file(st.st_ino, tmp_bytes_of(st));
}

WriteQuota::~WriteQuota() {
  ResourceAccount& account = p_.account();
  struct stat st{};
  switch (kind_) {
    case Kind::None:
      return;
    case Kind::Memfd:
      if (::fstat(file_->host_fd, &st) == 0) {
        if (!file_->memory_charge) file_->memory_charge = Charge(p_.shared_account(), ResourceAccount::kMemory);
        file_->memory_charge.set_unchecked(uint64_t(st.st_blocks) * 512);
      }
      account.release(ResourceAccount::kMemory, reserved_);
      return;
    case Kind::TmpFile:
      if (::fstat(file_->host_fd, &st) == 0 && st.st_nlink > 0) account.set_tmp_file(st.st_ino, tmp_bytes_of(st));
      account.release_tmp(reserved_);
      return;
    case Kind::TmpName:
      account.release_tmp(reserved_);
      return;
  }
}

int charge_open_file(Process& p, OpenFile& f, uint64_t bytes, int errno_if_refused, const char* what) {
  if (!f.memory_charge) f.memory_charge = Charge(p.shared_account(), ResourceAccount::kMemory);
  if (bytes <= f.memory_charge.amount()) {
    f.memory_charge.set_unchecked(bytes);
    return 0;
  }
  if (f.memory_charge.grow(bytes - f.memory_charge.amount())) return 0;
  p.log_refusal(ResourceAccount::kMemory, std::string(what) + ": " + strerrorname_np(errno_if_refused));
  return -errno_if_refused;
}

void tmp_file_changed(Process& p, const std::string& guest_path, int host_fd) {
  struct stat st{};
  if (in_private_tmp(p, guest_path) && ::fstat(host_fd, &st) == 0) p.account().set_tmp_file(st.st_ino, tmp_bytes_of(st));
}

uint64_t tmp_inode_removed_by(const Process& p, const std::string& guest_path, const std::string& host_path) {
  struct stat st{};
  if (!in_private_tmp(p, guest_path) || ::lstat(host_path.c_str(), &st) != 0) return 0;
  return S_ISDIR(st.st_mode) || st.st_nlink <= 1 ? st.st_ino : 0;
}

void forget_removed(Process& p, uint64_t inode) {
  if (inode) p.account().forget_tmp_file(inode);
}

}  // namespace kvms::linux
