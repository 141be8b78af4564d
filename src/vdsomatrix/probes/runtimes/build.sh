#!/bin/sh
# Build the language-runtime timing programs with this environment's own toolchains.
#   sh build.sh OUTDIR
# Copies timing.py and timing.js; compiles Timing.java (javac --release 8), timing.go twice
# (timing-go-static: CGO_ENABLED=0; timing-go-dynamic: cgo, external link against libc) and
# timing.rs (rustc -O), each only if its compiler is here: a missing toolchain is no error, it is
# written down in OUTDIR/build.json: {"built": {...}, "versions": {...}, "missing": {...}}.
# Compilers can be chosen with JAVAC, GO, RUSTC. Plain POSIX sh: it runs in the oldest userland.
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vdsomatrix-runtimes.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

built=""
versions=""
missing=""
failed=0

# JSON string contents: backslashes and quotes escaped, control characters dropped, one line.
esc() {
    printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | cut -c1-300
}
add() {  # add LISTVAR KEY JSONVALUE
    eval "cur=\$$1"
    if [ -n "$cur" ]; then cur="$cur, "; fi
    eval "$1=\"\$cur\\\"$2\\\": \$3\""
}
ok() { add built "$1" true; echo "built $out/$2"; }
no() {  # no KEY REASON
    add built "$1" false
    add missing "$1" "\"$(esc "$2")\""
    echo "build.sh: $1: $2" >&2
}
tail1() { tail -n 3 "$1" | tr '\n' ' '; }

for script in python:timing.py node:timing.js; do
    if cp "$here/${script#*:}" "$out/${script#*:}"; then
        ok "${script%%:*}" "${script#*:}"
    else
        no "${script%%:*}" "cannot copy ${script#*:}"; failed=1
    fi
done

javac=${JAVAC:-javac}
if command -v "$javac" >/dev/null 2>&1; then
    v=$("$javac" -version 2>&1 | head -n 1)
    add versions javac "\"$(esc "$v")\""
    if "$javac" --release 8 -Xlint:-options -d "$out" "$here/Timing.java" >"$tmp/javac.log" 2>&1; then
        ok java Timing.class
    else
        no java "javac failed: $(tail1 "$tmp/javac.log")"
    fi
else
    no java "no javac here"
fi

go=${GO:-go}
if command -v "$go" >/dev/null 2>&1; then
    v=$("$go" version 2>&1 | head -n 1)
    add versions go "\"$(esc "$(echo "$v" | awk '{print $3}')")\""
    # The build may run as root in a container with a read-only home: everything under $tmp,
    # no module, no network, no toolchain download.
    mkdir -p "$tmp/go/src" "$tmp/go/cache" "$tmp/go/path" "$tmp/go/home"
    cp "$here/timing.go" "$tmp/go/src/timing.go"
    gobuild() {  # gobuild OUTPUT CGO [LDFLAGS]
        (cd "$tmp/go/src" && HOME="$tmp/go/home" GOCACHE="$tmp/go/cache" GOPATH="$tmp/go/path" \
            GO111MODULE=off GOFLAGS="" GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED="$2" \
            "$go" build -trimpath ${3:+-ldflags=$3} -o "$out/$1" timing.go) >"$tmp/go.log" 2>&1
    }
    if gobuild timing-go-static 0; then ok go-static timing-go-static
    else no go-static "go build failed: $(tail1 "$tmp/go.log")"; fi
    if gobuild timing-go-dynamic 1 -linkmode=external; then ok go-dynamic timing-go-dynamic
    else no go-dynamic "go build with cgo failed (needs gcc): $(tail1 "$tmp/go.log")"; fi
else
    no go-static "no go compiler here"
    no go-dynamic "no go compiler here"
fi

rustc=${RUSTC:-rustc}
if command -v "$rustc" >/dev/null 2>&1; then
    v=$("$rustc" --version 2>&1 | head -n 1)
    add versions rust "\"$(esc "$v")\""
    if (cd "$tmp" && TIMING_RUSTC_VERSION="$v" "$rustc" -O -o "$out/timing-rust" "$here/timing.rs") \
            >"$tmp/rustc.log" 2>&1; then
        ok rust timing-rust
        printf '%s\n' "$v" >"$out/timing-rust.version"
    else
        no rust "rustc failed: $(tail1 "$tmp/rustc.log")"
    fi
else
    no rust "no rustc here"
fi

printf '{"built": {%s}, "versions": {%s}, "missing": {%s}}\n' "$built" "$versions" "$missing" \
    >"$out/build.json.tmp" && mv "$out/build.json.tmp" "$out/build.json" || exit 1
echo "wrote $out/build.json"
exit $failed
