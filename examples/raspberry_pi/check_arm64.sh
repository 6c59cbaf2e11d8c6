#!/usr/bin/env bash
# Run leukedge's runtime on 64-bit ARM (aarch64) under emulation and compare with x86-64.
#
# On an x86-64 Debian/Ubuntu machine, as root:
#   1. builds a Debian Bookworm arm64 root (mmdebstrap + qemu-user-static, all Debian
#      packages; mounts binfmt_misc if needed). Bookworm is what Raspberry Pi OS 64-bit
#      (Bookworm) is built on: the same Python 3.11 and the same NumPy 1.24 in apt;
#   2. builds leukedge's wheel here and installs the runtime only (no extras) into two venvs
#      in that root, the aarch64 dependencies coming from the registry (PyPI):
#        clean         python3 -m venv, then pip install WHEEL
#        system-numpy  python3 -m venv --system-site-packages with apt's python3-numpy, then
#                      pip install WHEEL "numpy<2" (on Bookworm; the Picamera2 set-up of the
#                      Pi guide: apt's camera stack is built against apt's NumPy 1.24);
#   3. runs `leukedge info`, `leukedge classify --json` and the Python API
#      (api_classify.py) on the example images and on 50 real smear fields (the first 25
#      files of Benign/ and of Pre/ in DATA, sorted) as a Pi 4 (qemu's Cortex-A72 and a Pi 4
#      /proc/cpuinfo, so LiteRT's XNNPACK picks that CPU's kernels) and, classify only, as a
#      Pi 5 (Cortex-A76); then the same classify on x86-64 in a
#      venv with exactly the aarch64 package versions (the host's /usr/bin/python3.11 where
#      it exists: the same Debian Python as the arm64 root);
#   4. compares (compare_runs.py): same labels, statuses (ok/refer/rejected), reasons and
#      failed checks required; max |dp| and the max relative difference of ood_distance
#      reported.
# Timings under emulation mean nothing, so none are taken.
#
# Usage: check_arm64.sh [--root DIR] [--out DIR] [--suite bookworm] DATA
#   DATA   the Taleqani folder (with Benign/ and Pre/), e.g. ../shared/data/taleqani
#   --root the arm64 root (default /var/tmp/leukedge-arm64-root; reused when it exists;
#          keep it out of the repository)
#   --out  where results go (default ./arm64-check): JSON lines, pip freeze, info, summary
# Exit: 0 labels, statuses and failed checks equal everywhere; 1 one differs or something
# failed; 2 usage/set-up.
# Run it niced on a shared machine: nice -n 10 bash check_arm64.sh ... (about 15-30 min on
# 2 cores, most of it in mmdebstrap and pip under emulation).
set -euo pipefail

ROOT=/var/tmp/leukedge-arm64-root
OUT=./arm64-check
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
DATA=
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --suite) SUITE=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) DATA=$1; shift ;;
    esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ -n "$DATA" ] || { echo "error: give the data folder (with Benign/ and Pre/)" >&2; exit 2; }
