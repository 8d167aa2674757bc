#pragma once
// Host objects behind the guest's epoll, eventfd and timerfd descriptors, copied for a worker.
//
// OpenFile objects may be shared between a template process and its workers (a worker's fd table is
// a copy of the template's), so these never modify the OpenFile they are given: each returns a NEW
// OpenFile over a new host object, which the caller installs in the worker's fd table in place of
// the shared one. All return nullptr when the host refuses to create the object.
#include <memory>
#include <optional>
#include <string>

#include "linux/process.hpp"

namespace kvms::linux {

// A new host epoll whose interest list is the guest's (epoll.epoll_interest) registered again over
// the host fds that p.fds holds now. Entries whose guest fd is no longer open (or that the host
// refuses) are dropped. Nested epolls are registered by the host fd p.fds holds for them, so clone
// inner epolls (and install them) before the outer ones. Listening sockets are registered like any
// other fd: hiding them is the caller's business.
std::shared_ptr<OpenFile> clone_epoll(Process& p, const OpenFile& epoll);

// /proc/self/fdinfo/<host_fd>, read once: every reset clones the template's eventfds and timerfds
// by what it says, so one open and read serves all the fields asked.
class FdInfo {
 public:
  explicit FdInfo(int host_fd);
  // The value after "key:", or nullopt (eventfd-count, clockid, ticks...).
  std::optional<std::string> field(const char* key) const;

 private:
  std::string text_;
};

// A new eventfd with the same counter (read without consuming it, from /proc/self/fdinfo), the same
// EFD_SEMAPHORE mode and the same O_NONBLOCK.
std::shared_ptr<OpenFile> clone_eventfd(const OpenFile& eventfd);

// A new timerfd on the same clock, armed with the same remaining time and interval (relative), with
// the unread expirations carried over and the same O_NONBLOCK; for a template's timerfd, from the
// setting it had when the template paused (record_paused_timerfd).
std::shared_ptr<OpenFile> clone_timerfd(const OpenFile& timerfd);
void record_paused_timerfd(OpenFile& timerfd);
// The host state of a template's eventfd that clone_eventfd reads (count, mode, O_NONBLOCK), kept in
// eventfd.paused_file; for a timerfd its O_NONBLOCK.
void record_paused_eventfd(OpenFile& eventfd);

// For close/dup2 (file.cpp): guest_fd is about to be closed. When no other guest fd refers to the
// same OpenFile, the fd leaves every epoll interest list in p.fds and its host epoll, as Linux does
// when the last reference to a file goes (this matters when the OpenFile, and so its host fd, lives
// on in a template process). Optional: epoll_ctl also copes with stale entries.
void epoll_forget_fd(Process& p, int guest_fd);

}  // namespace kvms::linux
