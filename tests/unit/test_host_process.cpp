// The host process's basics (src/jail/host_process.cpp), in a forked child.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "child_process.hpp"
#include "jail/host_process.hpp"

namespace kvms::jail {
namespace {

TEST(HostProcess, Hardened) {
  test::ChildResult r = test::run_in_child([] {
    try {
      harden_host_process(1000);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
    rlimit files{}, core{};
    getrlimit(RLIMIT_NOFILE, &files);
    getrlimit(RLIMIT_CORE, &core);
    if (files.rlim_cur != 1000 || files.rlim_max != 1000) return 2;
    if (core.rlim_cur != 0 || core.rlim_max != 0) return 3;
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return 4;
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) return 5;
    // A bound above the hard limit stays at the hard limit.
    harden_host_process(1u << 30);
    getrlimit(RLIMIT_NOFILE, &files);
    return files.rlim_cur == 1000 && files.rlim_max == 1000 ? 0 : 6;
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
}

TEST(HostProcess, OpenFilesCoverTheGuestCaps) {
  const linux::Limits caps;
  // The template and one worker, each a tree of --max-processes full fd tables.
  EXPECT_GT(open_files_limit(1, caps), 2 * caps.processes * caps.fds);
  EXPECT_GT(open_files_limit(8, caps), open_files_limit(1, caps));
  EXPECT_EQ(open_files_limit(3, caps) - open_files_limit(2, caps), open_files_limit(2, caps) - open_files_limit(1, caps));
  linux::Limits fewer = caps;
  fewer.processes = 4;
  fewer.fds = 64;
  EXPECT_LT(open_files_limit(2, fewer), open_files_limit(2, caps));
}

}  // namespace
}  // namespace kvms::jail
