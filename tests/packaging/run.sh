#!/usr/bin/env bash
# Checks kvmserver's packaging without KVM (issue 14): builds the Debian package from BUILD_DIR
# (a configured build tree: `cmake --build` of the package files, then cpack), checks its control
# fields and contents, unpacks it into a temporary root and runs --version and --help from there,
# renders the man page, loads the bash completion, parses the example configs, runs lintian and
# `systemd-analyze verify` on the units, and validates the Kubernetes manifests and the compose
# file against their schemas (tests/packaging/validate-manifests.mjs; the validators come from npm
# through fetch-validators.sh into .cache/). Each check that can pass a broken file by accident is
# also shown a broken copy, which must fail. Prints one line per check and how long it took.
#
#   tests/packaging/run.sh BUILD_DIR
# KVMS_PACKAGING_PODMAN_BASE=IMAGE also builds packaging/container/Containerfile FROM that image
# with podman and runs `kvmserver --version` in it (off by default: it needs a Debian 12 image and
# the network for apt; packaging/README.md says how it was done here).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
build=$(realpath "${1:?usage: tests/packaging/run.sh BUILD_DIR}")
t0=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

# check NAME COMMAND...: one line, and COMMAND's output when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    printf '%s\n' "$out" | head -n 40 | sed 's/^/     /'
  fi
}
# must_fail NAME COMMAND...: the check itself is shown a broken input and must refuse it.
must_fail() {
  local name=$1
  shift
  check "$name (refuses a broken copy)" bash -c '! "$@"' _ "$@"
}

