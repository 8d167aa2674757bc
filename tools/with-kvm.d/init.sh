#!/bin/busybox sh
# /init of the with-kvm nested machine (runs from the initramfs built by
# tools/with-kvm).  It loads the virtio/9p/kvm modules, mounts the host root
# read-only and the project tree writable, then makes that the job's root and runs the job
# (/job/*, appended to the initramfs per invocation) with stdout/stderr on
# two virtio serial ports.  Progress is reported on a third port ("status"):
#   booted UPTIME      -- machine is up, /dev/kvm exists, command is starting
#   exit RC            -- command finished with status RC
#   error MESSAGE      -- the machine could not be set up (host exits 125)
# Kernel/init chatter goes to the console (ttyS0 -> log file on the host).

/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

stage() { read -r up _ </proc/uptime; echo "with-kvm init: $up $*"; }
stage init started
status_port=
die() {
    echo "with-kvm init: $*"
    if [ -n "$status_port" ]; then
        echo "error $*" >"$status_port"
    fi
    sync
    poweroff -f
    reboot -f
    exit 1
}

# Modules, in dependency order (modules.list was made with modprobe --show-depends).
# (Loading the kvm ones in parallel with the virtio ones is much slower.)
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$m" || echo "with-kvm init: insmod $m failed"
done </modules.list

stage modules loaded
# Virtio serial ports show up asynchronously (control queue work): wait.
find_port() {
    for n in /sys/class/virtio-ports/*/name; do
        [ -r "$n" ] || continue
        if [ "$(cat "$n")" = "$1" ]; then
            d=${n%/name}
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}
i=0
while :; do
    out_port=$(find_port stdout) && err_port=$(find_port stderr) &&
        status_port=$(find_port status) &&
        [ -c "$out_port" ] && [ -c "$err_port" ] && [ -c "$status_port" ] && break
    i=$((i + 1))
    [ $i -lt 500 ] || die "virtio serial ports did not appear"
    usleep 10000
done

stage ports found
proj=$(cat /job/proj)
tmpdir=$(cat /job/tmpdir 2>/dev/null)

mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /newroot ||
    die "cannot mount the host root over 9p"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || die "cannot mount /tmp"
mount -t proc proc /newroot/proc || die "cannot mount /proc"
mount -t sysfs sysfs /newroot/sys || die "cannot mount /sys"
mount -t devtmpfs devtmpfs /newroot/dev || die "cannot mount /dev"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || die "cannot mount /run"
if [ -n "$proj" ] && [ "$proj" != / ]; then
    mkdir -p "/newroot$proj" 2>/dev/null
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap project "/newroot$proj" ||
        die "cannot mount the project tree $proj over 9p"
fi
case "$tmpdir" in
/tmp/?*) mkdir -p "/newroot$tmpdir" ;;
esac
[ -r /newroot/etc/hostname ] && hostname "$(cat /newroot/etc/hostname)"
ip link set lo up || ifconfig lo 127.0.0.1 up || die "cannot bring up lo"

[ -c /newroot/dev/kvm ] || die "no /dev/kvm (kvm_amd did not load: CPU without SVM?)"
npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null)
if [ "$npt" != Y ] && [ "$npt" != 1 ]; then
    echo "with-kvm: warning: kvm_amd npt=${npt:-?} inside the nested machine (nested KVM will be slow)" >"$err_port"
fi

mkdir -p /newroot/run/with-kvm
cp /job/env /job/argv /job/cwd /run.sh /newroot/run/with-kvm/ || die "cannot stage the job"

stage starting the command
echo "booted $up" >"$status_port"
# The job runs in a mount namespace of its own whose root is /newroot, moved over / as switch_root
# does, rather than in a chroot: the kernel lets no chrooted process create user namespaces, and
# the tests need them (kvmserver --jail, unshare --user), as on any installed system.
unshare -m --propagation private sh -c 'cd /newroot && mount --move . / && exec chroot . /bin/bash /run/with-kvm/run.sh' \
    >"$out_port" 2>"$err_port" </dev/null
rc=$?
sync
echo "exit $rc" >"$status_port"
poweroff -f
reboot -f
