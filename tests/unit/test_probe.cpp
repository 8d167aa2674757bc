// The start-up check's decisions (src/kvm/probe.cpp): every outcome from facts given here, so the
// machines that show them (kvm_pvm, no permission...) need not be at hand; and examine_host() on
// devices that are not KVM, which needs no KVM either.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "kvm/probe.hpp"

namespace kvms::kvm {
namespace {

using Probe = HostFacts::Probe;

// Facts of a machine where everything works.
HostFacts working() {
  HostFacts f;
  f.probe = Probe::ReachedRing0;
  return f;
}

void expect_line(const std::string& v, const std::string& part) {
  EXPECT_NE(v, "");
  EXPECT_NE(v.find(part), std::string::npos) << v;
  EXPECT_EQ(v.find('\n'), std::string::npos) << v;
}

TEST(HostCheck, WorkingMachinePasses) {
  EXPECT_EQ(verdict(working()), "");
  // Only the probe decides: a kvm_pvm module (or no vmx/svm flag) whose KVM does run the guest is fine.
  HostFacts pvm = working();
  pvm.pvm_module = true;
  pvm.hardware_virtualization = false;
  EXPECT_EQ(verdict(pvm), "");
}

TEST(HostCheck, MissingDevice) {
  HostFacts f;
  f.open_errno = ENOENT;
  f.exists = false;
  expect_line(verdict(f), "/dev/kvm does not exist; load the KVM module");
  f.hardware_virtualization = false;
  expect_line(verdict(f), "/dev/kvm does not exist and this CPU shows no hardware virtualization");
  expect_line(verdict(f), "nested virtualization enabled");
}

TEST(HostCheck, PermissionNamesTheGroup) {
  HostFacts f;
  f.open_errno = EACCES;
  f.mode = 020660;
  f.owner = "root";
  f.group = "kvm";
  expect_line(verdict(f), "cannot open /dev/kvm: permission denied; add yourself to the kvm group (sudo usermod -aG kvm");
  f.mode = 020600;  // the group may not open it either
  expect_line(verdict(f), "permission denied (mode 0600, owner root:kvm); ask an administrator");
  f.mode = 020660;
  f.group = "root";
  expect_line(verdict(f), "ask an administrator");
  f.open_errno = EPERM;
  expect_line(verdict(f), "permission denied");
}

TEST(HostCheck, NotAKvmDevice) {
  HostFacts f;
  f.api_version = -1;
  f.api_errno = ENOTTY;
  expect_line(verdict(f), "/dev/kvm is not a KVM device (KVM_GET_API_VERSION: Inappropriate ioctl for device)");
  HostFacts file;
  file.char_device = false;
  expect_line(verdict(file), "/dev/kvm is not a KVM device (not a character device)");
  HostFacts old;
  old.api_version = 11;
  expect_line(verdict(old), "KVM API version 11, kvmserver needs 12");
  HostFacts other;
  other.open_errno = ENXIO;
  expect_line(verdict(other), "cannot open /dev/kvm: No such device or address");
}

TEST(HostCheck, MissingCapabilitiesAreListed) {
  HostFacts f;
  f.missing_capabilities = {"KVM_CAP_XSAVE (FPU and vector registers)", "KVM_CAP_DIRTY_LOG_RING (resetting server workers)"};
  expect_line(verdict(f), "lacks what kvmserver needs: KVM_CAP_XSAVE (FPU and vector registers), KVM_CAP_DIRTY_LOG_RING");
  // The list kvmserver checks names what the code relies on.
  std::string names;
  for (const auto& c : required_capabilities()) names += std::string(c.name) + " ";
  for (const char* cap : {"KVM_CAP_USER_MEMORY", "KVM_CAP_SYNC_REGS", "KVM_CAP_IMMEDIATE_EXIT", "KVM_CAP_XSAVE",
                          "KVM_CAP_XCRS", "KVM_CAP_EXT_CPUID", "KVM_CAP_GET_TSC_KHZ"})
    EXPECT_NE(names.find(cap), std::string::npos) << cap;
  EXPECT_STREQ(dirty_ring_capability().name, "KVM_CAP_DIRTY_LOG_RING");
}

// The machines of the design notes: /dev/kvm from kvm_pvm, whose ring-3 syscall faults at LSTAR.
TEST(HostCheck, RingThreeSyscallThatStaysInRingThree) {
  HostFacts pvm = working();
  pvm.probe = Probe::StayedInRing3;
  pvm.probe_detail = "page fault at rip 0xffffff8000002000 in ring 3";
  pvm.pvm_module = true;
  pvm.hardware_virtualization = false;
  const std::string v = verdict(pvm);
  expect_line(v, "/dev/kvm is provided by kvm_pvm, which cannot run kvmserver's guest (a ring-3 syscall does not "
                 "reach ring 0: page fault at rip 0xffffff8000002000 in ring 3); use a machine with hardware "
                 "virtualization (vmx/svm) or nested virtualization enabled");
  HostFacts unknown = pvm;
  unknown.pvm_module = false;  // some other KVM without vmx/svm
  expect_line(verdict(unknown), "without hardware virtualization (no vmx/svm CPU flag)");
  HostFacts odd = unknown;
  odd.hardware_virtualization = true;
  expect_line(verdict(odd), "KVM on this machine cannot run kvmserver's guest (a ring-3 syscall does not reach ring 0");
  HostFacts failed = working();
  failed.probe = Probe::Failed;
  failed.probe_detail = "KVM_CREATE_VM: Cannot allocate memory";
  expect_line(verdict(failed), "the start-up probe guest failed: KVM_CREATE_VM: Cannot allocate memory");
}

// examine_host() on paths that are not KVM devices (no KVM needed): it stops before any probe.
TEST(HostCheck, ExamineDevicesThatAreNotKvm) {
  const std::string missing = "/nonexistent-kvms-dir/kvm";
  HostFacts none = examine_host(false, missing);
  EXPECT_EQ(none.open_errno, ENOENT);
  EXPECT_EQ(none.probe, Probe::NotRun);
  expect_line(verdict(none), missing + " does not exist");

  HostFacts null = examine_host(false, "/dev/null");
  EXPECT_EQ(null.api_version, -1);
  EXPECT_EQ(null.probe, Probe::NotRun);
  expect_line(verdict(null), "/dev/null is not a KVM device (KVM_GET_API_VERSION: ");

  char tmpl[] = "/tmp/kvms-probe-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ::close(fd);
  HostFacts file = examine_host(false, tmpl);
  EXPECT_FALSE(file.char_device);
  expect_line(verdict(file), std::string(tmpl) + " is not a KVM device (not a character device)");
  if (::geteuid() != 0) {  // root opens anything
    ::chmod(tmpl, 0);
    HostFacts denied = examine_host(false, tmpl);
    EXPECT_EQ(denied.open_errno, EACCES);
    expect_line(verdict(denied), "permission denied (mode 0000");
  }
  ::unlink(tmpl);

  if (::access("/dev/kvm", F_OK) != 0)  // this machine (no KVM): what kvmserver says here
    expect_line(verdict(examine_host(false)), "/dev/kvm does not exist");
}

}  // namespace
}  // namespace kvms::kvm
