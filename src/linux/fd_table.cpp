#include "linux/fd_table.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace kvms::linux {

OpenFile::OpenFile(int fd, Kind k, std::string p, int flags) : host_fd(fd), kind(k), path(std::move(p)), status_flags(flags) {}

OpenFile::~OpenFile() {
  if (host_fd >= 0) ::close(host_fd);
}

void FdTable::put(size_t fd, Slot slot) {
  if (slots_[fd].file) --open_;
  if (slot.file) ++open_;
  slots_[fd] = std::move(slot);
}

int FdTable::install(std::shared_ptr<OpenFile> file, bool cloexec, int min_fd) {
  if (min_fd < 0 || min_fd >= limit_) return -EINVAL;
  for (size_t fd = min_fd; fd < static_cast<size_t>(limit_); ++fd) {
    if (fd >= slots_.size()) slots_.resize(fd + 1);
    if (!slots_[fd].file) {
      put(fd, {std::move(file), cloexec});
      return static_cast<int>(fd);
    }
  }
  return -EMFILE;
}

int FdTable::install_at(int fd, std::shared_ptr<OpenFile> file, bool cloexec) {
  if (fd < 0 || fd >= limit_) return -EBADF;
  if (static_cast<size_t>(fd) >= slots_.size()) slots_.resize(fd + 1);
  put(fd, {std::move(file), cloexec});
  return fd;
}

std::shared_ptr<OpenFile> FdTable::get(int fd) const {
  if (fd < 0 || static_cast<size_t>(fd) >= slots_.size()) return nullptr;
  return slots_[fd].file;
}

int FdTable::close(int fd) {
  if (!get(fd)) return -EBADF;
  put(fd, {});
  return 0;
}

void FdTable::close_range(unsigned first, unsigned last, bool cloexec_only_mark) {
  for (size_t fd = first; fd < slots_.size() && fd <= last; ++fd) {
    if (!slots_[fd].file) continue;
    if (cloexec_only_mark)
      slots_[fd].cloexec = true;
    else
      put(fd, {});
  }
}

void FdTable::close_on_exec() {
  for (size_t fd = 0; fd < slots_.size(); ++fd)
    if (slots_[fd].file && slots_[fd].cloexec) put(fd, {});
}

bool FdTable::cloexec(int fd) const { return get(fd) && slots_[fd].cloexec; }

int FdTable::set_cloexec(int fd, bool on) {
  if (!get(fd)) return -EBADF;
  slots_[fd].cloexec = on;
  return 0;
}

std::vector<int> FdTable::fds() const {
  std::vector<int> out;
  for (size_t fd = 0; fd < slots_.size(); ++fd)
    if (slots_[fd].file) out.push_back(static_cast<int>(fd));
  return out;
}

OpenFile::Kind kind_of(int host_fd) {
  struct stat st{};
  if (fstat(host_fd, &st) != 0) return OpenFile::Kind::Other;
  if (S_ISREG(st.st_mode)) return OpenFile::Kind::Regular;
  if (S_ISDIR(st.st_mode)) return OpenFile::Kind::Directory;
  if (S_ISFIFO(st.st_mode)) return OpenFile::Kind::Pipe;
  if (S_ISSOCK(st.st_mode)) return OpenFile::Kind::Socket;
  if (S_ISCHR(st.st_mode)) return isatty(host_fd) ? OpenFile::Kind::Tty : OpenFile::Kind::CharDevice;
  return OpenFile::Kind::Other;
}

std::shared_ptr<OpenFile> inherit_host_fd(int host_fd, std::string name) {
  int fd = fcntl(host_fd, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return nullptr;
  int flags = fcntl(fd, F_GETFL);
  return std::make_shared<OpenFile>(fd, kind_of(fd), std::move(name), flags < 0 ? O_RDWR : flags);
}

}  // namespace kvms::linux
