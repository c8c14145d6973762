#!/usr/bin/env bash
# Power-loss harness (issue 14, point 3): runs the broker inside a QEMU virtual machine, cuts
# the machine's power (SIGKILL to QEMU) at a random moment while a client produces and the
# broker acknowledges, boots the machine again on the same disk and checks that every
# acknowledged record is there, exactly once and in order. CYCLES cycles (default 3) of
# produce, cut, verify, each producing on from the highest value the last verify found.
#
# Usage: bash scripts/powercut.sh [CYCLES]        (-h or --help prints this)
#
# The guest: a Debian kernel (linux-image-cloud-amd64, unpacked with dpkg-deb, not installed),
# an initramfs of busybox-static, silt-broker, silt, their shared libraries, the virtio
# modules and scripts/powercut/init (which says what the guest does), and one virtio disk, a
# raw ext4 image that holds the broker's data directory and lives across every cycle of a run.
# No network device (-nic none): the broker and its client talk over the guest's loopback.
# KVM when a short probe boot under it succeeds, plain emulation (TCG) otherwise (a /dev/kvm
# that is PVM, as on virtual machines without nested hardware virtualisation, cannot run a
# Debian kernel, and is not even probed).
#
# The disk is attached with cache=none: QEMU writes with O_DIRECT and turns the guest's cache
# flushes into fdatasync on the image. A cut loses the guest's page cache and every request
# QEMU had not completed; a write QEMU completed is in the host's file and survives, flushed
# or not. A real disk's volatile write cache, which may lose completed but unflushed writes,
# is not modelled.
#
# What is checked after each cut: the topic holds exactly the values 1..M with M at least the
# highest acknowledged value (so every acknowledged value once, in order; values sent but not
# acknowledged may be there or not, but only as a continuous tail), no value above what was
# sent, `silt-broker check` on the data directory as the cut left it, and no partition that
# reports lost records. Any failure stops the run with a message and exit code 1.
#
# Environment (all optional):
#   SEED=N                the random seed of the cut moments (default: the time; printed)
#   CUT_MAX_MS=3000       the cut comes 0..CUT_MAX_MS ms after the first acknowledgement
#   CALL_RECORDS=500      records per `silt produce` call (one ACKED line each)
#   BATCH_RECORDS=100     records per batch within a call (batches are pipelined)
#   POWERCUT_DIR=DIR      work directory (default ${CARGO_TARGET_DIR:-target}/powercut); the
#                         kernel and initramfs there are reused, the disk is made anew per run
#   POWERCUT_ACCEL=tcg    force emulation
#   POWERCUT_FSYNC=always the broker's fsync policy in the guest; `never` or `every:1000` make
#                         a control run that should fail, showing the check can fail
#   KERNEL_PACKAGE=NAME   the kernel meta-package (default linux-image-cloud-amd64)
#   POWERCUT_PROFILE=debug  run the debug binaries (what `cargo test` built; the CI run)
#                         instead of the release ones
#
# It installs what it lacks with apt-get (qemu-system-x86, busybox-static, e2fsprogs, cpio)
# and builds the binaries with cargo when they are missing. Needs root for apt-get.
# Exit codes: 0 every cycle passed; 1 a check failed or something timed out; 2 bad arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

case "${1:-}" in
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
cycles=${1:-3}
if ! [[ $cycles =~ ^[1-9][0-9]*$ ]]; then
    echo "powercut: CYCLES must be a positive integer, not '$cycles' (--help for usage)" >&2
    exit 2
fi

