// `kvmserver doctor` (src/cli/doctor.cpp): its command line, and a real run on this machine, whatever
// it offers: every section is printed, and the last line agrees with the exit status and with the
// start-up check's own verdict (kvm/probe.hpp) on the same machine.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "child_process.hpp"
#include "cli/doctor.hpp"
#include "cli/options.hpp"
#include "kvm/probe.hpp"

namespace kvms::cli {
namespace {

TEST(Doctor, CommandLine) {
  EXPECT_EQ(parse_options({"kvmserver", "doctor"}, "/").command, Command::Doctor);
  try {
    parse_options({"kvmserver", "doctor", "--verbose"}, "/");
    ADD_FAILURE() << "doctor took an argument";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("doctor takes no arguments"), std::string::npos) << e.what();
  }
}

TEST(Doctor, ReportsThisMachine) {
  const auto r = test::run_in_child([] {
    dup2(STDERR_FILENO, STDOUT_FILENO);  // the report, where run_in_child collects it
    return run_doctor();
  });
  const std::string& out = r.stderr_text;
  for (const char* section : {"doctor: what this host offers", "KVM kind", "hugepages", "open files", "namespaces", "seccomp"})
    EXPECT_NE(out.find(section), std::string::npos) << section << " missing from:\n" << out;
  const bool kvm_works = kvm::verdict(kvm::examine_host(false)).empty();
  if (r.exited(0)) {
    EXPECT_NE(out.find("kvmserver can run here."), std::string::npos) << out;
    EXPECT_TRUE(kvm_works) << out;
  } else {
    EXPECT_TRUE(r.exited(1)) << r.describe();
    EXPECT_NE(out.find("kvmserver cannot run here"), std::string::npos) << out;
    EXPECT_NE(out.find("remedy: "), std::string::npos) << out;
  }
  if (!kvm_works) EXPECT_TRUE(r.exited(1)) << "KVM does not work here, yet doctor says: " << out;
}

}  // namespace
}  // namespace kvms::cli
