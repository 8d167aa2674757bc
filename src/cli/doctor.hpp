#pragma once
// `kvmserver doctor`: prints what this host offers kvmserver (KVM kind and version, the CPU features
// the guest will see, hugepages, limits, namespaces, seccomp) with the remedy for each missing
// piece, and whether kvmserver can run here. Returns the exit status: 0 when it can, 1 when not.
namespace kvms::cli {
int run_doctor();
}
