#!/bin/sh
# One shard of a quba-edge run: what every fleet recipe executes (docs/fleet.md).
#
#   run-shard.sh K N        K from 0 to N-1 (the scheduler's index, unchanged)
#
# Environment:
#   QUBA_SHARED  shared volume: bin/quba-device, the model, and shards/ for the output
#   QUBA_MODEL   the model, relative to QUBA_SHARED (its sidecar <model>.json beside it)
#   QUBA_RUN_ID  names the run: every shard carries it, and shards/QUBA_RUN_ID/ holds them
#   QUBA_ARGS    further quba-device flags, identical for every shard (split on spaces)
#   QUBA_DEVICE  the device binary (default: QUBA_SHARED/bin/quba-device)
set -eu
k=$1
n=$2
dir="$QUBA_SHARED/shards/$QUBA_RUN_ID"
out="$dir/shard-$k-of-$n.qlog"
mkdir -p "$dir"
# --out FILE appends, so a retried pod or task would add a second run to the
# first one's frames; each attempt starts a fresh .part file instead.
rm -f "$out.part"
# shellcheck disable=SC2086  # QUBA_ARGS is a list of flags
"${QUBA_DEVICE:-$QUBA_SHARED/bin/quba-device}" run --model "$QUBA_SHARED/$QUBA_MODEL" --run-id "$QUBA_RUN_ID" \
  --shard "$k/$n" ${QUBA_ARGS:-} --out "$out.part"
# Only a shard that finished gets the name merge.sh collects; a killed one
# stays .part and is reported missing.
mv "$out.part" "$out"
echo "shard $k/$n of $QUBA_RUN_ID: $out"
