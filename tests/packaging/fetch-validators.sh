#!/usr/bin/env bash
# Installs the schema validators of tests/packaging/validators/ (package.json and its lock: the
# Kubernetes API schemas of kubernetes-models, the Compose specification's schema, ajv, yaml) with
# `npm ci` into .cache/packaging-validators, and prints its node_modules path on stdout. Nothing is
# fetched when the installed lock is the committed one, so tests/packaging/run.sh then runs
# offline. Called by scripts/setup.sh and, when missing, by tests/packaging/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source_dir=tests/packaging/validators
prefix=${KVMS_VALIDATORS_PREFIX:-$PWD/.cache/packaging-validators}

if ! cmp -s "$source_dir/package-lock.json" "$prefix/package-lock.json" || [ ! -d "$prefix/node_modules" ]; then
  echo "fetch-validators: npm ci into $prefix" >&2
  mkdir -p "$prefix"
  cp "$source_dir/package.json" "$source_dir/package-lock.json" "$prefix/"
  # A failed install leaves no lock behind, so that the next run tries again.
  npm ci --prefix "$prefix" --no-audit --no-fund --loglevel=error >&2 || { rm -f "$prefix/package-lock.json"; exit 1; }
fi
echo "$prefix/node_modules"
