#!/bin/sh
# promtool (Prometheus' rule checker) for the alert rule tests, into the folder given
# (default .venv/bin): a promtool already on PATH is linked; otherwise Debian's `prometheus`
# package is fetched with apt's own configuration (apt-get download, no root needed) and
# only promtool is unpacked from it. Nothing is installed system-wide.
set -eu
dest="${1:-.venv/bin}"
mkdir -p "$dest"
if [ -x "$dest/promtool" ]; then
    exit 0
fi
if found="$(command -v promtool 2>/dev/null)"; then
    ln -sf "$found" "$dest/promtool"
    echo "promtool: linked $found"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool: not found and no apt-get here: install Prometheus' promtool and put it on PATH" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() {
    (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1)
}
if ! download; then
    # A fresh machine or container often has no package lists yet: fetch them if we may.
    if [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && download; then
        :
    else
        echo "promtool: \`apt-get download prometheus\` failed (no package lists? run apt-get update)" >&2
        exit 1
    fi
fi
deb="$(ls "$work"/prometheus_*.deb)"
if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/promtool > "$work/promtool"
else
    (cd "$work" && ar x "$deb" && tar -xOf data.tar.* ./usr/bin/promtool > "$work/promtool")
fi
chmod +x "$work/promtool"
"$work/promtool" --version >/dev/null
mv "$work/promtool" "$dest/promtool"
echo "promtool: $("$dest/promtool" --version 2>&1 | head -n 1) in $dest"
