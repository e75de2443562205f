#!/usr/bin/env bash
# Fetches the ONNX Runtime C/C++ headers from Debian's libonnxruntime-dev package (trixie) into
# a project-local folder, without touching the machine's apt configuration.
#
# Usage: scripts/fetch-ort-headers.sh DEST
# Result: DEST/include/onnxruntime/onnxruntime_cxx_api.h (and the rest of the headers).
#
# The mirror is the one this machine's apt already uses (read from its sources), so no host
# name lives in this repository. The C API is versioned and append-only, so these headers work
# against the newer runtime library shipped by onnxruntime-node.
set -euo pipefail
dest=${1:?usage: fetch-ort-headers.sh DEST}
suite=${BGE_M3_ORT_HEADERS_SUITE:-trixie}

if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "fetch-ort-headers: apt-get/dpkg not found; set ORT_ROOT to an ONNX Runtime release (with include/ and lib/)" >&2
  exit 3
fi

# The first Debian mirror URI configured on this machine (deb822 .sources or one-line .list).
uri=$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
         grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
           sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } | grep -E '/debian/?$' | head -n 1 || true)
if [ -z "$uri" ]; then
  echo "fetch-ort-headers: no Debian mirror found in /etc/apt/sources.list*; set ORT_ROOT or install libonnxruntime-dev" >&2
  exit 3
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/etc/sources.list.d" "$work/etc/preferences.d"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
opt="[signed-by=$keyring]"
[ -r "$keyring" ] || opt=""
echo "deb $opt $uri $suite main" > "$work/etc/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/etc/sources.list" -o "Dir::Etc::SourceParts=$work/etc/sources.list.d"
          -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
          -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
          -o "APT::Architecture=$(dpkg --print-architecture)" -o "Acquire::Languages=none")
echo "fetch-ort-headers: fetching libonnxruntime-dev ($suite) index" >&2
apt-get -qq "${apt_opts[@]}" update >&2
(cd "$work" && apt-get -qq "${apt_opts[@]}" download libonnxruntime-dev >&2)
deb=$(ls "$work"/libonnxruntime-dev_*.deb | head -n 1)
dpkg -x "$deb" "$work/root"
mkdir -p "$dest/include"
rm -rf "$dest/include/onnxruntime"
cp -r "$work/root/usr/include/onnxruntime" "$dest/include/onnxruntime"
echo "$(basename "$deb")" > "$dest/SOURCE"
echo "fetch-ort-headers: headers in $dest/include/onnxruntime (from $(basename "$deb"))" >&2