seed=${SEED:-$(date +%s)}
cut_max_ms=${CUT_MAX_MS:-3000}
call_records=${CALL_RECORDS:-500}
batch_records=${BATCH_RECORDS:-100}
target=${CARGO_TARGET_DIR:-target}
[[ $target = /* ]] || target="$repo/$target"
work=${POWERCUT_DIR:-$target/powercut}
kernel_package=${KERNEL_PACKAGE:-linux-image-cloud-amd64}
fsync=${POWERCUT_FSYNC:-always}
profile=${POWERCUT_PROFILE:-release}
case "$profile" in
release | debug) ;;
*)
    echo "powercut: POWERCUT_PROFILE must be release or debug, not '$profile'" >&2
    exit 2
    ;;
esac
bindir="$target/$profile"
topic_values="$work/values.txt"
disk="$work/disk.img"
logs="$work/logs"
# 2 GiB, sparse: `silt-broker check` copies the store next to it, so the disk must hold twice
# the largest store a long run makes (about 100 MB after 50 cycles).
disk_mb=2048
guest_mb=1024

log() { echo "powercut: $*"; }
die() {
    echo "powercut: FAIL: $*" >&2
    exit 1
}

qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill -KILL "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- what the host needs -------------------------------------------------------------------

apt_updated=""
apt_update_once() {
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
}

# qemu-system-x86 must come from the same suite as an installed qemu-system-common (the
# firmware tests install qemu-system-arm from backports, and a qemu-system-x86 from the main
# suite then cannot be installed beside it); where a plain install fails, backports is tried.
install_packages() {
    local missing=() codename
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    # The initramfs needs a static busybox: nothing else of the host's userland is copied.
    { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
    { command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null; } || missing+=(e2fsprogs)
    command -v cpio >/dev/null || missing+=(cpio)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    apt_update_once
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$work/apt.log" 2>&1; then
        # shellcheck disable=SC1091
        codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -t "$codename-backports" "${missing[@]}" >>"$work/apt.log" 2>&1 ||
            die "apt-get install ${missing[*]} failed (see $work/apt.log)"
    fi
}

# The kernel and the virtio modules, from the Debian package, unpacked under $work/kernel.
# The cloud kernel builds ext4 in but virtio_pci and virtio_blk as modules; the package ships
# no modules.dep (depmod makes it on install), so init loads them in a fixed order.
kernel_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk)
fetch_kernel() {
    local dir="$work/kernel" pkg deb m f
    [ -f "$dir/vmlinuz" ] && [ -f "$dir/modules/virtio_blk.ko" ] && return
    rm -rf "$dir" && mkdir -p "$dir/modules"
    pkg="$(apt-cache depends "$kernel_package" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')"
    if [ -z "$pkg" ]; then
        apt_update_once
        pkg="$(apt-cache depends "$kernel_package" | awk '/Depends: linux-image-/ { print $2; exit }')"
    fi
    [ -n "$pkg" ] || die "apt knows no $kernel_package"
    log "downloading $pkg"
    # apt-get download writes to the current directory; the _apt user cannot write there, so
    # apt warns that it downloads unsandboxed, which is harmless here.
    (cd "$dir" && apt-get download -qq "$pkg" 2>&1 | grep -v unsandboxed || true)
    deb="$(ls "$dir"/linux-image-*.deb 2>/dev/null | head -n 1)"
    [ -n "$deb" ] || die "apt-get download $pkg left no .deb in $dir"
    dpkg-deb -x "$deb" "$dir/root"
    cp "$dir"/root/boot/vmlinuz-* "$dir/vmlinuz"
    for m in "${kernel_modules[@]}"; do
        f="$(find "$dir/root/lib/modules" -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)"
        [ -n "$f" ] || die "$pkg has no module $m"
        case "$f" in
        *.xz) xz -dc "$f" >"$dir/modules/$m.ko" ;;
        *) cp "$f" "$dir/modules/$m.ko" ;;
        esac
    done
    rm -rf "$dir/root" "$deb"
}

build_binaries() {
    local release_flag=()
    [ "$profile" = release ] && release_flag=(--release)
    if [ ! -x "$bindir/silt-broker" ] || [ ! -x "$bindir/silt" ]; then
        log "building silt-broker and silt ($profile)"
        CARGO_TARGET_DIR="$target" cargo build "${release_flag[@]}" --locked -p silt-server -p silt-cli
    fi
}

# The initramfs: rebuilt when the binaries, init or busybox are newer than it.
build_initramfs() {
    local out="$work/initramfs.cpio" stage="$work/initramfs" bin lib
    if [ -f "$out" ] && [ "$out" -nt "$bindir/silt-broker" ] && [ "$out" -nt "$bindir/silt" ] &&
        [ "$out" -nt "$repo/scripts/powercut/init" ] && [ "$out" -nt /bin/busybox ] &&
        [ "$out" -nt "$work/kernel/vmlinuz" ]; then
        return
    fi
    log "building the initramfs"
    rm -rf "$stage" && mkdir -p "$stage"/{bin,dev,proc,sys,tmp,data,lib/modules}
    cp /bin/busybox "$stage/bin/busybox"
    # Line tables make up most of the binaries; without them the initramfs is a
    # fraction of the size and boots seconds sooner under emulation. Symbols stay.
    for bin in silt-broker silt; do
        if command -v strip >/dev/null; then
            strip --strip-debug -o "$stage/bin/$bin" "$bindir/$bin"
        else
            cp "$bindir/$bin" "$stage/bin/$bin"
        fi
    done
    # Each shared library at the path the dynamic loader looks for it.
    for bin in "$bindir/silt-broker" "$bindir/silt"; do
        for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
            mkdir -p "$stage$(dirname "$lib")"
            cp -L "$lib" "$stage$lib"
        done
    done
    cp "$work"/kernel/modules/*.ko "$stage/lib/modules/"
    install -m 0755 "$repo/scripts/powercut/init" "$stage/init"
    # The kernel opens /dev/console for init before init mounts devtmpfs.
    mknod -m 600 "$stage/dev/console" c 5 1
    # Uncompressed: the kernel unpacks it faster than a compressed one, and RAM is plenty.
    (cd "$stage" && find . | cpio -o -H newc --quiet) >"$out.tmp"
    mv "$out.tmp" "$out"
}

# KVM when it can boot this kernel, else TCG. A /dev/kvm that opens is not enough: where it is
# PVM (the kvm_pvm module, as on machines that are themselves virtual machines without
# hardware virtualisation) it runs only guest kernels built for PVM, and a Debian kernel hangs
# early in boot. So KVM is probed with one short boot that only prints and powers off.
choose_accel() {
    accel=tcg
    accel_why="POWERCUT_ACCEL=tcg"
    if [ "${POWERCUT_ACCEL:-}" != tcg ]; then
        if ! [ -c /dev/kvm ] || ! (exec 3<>/dev/kvm) 2>/dev/null; then
            accel_why="/dev/kvm cannot be opened"
        elif [ -d /sys/module/kvm_pvm ] && ! [ -d /sys/module/kvm_intel ] && ! [ -d /sys/module/kvm_amd ]; then
            accel_why="/dev/kvm is PVM (kvm_pvm), which cannot run a Debian kernel"
        else
            accel_args=(-accel kvm -cpu host)
            start_vm "silt.mode=probe" "$logs/probe.log"
            wait_console "$logs/probe.log" '^PROBE-OK' 30 && accel=kvm
            stop_vm_hard
            accel_why="the probe boot under KVM did not finish in 30 s ($logs/probe.log)"
        fi
    fi
    if [ "$accel" = kvm ]; then
        accel_args=(-accel kvm -cpu host)
        accel_why="KVM"
        boot_timeout_s=90
        verify_timeout_s=600
    else
        log "emulating (TCG): $accel_why"
        accel_args=(-accel tcg -cpu max)
        boot_timeout_s=900
        verify_timeout_s=3600
    fi
}

# --- one machine ----------------------------------------------------------------------------

# Starts QEMU in the background with kernel arguments $1, console to file $2.
start_vm() {
    local append=$1 console=$2
    : >"$console"
    qemu-system-x86_64 "${accel_args[@]}" -machine q35 -m "$guest_mb" -smp 2 \
        -nodefaults -no-user-config -display none -nic none -no-reboot \
        -kernel "$work/kernel/vmlinuz" -initrd "$work/initramfs.cpio" \
        -append "console=ttyS0 panic=-1 quiet $append" \
        -chardev "file,id=con,path=$console" -serial chardev:con \
        -drive "file=$disk,format=raw,if=virtio,cache=none,aio=threads" \
        </dev/null >"$console.qemu" 2>&1 &
    qemu_pid=$!
}

now_ms() { date +%s%3N; }

# Complete lines only: a line the cut broke off has no newline yet. The serial console ends
# lines with CR LF.
console_lines() {
    if [ -n "$(tail -c 1 "$1")" ]; then head -n -1 "$1"; else cat "$1"; fi | tr -d '\r'
}

# Waits until the console $1 has a line matching $2, QEMU exits, or $3 seconds pass.
# Returns 0 on the line, 1 when QEMU exited first, 2 on the timeout.
wait_console() {
    local console=$1 pattern=$2 deadline=$(($(now_ms) + $3 * 1000))
    while :; do
        grep -aqE "$pattern" "$console" && return 0
        kill -0 "$qemu_pid" 2>/dev/null || return 1
        [ "$(now_ms)" -lt "$deadline" ] || return 2
        sleep 0.05
    done
}

# Waits at most $1 seconds for QEMU to exit by itself (the guest powered off).
wait_exit() {
    local deadline=$(($(now_ms) + $1 * 1000))
    while kill -0 "$qemu_pid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do
        sleep 0.05
    done
}

stop_vm_hard() {
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
}

# True when QEMU itself died of an internal error (an assertion in its TCG code was seen here:
# "iotlb_to_section: Assertion `section_index < d->map.sections_nb' failed") rather than by our
# cut or the guest's power-off. For the guest that is one more power cut, at a moment nobody
# chose, so the harness says so, counts it, and boots again from the same disk.
qemu_aborted() {
    grep -aqE 'Assertion .* failed|Aborted|internal (error|SIGSEGV)' "$1.qemu" 2>/dev/null
}

# Logs and counts a QEMU abort (console $1, phase $2), keeping its logs aside.
note_abort() {
    qemu_aborts=$((qemu_aborts + 1))
    log "$tag: QEMU aborted on its own during $2 ($(grep -am1 -E 'Assertion|Aborted|internal' "$1.qemu")): treated as one more power cut, booting again"
    mv "$1" "$1.qemu-abort-$qemu_aborts"
    mv "$1.qemu" "$1.qemu-abort-$qemu_aborts.qemu"
}

guest_error() {
    local console=$1
    grep -a -E '^(GUEST-ERROR|BROKER-LOG)' "$console" | tr -d '\r' | tail -n 40 >&2 || true
    tail -n 5 "$console.qemu" >&2 || true
}

# --- checks ---------------------------------------------------------------------------------

# Checks the consumed values ($topic_values) against every acknowledged range ($acked, lines
# "A B"). Prints "lines last lost dup disorder holes bad" and returns 0 when all is well.
check_values() {
    awk -v sent_max="$1" -v acked="$acked" '
        BEGIN { while ((getline line < acked) > 0) { split(line, f, " "); ra[++nr] = f[1]; rb[nr] = f[2] } }
        {
            v = $0
            if (v !~ /^[0-9]+$/) { bad++; next }
            v += 0; n++; seen[v]++
            if (seen[v] > 1) dup++
            if (n > 1 && v <= prev) disorder++
            prev = v
            if (v > last) last = v
        }
        END {
            for (i = 1; i <= nr; i++)
                for (v = ra[i]; v <= rb[i]; v++)
                    if (!(v in seen)) lost++
            # A value below the highest one present that is missing: the log is not a
            # continuous prefix of what was sent (unacknowledged or not).
            for (v = 1; v <= last; v++) if (!(v in seen)) holes++
            if (last > sent_max) bad++
            printf "%d %d %d %d %d %d %d\n", n, last, lost, dup, disorder, holes, bad
            exit (lost + dup + disorder + holes + bad > 0)
        }' "$topic_values"
}

# --- the run --------------------------------------------------------------------------------

mkdir -p "$work" "$logs"
install_packages
fetch_kernel
build_binaries
build_initramfs
choose_accel

rm -f "$disk"
truncate -s "${disk_mb}M" "$disk"
mkfs.ext4 -q -F -L silt-data "$disk"
acked="$work/acked.txt"
: >"$acked"
rm -f "$logs"/cycle-*

RANDOM=$seed
log "seed $seed, $cycles cycle(s), accel $accel, cut 0..${cut_max_ms} ms after the first ack,"
log "$call_records records per call in batches of $batch_records, fsync $fsync, work dir $work"

run_start_ms=$(now_ms)
next=1
acked_total=0
checks_total=0
unacked_kept_total=0
journal_replays=0
qemu_aborts=0
recover_ms_list=()
broker_start_list=()
for ((cycle = 1; cycle <= cycles; cycle++)); do
    tag=$(printf 'cycle-%03d' "$cycle")
    pconsole="$logs/$tag-produce.log"
    vconsole="$logs/$tag-verify.log"

    # Produce, then cut.
    for ((attempt = 0; ; attempt++)); do
        t0=$(now_ms)
        start_vm "silt.mode=produce silt.from=$next silt.call=$call_records silt.batch=$batch_records silt.fsync=$fsync" "$pconsole"
        rc=0
        wait_console "$pconsole" '^ACKED ' "$boot_timeout_s" || rc=$?
        if [ "$rc" = 1 ] && [ "$attempt" -lt 3 ] && qemu_aborted "$pconsole"; then
            stop_vm_hard
            note_abort "$pconsole" "produce, before its first acknowledgement"
            continue
        fi
        break
    done
    if [ "$rc" != 0 ]; then
        guest_error "$pconsole"
        stop_vm_hard
        [ "$rc" = 2 ] && die "$tag: no acknowledgement within ${boot_timeout_s} s (console: $pconsole)"
        die "$tag: the guest stopped before its first acknowledgement (console: $pconsole)"
    fi
    first_ack_ms=$(($(now_ms) - t0))
    cut_ms=$((((RANDOM << 15) | RANDOM) % (cut_max_ms + 1)))
    sleep "$(awk -v ms="$cut_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    if ! kill -0 "$qemu_pid" 2>/dev/null && qemu_aborted "$pconsole"; then
        # The emulator cut the power itself: the cycle goes on from that cut.
        qemu_aborts=$((qemu_aborts + 1))
        log "$tag: QEMU aborted on its own while producing ($(grep -am1 -E 'Assertion|Aborted|internal' "$pconsole.qemu")): that is the cut of this cycle"
    else
        kill -0 "$qemu_pid" 2>/dev/null || {
            guest_error "$pconsole"
            die "$tag: the guest stopped on its own before the cut (console: $pconsole)"
        }
    fi
    stop_vm_hard
    grep -aq '^GUEST-ERROR' "$pconsole" && {
        guest_error "$pconsole"
        die "$tag: the guest reported an error while producing (console: $pconsole)"
    }
    console_lines "$pconsole" | awk '$1 == "ACKED" && NF == 3 { print $2, $3 }' >"$work/acked-cycle.txt"
    cycle_acked=$(awk '{ n += $2 - $1 + 1 } END { print n + 0 }' "$work/acked-cycle.txt")
    cycle_max_acked=$(awk 'END { print $2 + 0 }' "$work/acked-cycle.txt")
    cat "$work/acked-cycle.txt" >>"$acked"
    acked_total=$((acked_total + cycle_acked))
    # The call in flight at the cut may have sent up to call_records values past the last
    # complete ACKED line (or past where this cycle began, when the cut broke off the first).
    sent_base=$((next - 1))
    [ "$cycle_max_acked" -gt "$sent_base" ] && sent_base=$cycle_max_acked
    sent_max=$((sent_base + call_records))

    # Verify on the same disk.
    for ((attempt = 0; ; attempt++)); do
        t0=$(now_ms)
        start_vm "silt.mode=verify silt.fsync=$fsync" "$vconsole"
        rc=0
        wait_console "$vconsole" '^READY ' "$verify_timeout_s" || rc=$?
        if [ "$rc" = 0 ]; then
            recover_ms=$(($(now_ms) - t0))
            wait_console "$vconsole" '^VERIFY-DONE' "$verify_timeout_s" || rc=$?
            [ "$rc" = 0 ] || rc=$((rc + 10))
        fi
        if [ "$rc" != 0 ] && [ "$attempt" -lt 3 ] && qemu_aborted "$vconsole"; then
            stop_vm_hard
            note_abort "$vconsole" "verify"
            continue
        fi
        break
    done
    if [ "$rc" != 0 ] && [ "$rc" -lt 10 ]; then
        guest_error "$vconsole"
        stop_vm_hard
        die "$tag: the broker did not come up after the cut (console: $vconsole)"
    fi
    if [ "$rc" != 0 ]; then
        guest_error "$vconsole"
        stop_vm_hard
        die "$tag: verify did not finish (console: $vconsole)"
    fi
    # The guest powers off by itself after VERIFY-DONE; bounded all the same.
    wait_exit 60
    stop_vm_hard
    verify_ms=$(($(now_ms) - t0))

    vlines="$(console_lines "$vconsole")"
    check_line=$(grep -m1 '^CHECK ' <<<"$vlines" || true)
    check_rc=$(sed -n 's/^CHECK rc=\([0-9]*\).*/\1/p' <<<"$check_line")
    broker_start_s=$(sed -n 's/^READY .*broker_start_s=\([0-9.]*\).*/\1/p' <<<"$vlines" | head -n 1)
    mounted_s=$(sed -n 's/^MOUNTED uptime=\([0-9.]*\).*/\1/p' <<<"$vlines" | head -n 1)
    write_cache=$(sed -n 's/^MOUNTED .*write_cache=\([a-z_]*\).*/\1/p' <<<"$vlines" | head -n 1 | tr _ ' ')
    grep -q '^MOUNTED .*journal_replayed=yes' <<<"$vlines" && journal_replays=$((journal_replays + 1))
    check_s=$(sed -n 's/^CHECK .*seconds=\([0-9.]*\).*/\1/p' <<<"$check_line")
    if [ "$check_rc" != 0 ]; then
        grep '^CHECK-OUT ' <<<"$vlines" >&2 || true
        die "$tag: silt-broker check on the data directory as the cut left it exited ${check_rc:-?} (console: $vconsole)"
    fi
    if grep -q '^DESCRIBE .*LOST' <<<"$vlines"; then
        grep '^DESCRIBE ' <<<"$vlines" >&2
        die "$tag: the broker reports lost acknowledged records (console: $vconsole)"
    fi
    grep -q '^STOPPED rc=0$' <<<"$vlines" || log "$tag: note: the broker's clean stop: $(grep '^STOPPED' <<<"$vlines" || echo none)"

    debugfs -R "dump /verify/values.txt $topic_values" "$disk" >/dev/null 2>&1 ||
        die "$tag: could not read /verify/values.txt from $disk"
    result=""
    if ! result=$(check_values "$sent_max"); then
        read -r n last lost dup disorder holes bad <<<"$result"
        die "$tag: $lost acknowledged value(s) missing, $dup duplicate(s), $disorder out of order, $holes hole(s) below $last, $bad value(s) never sent or not numbers; values in $topic_values, acknowledged ranges in $acked"
    fi
    read -r n last lost dup disorder holes bad <<<"$result"
    [ "$last" -ge "$cycle_max_acked" ] || die "$tag: highest value $last is below the highest acknowledged $cycle_max_acked"
    all_acked=$(awk '{ n += $2 - $1 + 1 } END { print n + 0 }' "$acked")
    checks_total=$((checks_total + all_acked))
    unacked_kept=$((last - cycle_max_acked))
    unacked_kept_total=$((unacked_kept_total + unacked_kept))
    recover_ms_list+=("$recover_ms")
    broker_start_list+=("${broker_start_s:-0}")
    log "$tag: cut ${cut_ms} ms after the first ack (power-on to first ack ${first_ack_ms} ms); acknowledged $cycle_acked this cycle, $all_acked in all; all present once and in order, lost 0; topic holds 1..$last ($unacked_kept sent, unacknowledged, kept)"
    log "$tag: after the cut: power-on to serving ${recover_ms} ms (kernel and ext4 mount ${mounted_s:-?} s, silt-broker check ${check_s:-?} s clean, broker start to serving ${broker_start_s:-?} s), whole verify ${verify_ms} ms"
    next=$((last + 1))
done

run_s=$((($(now_ms) - run_start_ms) / 1000))
stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "min %s, median %s, max %s", v[1], v[int((NR + 1) / 2)], v[NR] }'; }
log "done: $cycles cycle(s) passed, seed $seed, accel $accel, ${run_s} s"
log "  acknowledged records: $acked_total (each verify checked all acknowledged so far: $checks_total checks)"
log "  acknowledged records lost: 0; duplicates: 0; out of order: 0"
log "  sent but unacknowledged records kept after a cut: $unacked_kept_total"
log "  cuts after which the mount replayed ext4's journal: $journal_replays of $cycles"
log "  QEMU aborts of its own (each one more cut, booted again): $qemu_aborts"
log "  the guest's disk (virtio-blk, cache=none) shows its write cache as: ${write_cache:-?}"
log "  power-on to serving after a cut, ms: $(stats "${recover_ms_list[@]}")"
log "  broker start to serving after a cut, s: $(stats "${broker_start_list[@]}")"
printf '{"cycles":%d,"seed":%s,"accel":"%s","acknowledged":%d,"checks":%d,"lost":0,"unacked_kept":%d,"seconds":%d}\n' \
    "$cycles" "$seed" "$accel" "$acked_total" "$checks_total" "$unacked_kept_total" "$run_s"
