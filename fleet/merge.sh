#!/bin/sh
# Joins the finished shards of one fleet run into one run directory (docs/fleet.md).
#
#   merge.sh SHARDS_DIR OUT_RUN_DIR [quba merge flags, e.g. --partial]
#
# SHARDS_DIR is QUBA_SHARED/shards/QUBA_RUN_ID as run-shard.sh filled it. Each
# shard-K-of-N.qlog is ingested into its own run directory under
# OUT_RUN_DIR.shards/ (reportable alone), then `quba merge` joins them, refusing
# shards that do not belong together and naming missing ones. QUBA names the
# host binary (default: quba on PATH).
set -eu
src=$1
out=$2
shift 2
quba=${QUBA:-quba}
runs="$out.shards"
mkdir -p "$runs"
found=0
for f in "$src"/shard-*-of-*.qlog; do
  [ -e "$f" ] || continue
  found=1
  d="$runs/$(basename "$f" .qlog)"
  # Rerunning the merge (e.g. after the last shard came in) keeps what was ingested.
  [ -f "$d/manifest.json" ] || "$quba" ingest --run-dir "$d" < "$f"
done
if [ "$found" = 0 ]; then
  echo "merge.sh: no finished shard (shard-K-of-N.qlog) in $src" >&2
  exit 1
fi
"$quba" merge "$runs"/shard-* --out "$out" "$@"
"$quba" report "$out"
