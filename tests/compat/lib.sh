# Shared by tests/compat/build-*.sh (sourced): finding and unpacking a source snapshot of the
# third-party directory.

# snapshot_tarball GLOB: the first file matching GLOB in $third_party, or a one-line error.
snapshot_tarball() {
  local found
  found=$(ls "$third_party"/$1 2>/dev/null | head -n 1 || true)
  [ -n "$found" ] || { echo "$(basename "$0"): no $1 in $third_party (set KVMS_THIRD_PARTY)" >&2; return 1; }
  echo "$found"
}

# extract_snapshot TARBALL TOP DEST: unpacks TARBALL (whose one top directory is TOP) to DEST, once:
# a DEST/.extracted marker makes later runs keep DEST (and the builds in it) as it is; an interrupted
# unpack leaves no marker and is redone from scratch.
extract_snapshot() {
  local tarball=$1 top=$2 dest=$3
  [ -f "$dest/.extracted" ] && return 0
  rm -rf "$dest" "$dest.tmp"
  mkdir -p "$dest.tmp"
  tar -xJf "$tarball" -C "$dest.tmp"
  mv "$dest.tmp/$top" "$dest"
  rmdir "$dest.tmp"
  touch "$dest/.extracted"
}