# ---- The package ---------------------------------------------------------------------------------
build_package() {
  cmake --build "$build" --target kvmserver_package_files >/dev/null &&
    (cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >/dev/null) &&
    ls "$work"/out/kvmserver_*_amd64.deb
}
check "cpack -G DEB" build_package
deb=$(ls "$work"/out/kvmserver_*_amd64.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
  echo "packaging: took $(($(date +%s) - t0)) s"
  echo "packaging: $passed passed, $((failed + 1)) failed"
  exit 1
fi
root=$work/root
dpkg-deb -x "$deb" "$root"
# `cmake --install` with another prefix installs the same files as the package, under that prefix.
same_files_as_package() {
  cmake --install "$build" --prefix "$work/local" >/dev/null &&
    diff <(cd "$root/usr" && find . -type f | sort) <(cd "$work/local" && find . -type f | sort)
}
check "cmake --install --prefix installs what the package holds" same_files_as_package
kvmserver=$root/usr/bin/kvmserver

control_fields() {
  local f
  [ "$(dpkg-deb -f "$deb" Package)" = kvmserver ] || { echo "Package: $(dpkg-deb -f "$deb" Package)"; return 1; }
  [ "$(dpkg-deb -f "$deb" Section)" = admin ] || { echo "Section: $(dpkg-deb -f "$deb" Section)"; return 1; }
  for f in Version Maintainer Description; do
    [ -n "$(dpkg-deb -f "$deb" "$f")" ] || { echo "no $f"; return 1; }
  done
  # dpkg-shlibdeps ran: the libraries kvmserver links are there, with versions.
  dpkg-deb -f "$deb" Depends | grep -qE 'libc6 \(>= [0-9.]+\)' ||
    { echo "Depends: $(dpkg-deb -f "$deb" Depends)"; return 1; }
}
check "control fields (Depends from dpkg-shlibdeps)" control_fields
# Against this machine's package lists and what is installed: Depends can be satisfied.
check "Depends resolvable (apt-get --simulate install)" apt-get install --simulate -q "$deb"

contents() {
  local listing path
  listing=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for path in ./usr/bin/kvmserver ./usr/share/man/man1/kvmserver.1.gz \
    ./usr/share/bash-completion/completions/kvmserver ./usr/share/doc/kvmserver/README.md \
    ./usr/share/doc/kvmserver/README.packaging.md ./usr/share/doc/kvmserver/changelog.gz \
    ./usr/share/doc/kvmserver/examples/hello.toml ./usr/share/doc/kvmserver/examples/hello.env \
    ./usr/lib/systemd/system/kvmserver@.service ./usr/lib/systemd/system/kvmserver@.socket; do
    grep -qxF "$path" <<<"$listing" || { echo "missing $path"; return 1; }
  done
  file "$kvmserver" | grep -q ', stripped' || { file "$kvmserver"; return 1; }
}
check "contents" contents

version_matches() {
  [ "$("$kvmserver" --version)" = "kvmserver $(dpkg-deb -f "$deb" Version)" ] || { "$kvmserver" --version; return 1; }
}
check "kvmserver --version from the unpacked package" version_matches
help_lists_commands() {
  local help c
  help=$("$kvmserver" --help) || return 1
  for c in run snapshot serve inspect; do grep -q "kvmserver.* $c " <<<"$help" || { echo "no $c in --help"; return 1; }; done
}
check "kvmserver --help" help_lists_commands
# The long options and the commands of --help: what the man page and the completion must know.
"$kvmserver" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u >"$work/options"
{ echo run; "$kvmserver" --help | sed -n '/^Usage:/,/^$/p' | sed -nE 's/^(Usage:)? +kvmserver ([a-z]+).*/\2/p'; } | sort -u >"$work/commands"

man_page() {
  local text needle
  text=$(MANWIDTH=100 man --warnings -l "$1" 2>"$work/man-warnings") || return 1
  [ ! -s "$work/man-warnings" ] || { cat "$work/man-warnings"; return 1; }
  while IFS= read -r needle; do
    grep -qF -- "$needle" <<<"$text" || { echo "man page lacks $needle"; return 1; }
  done < <(printf '%s\n' SYNOPSIS 'EXIT STATUS'; grep -vx run "$work/commands" | sed 's/^/kvmserver /'; cat "$work/options")
}
check "man page renders (man -l, no groff warnings) with every option" man_page "$root/usr/share/man/man1/kvmserver.1.gz"
zcat "$root/usr/share/man/man1/kvmserver.1.gz" | grep -v -- '--reopen-changed-files' | gzip >"$work/short.1.gz"
must_fail "man page check" man_page "$work/short.1.gz"

# ---- Bash completion (plain bash, no bash-completion package loaded) -----------------------------
completion=$root/usr/share/bash-completion/completions/kvmserver
# completes FILE WORD...: what completing the last WORD of `kvmserver WORD...` offers, one a line.
completes() {
  bash -c 'source "$1"; shift; COMP_WORDS=(kvmserver "$@"); COMP_CWORD=$#; _kvmserver; printf "%s\n" "${COMPREPLY[@]}" | sort -u' _ "$@"
}
completion_loads() { [ "$(bash -c 'source "$1" && complete -p kvmserver' _ "$1")" = "complete -F _kvmserver kvmserver" ]; }
check "completion loads (complete -p kvmserver)" completion_loads "$completion"
allow_options() {
  diff <(grep -- '^--allow-' "$work/options") <(completes "$1" --allow-)
}
check "completion: --allow- gives the --allow-* options of --help" allow_options "$completion"
every_option() { diff "$work/options" <(completes "$1" -- | grep -- '^--' | sort -u); }
check "completion: -- offers every long option of --help" every_option "$completion"
grep -v -- '--reopen-changed-files' "$completion" >"$work/short.bash"
must_fail "completion option check" every_option "$work/short.bash"
# expect_completion FILE WANTED WORD...: completing `kvmserver WORD...` offers exactly WANTED
# (one a line, sorted).
expect_completion() {
  local file=$1 wanted=$2 got
  shift 2
  got=$(completes "$file" "$@")
  [ "$got" = "$wanted" ] || { echo "kvmserver $*<TAB>: got [${got//$'\n'/ }], wanted [${wanted//$'\n'/ }]"; return 1; }
}
values() {
  local examples=$root/usr/share/doc/kvmserver/examples
  expect_completion "$1" "$(cat "$work/commands")" "" &&
    expect_completion "$1" request --isolate r &&
    expect_completion "$1" $'off\non' --jail = o &&
    expect_completion "$1" "$examples/hello.toml" --config "$examples/hello.t" &&
    expect_completion "$1" "/etc,$examples" --allow-read = "/etc,$root/usr/share/doc/kvmserver/exa" &&
    expect_completion "$1" "" doctor "" &&
    completes "$1" -t 4 run -- bas | grep -qx bash
}
check "completion: commands, choices, files, lists, the program after run" values "$completion"

# ---- Configuration files -------------------------------------------------------------------------
# A config that parses gets kvmserver past its options to the KVM check (125 here without
# /dev/kvm; on a KVM machine, 127: the program does not exist); a bad one is a usage error, 2.
config_parses() {
  local status
  "$kvmserver" --config "$1" run -- /nonexistent/program 2>"$work/config-stderr"
  status=$?
  [ "$status" != 2 ] && ! grep -qF "$1" "$work/config-stderr" || { echo "exit $status"; cat "$work/config-stderr"; return 1; }
}
check "config: examples/hello.toml" config_parses "$root/usr/share/doc/kvmserver/examples/hello.toml"
check "config: packaging/container/app.toml" config_parses "$PWD/packaging/container/app.toml"
{ cat packaging/container/app.toml; echo 'threds = 4'; } >"$work/bad.toml"
must_fail "config check" config_parses "$work/bad.toml"
env_names_program() { grep -qE '^KVMSERVER_PROGRAM=/' "$1"; }
check "config: examples/hello.env sets KVMSERVER_PROGRAM" env_names_program "$root/usr/share/doc/kvmserver/examples/hello.env"

# ---- lintian -------------------------------------------------------------------------------------
# Tags left on purpose (packaging/README.md): no-copyright-file, as the tree has no licence yet.
lintian_clean() {
  local tags
  tags=$(lintian --pedantic "$deb" 2>/dev/null | grep -E '^[EW]: ' | grep -v ': no-copyright-file$')
  [ -z "$tags" ] || { echo "$tags"; return 1; }
}
if command -v lintian >/dev/null; then
  check "lintian: no errors or warnings but no-copyright-file" lintian_clean
else
  check "lintian installed (scripts/setup.sh)" false
fi

# ---- systemd units -------------------------------------------------------------------------------
# systemd-analyze verify in a root holding the unpacked package and this machine's own units
# (the targets the service is ordered against); it checks ExecStart's binary there. Any message
# fails, not just its exit status: unknown directives are only warnings.
units=$root/usr/lib/systemd/system
cp -an /lib/systemd/system/. "$units/"
verify_units() {
  local out
  out=$(systemd-analyze verify --root="$root" --man=no "$@" 2>&1)
  [ $? = 0 ] && [ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify kvmserver@hello.service kvmserver@hello.socket" verify_units kvmserver@hello.service kvmserver@hello.socket
sed 's/^DynamicUser=/DynamicUsr=/' packaging/systemd/kvmserver@.service >"$units/kvmserver-broken@.service"
must_fail "systemd-analyze verify" verify_units kvmserver-broken@hello.service
rm "$units/kvmserver-broken@.service"
exposure=$(systemd-analyze security --offline=yes --root="$root" kvmserver@hello.service 2>/dev/null | grep -o 'exposure level.*')
echo "     (systemd-analyze security: $exposure)"

# ---- Kubernetes and compose ----------------------------------------------------------------------
modules=$(tests/packaging/fetch-validators.sh) || modules=""
validate() { [ -n "$modules" ] && node tests/packaging/validate-manifests.mjs "$modules" "$@"; }
check "kubernetes manifests against the API schemas (kubernetes-models)" validate kubernetes packaging/kubernetes/*.yaml
sed 's/readinessProbe:/readinesProbe:/' packaging/kubernetes/deployment.yaml >"$work/deployment.yaml"
must_fail "kubernetes validation" validate kubernetes "$work/deployment.yaml"
check "compose.yaml against the Compose specification's schema" validate compose packaging/container/compose.yaml
sed 's/^    devices:/    device:/' packaging/container/compose.yaml >"$work/compose.yaml"
must_fail "compose validation" validate compose "$work/compose.yaml"
# The manifests serve what the container's config grants: the port it listens on, the metrics port.
ports_agree() {
  grep -qx 'allow-listen = \["0.0.0.0:8080"\]' packaging/container/app.toml &&
    grep -qx 'metrics = "0.0.0.0:9464"' packaging/container/app.toml &&
    grep -qE '^ +containerPort: 8080$' packaging/kubernetes/deployment.yaml &&
    grep -qE '^ +prometheus.io/port: "9464"$' packaging/kubernetes/deployment.yaml &&
    grep -qE 'squat.ai/kvm: "1"' packaging/kubernetes/deployment.yaml &&
    grep -qE '^ +name: kvm$' packaging/kubernetes/generic-device-plugin.yaml &&
    grep -qF '"127.0.0.1:8080:8080"' packaging/container/compose.yaml
}
check "ports and device resource agree across app.toml, the manifests and compose.yaml" ports_agree

# ---- Static build (when BUILD_DIR is one) --------------------------------------------------------
# -DKVMS_STATIC=ON: a fully static binary (no program interpreter, no shared library) that runs.
static_links() {
  file -L "$build/kvmserver" | grep -q 'statically linked' || { file -L "$build/kvmserver"; return 1; }
  ! readelf -l "$build/kvmserver" | grep -q 'INTERP' || { echo "has a program interpreter"; return 1; }
  "$build/kvmserver" --version | grep -q '^kvmserver ' || return 1
}
if grep -q '^KVMS_STATIC:BOOL=ON' "$build/CMakeCache.txt"; then
  check "KVMS_STATIC: fully static (no interpreter, no shared library) and it runs" static_links
fi

# ---- Container image (opt-in) --------------------------------------------------------------------
container_image() {
  local context=$work/container
  cp -r packaging/container "$context" && mkdir -p "$context/deb" && cp "$deb" "$context/deb/" &&
    podman build -q --network host --build-arg BASE="$KVMS_PACKAGING_PODMAN_BASE" -t localhost/kvmserver-app:test "$context" >/dev/null &&
    [ "$(podman run --rm --entrypoint kvmserver localhost/kvmserver-app:test --version)" = "kvmserver $(dpkg-deb -f "$deb" Version)" ] &&
    podman run --rm --entrypoint id localhost/kvmserver-app:test | grep -q '(kvm)'
}
if [ -n "${KVMS_PACKAGING_PODMAN_BASE:-}" ]; then
  check "podman build of the Containerfile, kvmserver --version and the kvm group in it" container_image
fi

echo "packaging: took $(($(date +%s) - t0)) s"
echo "packaging: $passed passed, $failed failed"
[ "$failed" = 0 ]