for cls in Benign Pre; do
    [ -d "$DATA/$cls" ] || { echo "error: $DATA/$cls not found" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "error: run as root (chroot, mount)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '\n== %s\n' "$*"; }

# ------------------------------------------------------------------ host tools, binfmt
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v arch-test >/dev/null || need+=(arch-test)
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
if [ "$(uname -m)" != aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
    arch-test arm64 >/dev/null ||
        { echo "error: arm64 binaries do not run here (binfmt_misc/qemu)" >&2; exit 2; }
fi

# ------------------------------------------------------------------ the arm64 root
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    log "mmdebstrap $SUITE arm64 -> $ROOT"
    mmdebstrap --arch=arm64 --variant=apt \
        --include=python3,python3-venv,python3-numpy,ca-certificates \
        "$SUITE" "$ROOT" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb http://deb.debian.org/debian-security $SUITE-security main"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle, in case its network needs one the fresh root lacks.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca-bundle.crt"
mounted=()
cleanup() {  # recursive: rbind brings submounts (/dev/pts, /sys/fs/cgroup, ...)
    for m in "${mounted[@]}"; do umount -R "$m" 2>/dev/null || umount -R -l "$m" || true; done
}
trap cleanup EXIT
for fs in proc dev; do
    if ! mountpoint -q "$ROOT/$fs"; then
        mount --rbind "/$fs" "$ROOT/$fs" && mount --make-rslave "$ROOT/$fs"
        mounted=("$ROOT/$fs" "${mounted[@]}")
    fi
done
# A Pi's CPU, as LiteRT sees it: XNNPACK picks its int8 kernels from the CPU that cpuinfo
# reads in /proc/cpuinfo and /sys/devices/system/cpu. Under qemu-user those are the host's
# (x86): with the host's /sys LiteRT segfaults, and without it XNNPACK is off and other
# kernels run. So each profile sets qemu's CPU model (QEMU_CPU: the HWCAP the code sees) and
# binds a matching /proc/cpuinfo; the root's own /sys (not the host's) lists 4 cores.
mountpoint -q "$ROOT/sys" && { echo "error: $ROOT/sys is mounted; unmount it" >&2; exit 2; }
mkdir -p "$ROOT/sys/devices/system/cpu"
echo 0-3 > "$ROOT/sys/devices/system/cpu/possible"
echo 0-3 > "$ROOT/sys/devices/system/cpu/present"
declare -A QEMU_CPUS=([pi4]=cortex-a72 [pi5]=cortex-a76)
cpuinfo() {  # /proc/cpuinfo of a Pi 4 (4x Cortex-A72) or Pi 5 (4x Cortex-A76)
    local features part variant revision model
    if [ "$1" = pi4 ]; then
        features="fp asimd evtstrm crc32 cpuid" part=0xd08 variant=0x0 revision=3
        model="Raspberry Pi 4 Model B Rev 1.5"
    else
        features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid"
        features+=" asimdrdm lrcpc dcpop asimddp" part=0xd0b variant=0x4 revision=1
        model="Raspberry Pi 5 Model B Rev 1.0"
    fi
    for i in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' \
            "$i" "$features"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
            "$variant" "$part" "$revision"
    done
    printf 'Model\t\t: %s\n' "$model"
}
PROFILE=
use_profile() {
    mountpoint -q "$ROOT/proc/cpuinfo" && umount "$ROOT/proc/cpuinfo"
    cpuinfo "$1" > "$OUT/cpuinfo_$1.txt"
    mount --bind "$OUT/cpuinfo_$1.txt" "$ROOT/proc/cpuinfo"
    PROFILE=$1
}
in_root() {
    local cpu=max  # qemu's default until a profile is chosen
    [ -n "$PROFILE" ] && cpu=${QEMU_CPUS[$PROFILE]}
    chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        QEMU_CPU="$cpu" PIP_CERT=/etc/ssl/host-ca-bundle.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 /bin/bash -c "$1"
}
[ "$(in_root 'uname -m')" = aarch64 ] || { echo "error: the root is not aarch64" >&2; exit 2; }

# ------------------------------------------------------------------ wheel, inputs
log "build the wheel"
rm -rf "$OUT/wheel"
python3 -m pip wheel -q --no-deps -w "$OUT/wheel" "$REPO" ||
    { echo "error: building the wheel failed (another build in $REPO at the same time?)" >&2; exit 2; }
WHEEL=$(ls "$OUT"/wheel/leukedge-*.whl)
STAGE=/tmp/leukedge-check  # inside the root; the host sees it as $ROOT$STAGE
rm -rf "$ROOT$STAGE" && mkdir -p "$ROOT$STAGE/images" "$ROOT$STAGE/data/Benign" \
    "$ROOT$STAGE/data/Pre"
cp "$WHEEL" "$HERE/api_classify.py" "$ROOT$STAGE/"
cp "$REPO"/examples/images/*.jpg "$REPO"/examples/images/*.bmp "$ROOT$STAGE/images/"
for cls in Benign Pre; do
    find "$DATA/$cls" -maxdepth 1 -type f -iname '*.jpg' | LC_ALL=C sort | head -n 25 |
        xargs -d '\n' cp -t "$ROOT$STAGE/data/$cls/"
done
(cd "$ROOT$STAGE" && find images data -type f | LC_ALL=C sort) > "$OUT/inputs.txt"
[ "$(wc -l < "$OUT/inputs.txt")" -eq 54 ] ||
    { echo "error: expected 4 example images + 50 fields" >&2; exit 2; }
WHL=$STAGE/$(basename "$WHEEL")

# ------------------------------------------------------------------ aarch64 runs
status=0
classify() {  # venv, output name: leukedge classify --json on the inputs, current profile
    log "aarch64 classify ($2, CPU profile $PROFILE: ${QEMU_CPUS[$PROFILE]})"
    in_root "cd $STAGE && $1/bin/leukedge classify --json \$(cat inputs.txt)" \
        > "$OUT/classify_aarch64_$2_$PROFILE.jsonl" || status=1
}
make_venv() {  # name, venv options, extra pip requirements
    local name=$1 venv_opts=$2 extra=$3 v=/opt/leukedge-$1
    log "aarch64 venv '$name': python3 -m venv $venv_opts; pip install $(basename "$WHL") $extra"
    in_root "rm -rf $v && python3 -m venv $venv_opts $v && $v/bin/pip install -q $WHL $extra"
    in_root "$v/bin/python -m pip freeze --all" > "$OUT/pip_freeze_aarch64_$name.txt"
    in_root "$v/bin/python -c 'import sys, platform, numpy; print(platform.machine(), \
        sys.version.split()[0], \"numpy\", numpy.__version__, numpy.__file__)'" \
        | tee "$OUT/python_aarch64_$name.txt"
}
cp "$OUT/inputs.txt" "$ROOT$STAGE/inputs.txt"
use_profile pi4
make_venv clean "" ""
V=/opt/leukedge-clean
# LEUKEDGE_LITERT_LOG=1 keeps LiteRT's "Created ... XNNPACK delegate" line (leukedge hides it).
in_root "LEUKEDGE_LITERT_LOG=1 $V/bin/leukedge info" > "$OUT/info_aarch64.txt" \
    2> "$OUT/info_aarch64.stderr" || status=1
grep -q "XNNPACK delegate" "$OUT/info_aarch64.stderr" ||
    { echo "error: LiteRT did not create its XNNPACK delegate on aarch64" >&2; status=1; }
in_root "$V/bin/leukedge info --json" > "$OUT/info_aarch64.json" || status=1
classify $V clean
log "aarch64 Python API (api_classify.py, CPU profile $PROFILE)"
in_root "cd $STAGE && $V/bin/python api_classify.py \$(cat inputs.txt)" \
    > "$OUT/api_aarch64_clean_$PROFILE.jsonl" || status=1
use_profile pi5
classify $V clean
# Bookworm's apt NumPy is 1.24.2 (what Picamera2's simplejpeg is built against): keep it.
# Later suites ship NumPy 2, which leukedge's pins accept as it is.
[ "$SUITE" = bookworm ] && numpy_pin='"numpy<2"' || numpy_pin=
use_profile pi4
make_venv system-numpy --system-site-packages "$numpy_pin"
classify /opt/leukedge-system-numpy system-numpy

# ------------------------------------------------------------------ x86-64 reference
HOSTPY=$(command -v python3.11 || command -v python3)
[ -x /usr/bin/python3.11 ] && HOSTPY=/usr/bin/python3.11
log "x86-64 venv ($HOSTPY) with the aarch64 clean venv's versions"
grep -v -E '^(leukedge|pip|setuptools|wheel)[= @]' "$OUT/pip_freeze_aarch64_clean.txt" \
    > "$OUT/constraints.txt"
rm -rf "$OUT/venv-x86_64"
"$HOSTPY" -m venv "$OUT/venv-x86_64"
"$OUT/venv-x86_64/bin/pip" install -q --isolated -c "$OUT/constraints.txt" "$WHEEL"
"$OUT/venv-x86_64/bin/python" -m pip freeze --all > "$OUT/pip_freeze_x86_64.txt"
(cd "$ROOT$STAGE" && "$OUT/venv-x86_64/bin/leukedge" classify --json $(cat inputs.txt)) \
    > "$OUT/classify_x86_64.jsonl" || status=1
rm -rf "$OUT/venv-x86_64" "$OUT/wheel"

# ------------------------------------------------------------------ compare
log "compare"
cmp_py="$HOSTPY $HERE/compare_runs.py"
SUMMARY=$OUT/summary.txt
compare() {  # reference, other, names
    $cmp_py "$OUT/$1.jsonl" "$OUT/$2.jsonl" --names "$3" "$4" >> "$SUMMARY" 2>&1 || status=1
}
echo "aarch64: Debian $SUITE root, $(cat "$OUT/python_aarch64_clean.txt")" > "$SUMMARY"
compare classify_x86_64 classify_aarch64_clean_pi4 x86_64 aarch64-pi4
compare classify_x86_64 classify_aarch64_clean_pi5 x86_64 aarch64-pi5
compare classify_aarch64_clean_pi4 classify_aarch64_clean_pi5 aarch64-pi4 aarch64-pi5
compare classify_aarch64_clean_pi4 api_aarch64_clean_pi4 aarch64-cli aarch64-api
echo "aarch64 system-numpy venv: $(cat "$OUT/python_aarch64_system-numpy.txt")" >> "$SUMMARY"
compare classify_x86_64 classify_aarch64_system-numpy_pi4 x86_64 aarch64-system-numpy-pi4
cat "$SUMMARY"
echo
[ "$status" = 0 ] && echo "PASS: aarch64 = x86-64 labels, statuses and checks" ||
    echo "FAIL (see $OUT)"
exit "$status"
