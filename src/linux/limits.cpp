#include "linux/limits.hpp"

namespace kvms::linux {

ResourceAccount::ResourceAccount(const Limits& limits) : limits_(limits) {
  limit_[kMemory] = limits.memory;
  limit_[kProcesses] = limits.processes;
  limit_[kTmpBytes] = limits.tmp_bytes;
  limit_[kEpollWatches] = limits.epoll_watches;
  limit_[kTimers] = limits.timers;
}

void ResourceAccount::note_peak(Resource r, uint64_t now) {
  uint64_t seen = peak_[r].load(std::memory_order_relaxed);
  while (now > seen && !peak_[r].compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

bool ResourceAccount::charge(Resource r, uint64_t n) {
  uint64_t now = used_[r].load(std::memory_order_relaxed);
  do {
    if (n > limit_[r] || now > limit_[r] - n) {
      refused_[r].fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!used_[r].compare_exchange_weak(now, now + n, std::memory_order_relaxed));
  note_peak(r, now + n);
  return true;
}

void ResourceAccount::charge_unchecked(Resource r, uint64_t n) {
  note_peak(r, used_[r].fetch_add(n, std::memory_order_relaxed) + n);
}

void ResourceAccount::release(Resource r, uint64_t n) { used_[r].fetch_sub(n, std::memory_order_relaxed); }

bool ResourceAccount::first_refusal(Resource r) {
  return refused_[r].load(std::memory_order_relaxed) > 0 && !logged_[r].exchange(true);
}

void ResourceAccount::set_limit(Resource r, uint64_t limit, std::string described_by) {
  limit_[r] = limit;
  described_by_[r] = std::move(described_by);
}

std::string ResourceAccount::describe_limit(Resource r) const {
  if (!described_by_[r].empty()) return described_by_[r];
  const bool megabytes = r == kMemory || r == kTmpBytes;
  return std::string(flag(r)) + "=" + std::to_string(limit_[r] >> (megabytes ? 20 : 0));
}

const char* ResourceAccount::flag(Resource r) {
  switch (r) {
    case kMemory: return "--max-memory";
    case kProcesses: return "--max-processes";
    case kTmpBytes: return "--max-tmp-size";
    case kEpollWatches: return "--max-epoll-watches";
    case kTimers: return "--max-timers";
    default: return "?";
  }
}

bool ResourceAccount::reserve_tmp(uint64_t n) {
  if (!charge(kTmpBytes, n)) return false;
  if (charge(kMemory, n)) return true;
  release(kTmpBytes, n);
  return false;
}

void ResourceAccount::release_tmp(uint64_t n) {
  release(kTmpBytes, n);
  release(kMemory, n);
}

void ResourceAccount::set_tmp_file(uint64_t inode, uint64_t bytes) {
  std::lock_guard<std::mutex> lk(tmp_mutex_);
  uint64_t& held = tmp_files_[inode];
  if (bytes > held) {
    charge_unchecked(kTmpBytes, bytes - held);
    charge_unchecked(kMemory, bytes - held);
  } else {
    release_tmp(held - bytes);
  }
  held = bytes;
}

void ResourceAccount::forget_tmp_file(uint64_t inode) {
  std::lock_guard<std::mutex> lk(tmp_mutex_);
  auto it = tmp_files_.find(inode);
  if (it == tmp_files_.end()) return;
  release_tmp(it->second);
  tmp_files_.erase(it);
}

Charge& Charge::operator=(const Charge& other) {
  if (this != &other) {
    reset();
    account_ = other.account_;
    resource_ = other.resource_;
  }
  return *this;
}

Charge::Charge(Charge&& other) noexcept
    : account_(std::move(other.account_)), resource_(other.resource_), amount_(other.amount_) {
  other.amount_ = 0;
}

Charge& Charge::operator=(Charge&& other) noexcept {
  if (this != &other) {
    reset();
    account_ = std::move(other.account_);
    resource_ = other.resource_;
    amount_ = other.amount_;
    other.amount_ = 0;
  }
  return *this;
}

bool Charge::grow(uint64_t n) {
  if (!account_) return false;
  if (n == 0) return true;
  if (!account_->charge(resource_, n)) return false;
  amount_ += n;
  return true;
}

void Charge::set_unchecked(uint64_t amount) {
  if (!account_) return;
  if (amount > amount_)
    account_->charge_unchecked(resource_, amount - amount_);
  else if (amount < amount_)
    account_->release(resource_, amount_ - amount);
  amount_ = amount;
}

void Charge::reset() {
  if (account_ && amount_) account_->release(resource_, amount_);
  amount_ = 0;
}

}  // namespace kvms::linux
