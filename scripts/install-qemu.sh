#!/usr/bin/env bash
# Installs what the QEMU firmware tests need: Debian's qemu-system-arm (from <codename>-backports,
# because the image's qemu-utils already comes from there and bookworm's own qemu-system-arm
# conflicts with it) and the thumbv7em-none-eabihf Rust target. Idempotent: does nothing that
# is already done. Where the backports suite is not configured, its entry is derived from the
# machine's own apt sources (the Debian mirror and components already in use), so no mirror
# is named here.
set -euo pipefail

rustup target add thumbv7em-none-eabihf >/dev/null 2>&1 || rustup target add thumbv7em-none-eabihf

if command -v qemu-system-arm >/dev/null 2>&1; then
    qemu-system-arm --version | head -1
    exit 0
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

# shellcheck disable=SC1091
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
if [ -z "$codename" ]; then
    echo "install-qemu: /etc/os-release names no VERSION_CODENAME; install qemu-system-arm by hand" >&2
    exit 1
fi
backports="$codename-backports"

sources=()
[ -f /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sources+=("$f")
done

# Prints "URI<TAB>components<TAB>signed-by" of the first enabled source for suite $1 (exactly
# that suite, so the security and updates archives are not taken for the main mirror), from
# one-line (sources.list) and deb822 (*.sources) files alike.
find_mirror() {
    local suite=$1 f found
    for f in "${sources[@]}"; do
        case "$f" in
        *.sources)
            found="$(awk -v suite="$suite" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ") && uris != "") {
                        split(uris, u, " ")
                        printf "%s\t%s\t%s\n", u[1], comps, signed
                        found = 1
                        exit
                    }
                    types = uris = suites = comps = signed = key = ""
                    enabled = "yes"
                }
                BEGIN { enabled = "yes" }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ {
                    # A continuation line: only multi-line Signed-By keys have them here.
                    next
                }
                {
                    key = tolower($1); sub(/:$/, "", key)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "components") comps = val
                    else if (key == "signed-by") signed = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                END { if (!found) flush() }
            ' "$f")"
            ;;
        *)
            found="$(awk -v suite="$suite" '
                $1 != "deb" { next }
                {
                    i = 2; signed = ""
                    if ($i ~ /^\[/) {
                        # Options in brackets, possibly spread over several fields.
                        while (i <= NF) {
                            if ($i ~ /^\[?signed-by=/) { signed = $i; sub(/^\[?signed-by=/, "", signed); sub(/\]$/, "", signed) }
                            if ($i ~ /\]$/) { i++; break }
                            i++
                        }
                    }
                    if ($(i + 1) != suite) next
                    comps = ""
                    for (j = i + 2; j <= NF && $j !~ /^#/; j++) comps = comps (comps == "" ? "" : " ") $j
                    printf "%s\t%s\t%s\n", $i, comps, signed
                    exit
                }
            ' "$f")"
            ;;
        esac
        if [ -n "$found" ]; then
            echo "$found"
            return
        fi
    done
}

if [ -z "$(find_mirror "$backports")" ]; then
    mirror="$(find_mirror "$codename")"
    if [ -z "$mirror" ]; then
        echo "install-qemu: no apt source for suite $codename to derive $backports from" >&2
        exit 1
    fi
    IFS=$'\t' read -r uri comps signed <<<"$mirror"
    entry="/etc/apt/sources.list.d/$backports.sources"
    echo "install-qemu: adding $backports ($uri, ${comps:-main}) as $entry"
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: $backports"
        echo "Components: ${comps:-main}"
        [ -n "$signed" ] && echo "Signed-By: $signed"
    } | $sudo tee "$entry" >/dev/null
fi

$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    -t "$backports" qemu-system-arm >/dev/null
qemu-system-arm --version | head -1
