#!/bin/bash
# Runs inside the nested machine's root (the host root, read-only) as
# /run/with-kvm/run.sh: restores the caller's environment, working directory
# and argv (NUL-separated files written by tools/with-kvm) and execs the command.
d=/run/with-kvm
mapfile -d '' envs <"$d/env" || exit 125
mapfile -d '' argv <"$d/argv" || exit 125
cwd=$(<"$d/cwd")
rm -rf "$d"
cd -- "$cwd" || { echo "with-kvm: cannot enter $cwd in the nested machine" >&2; exit 125; }
exec /usr/bin/env -i "${envs[@]}" WITH_KVM_MACHINE=nested "${argv[@]}"
