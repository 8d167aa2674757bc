#pragma once
// Socket control messages and credentials between the guest and the host (socket_control.cpp), and
// the socket ioctls (socket_ioctl.cpp). Used by socket.cpp's handlers and file.cpp's ioctl.
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "linux/process.hpp"

namespace kvms::linux {

// Credentials a guest attaches with SCM_CREDENTIALS, checked as Linux checks an unprivileged
// process's (scm_check_creds: uid or gid -1 is EINVAL; another process's pid, or ids not its own,
// EPERM), then made the host's: on success `host` holds kvmserver's own ids, which the host kernel
// accepts from us.
int creds_to_host(const Process& p, const ucred& guest, ucred& host);

// Credentials the host kernel reports (SCM_CREDENTIALS received, SO_PEERCRED), as the guest sees
// them. `self_pid` is the guest pid to show for kvmserver's own host process (see the .cpp).
ucred creds_to_guest(const Process& p, const ucred& host, int self_pid);

// The guest on the other end of a Unix connection between two guests of this kvmserver, which the
// host cannot tell apart (socket_control.cpp). Listeners are known by a key: unix_file_key of the
// socket file for a path, unix_abstract_key for an abstract name.
std::string unix_file_key(const struct stat& st);
std::string unix_abstract_key(const char* name, size_t len);
void unix_listener_bound(const std::string& key, const std::shared_ptr<OpenFile>& f);
// Before a guest's connect() to `key`: the guest's listener there, if any (which then counts the
// connection as pending); after it, unix_connected says how it went.
std::shared_ptr<OpenFile> unix_connecting(const Process& p, const std::string& key);
void unix_connected(const Process& p, OpenFile& client, OpenFile& listener, bool ok);
// After accept() on a guest's listener of a connection from kvmserver itself: the guest that
// connected (0: not known).
int unix_accepted(OpenFile& listener);

// Guest control messages -> host (sendmsg): SCM_RIGHTS guest fds become host fds (kept open by
// `files`); SCM_CREDENTIALS are checked and translated on a Unix socket (`unix_socket`) and left
// out on others (which ignore them, as Linux does); the rest goes as it is. 0 or -errno.
int64_t control_to_host(Process& p, const std::vector<uint8_t>& in, bool unix_socket, std::vector<uint8_t>& out,
                        std::vector<std::shared_ptr<OpenFile>>& files);

// Host control messages -> guest (recvmsg), rewritten in place in `buf` (the `size` bytes the host
// kernel wrote into a buffer as large as the guest's, so its truncation is the guest's too):
// received fds become guest fds (a full table ends the list with MSG_CTRUNC, like the kernel),
// credentials become the guest's (`self_pid`: creds_to_guest), pidfds are closed and left out.
// Returns the guest's msg_controllen.
size_t control_to_guest(Process& p, uint8_t* buf, size_t size, bool cloexec, int self_pid, bool& truncated);

// A host fd received with SCM_RIGHTS, as a guest file.
std::shared_ptr<OpenFile> adopt_host_fd(int host_fd);

// ioctl(2) on a socket for the commands sockets answer (SIOCGSTAMP, SIOCOUTQ, the netdevice
// ioctls...): the result or -errno, or nullopt for a command that is not a socket's (file.cpp's
// generic handling goes on).
std::optional<int64_t> socket_ioctl(Process& p, OpenFile& f, uint32_t cmd, uint64_t arg);
// The requests socket_ioctl passes to host sockets (kvmserver's seccomp filter allows them).
std::vector<uint32_t> socket_ioctls_forwarded();

}  // namespace kvms::linux
