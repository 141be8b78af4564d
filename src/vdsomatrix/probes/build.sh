#!/bin/sh
# Build the C helper with this environment's own toolchain and libc.
#   sh build.sh OUTDIR [dynamic] [static] [musl] [syscount] [launch]   (default: the first three)
# dynamic: cc against the system glibc; static: cc -static (glibc's libc.a);
# musl: musl-gcc -static; syscount: the system-call counter of the runtime rows (cc, dynamic),
# written as OUTDIR/syscount; launch: the launcher of users' programs (cc, dynamic; CC may make it
# static), written as OUTDIR/launch. Plain POSIX sh: it runs in the oldest userland of the matrix.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR [dynamic] [static] [musl] [syscount] [launch]}
shift
[ $# -gt 0 ] || set -- dynamic static musl
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$here" # the sources by relative name: no word splitting of a folder with spaces
CFLAGS="-O2 -std=gnu99 -Wall -Wextra -Wno-unused-parameter -fno-omit-frame-pointer"
# The helper's sources, and syscount's (both use the one tracer, the signal names and the JSON
# strings); -pthread for the correctness checks' threads (glibc < 2.34 keeps them in libpthread,
# which a static link must name). $CC may carry flags (CC="aarch64-linux-gnu-gcc -static").
common="tracer.c signal_names.c json_string.c"
helper="vdsoprobe.c correctness.c vdso_elf.c $common"
for build in "$@"; do
    case $build in
    dynamic) ${CC:-cc} $CFLAGS -o "$out/vdsoprobe-dynamic" $helper -pthread ;;
    static) ${CC:-cc} $CFLAGS -static -o "$out/vdsoprobe-static" $helper -pthread ;;
    musl) ${MUSL_CC:-musl-gcc} $CFLAGS -static -o "$out/vdsoprobe-musl" $helper -pthread ;;
    syscount)
        ${CC:-cc} $CFLAGS -o "$out/syscount" syscount.c $common
        echo "built $out/syscount"
        continue ;;
    launch)
        ${CC:-cc} $CFLAGS -o "$out/launch" launch.c $common
        echo "built $out/launch"
        continue ;;
    *) echo "build.sh: unknown build '$build' (dynamic, static, musl, syscount, launch)" >&2; exit 2 ;;
    esac
    echo "built $out/vdsoprobe-$build"
done
