#pragma once
// Runs a function in a forked child (the seccomp and jail tests change the process for good) and
// returns how it ended and what it wrote on stderr.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

namespace kvms::test {

struct ChildResult {
  int status = 0;      // as waitpid reports it
  std::string stderr_text;
  bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  bool killed_by(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
  std::string describe() const {
    std::string s = WIFEXITED(status)     ? "exit " + std::to_string(WEXITSTATUS(status))
                    : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                          : "status " + std::to_string(status);
    return s + ", stderr: " + stderr_text;
  }
};

// body's return value is the child's exit status. `started(pid)`, when given, runs in the parent
// while the child runs (e.g. to signal it).
inline ChildResult run_in_child(const std::function<int()>& body,
                                const std::function<void(pid_t)>& started = nullptr) {
  int err[2];
  if (pipe2(err, O_CLOEXEC) != 0) return {-1, "pipe failed"};
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(err[1], STDERR_FILENO);
    _exit(body());
  }
  close(err[1]);
  if (started) started(pid);
  ChildResult r;
  char buf[1024];
  ssize_t n;
  while ((n = read(err[0], buf, sizeof buf)) > 0) r.stderr_text.append(buf, static_cast<size_t>(n));
  close(err[0]);
  waitpid(pid, &r.status, 0);
  return r;
}

}  // namespace kvms::test
