#!/bin/bash
# A quba-edge run split over a Slurm job array: array task K runs shard K/N,
# N = the number of tasks (docs/fleet.md). Submit from the repository root:
#
#   QUBA_SHARED=/shared/quba QUBA_RUN_ID=cnn-2026-12-01 sbatch fleet/slurm-array.sh
#   # when all tasks are done (or: sbatch --dependency=afterok:<jobid> …):
#   fleet/merge.sh /shared/quba/shards/cnn-2026-12-01 runs/cnn-2026-12-01
#
# Change --array for another N; it must stay 0-(N-1) with step 1.
#SBATCH --job-name=quba-shard
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=12:00:00
#SBATCH --output=quba-shard-%A_%a.log
set -euo pipefail

# sbatch passes the submitting shell's environment; these are the defaults.
export QUBA_SHARED=${QUBA_SHARED:-$HOME/quba}
export QUBA_MODEL=${QUBA_MODEL:-models/cnn-baseline.fp32.onnx}
export QUBA_RUN_ID=${QUBA_RUN_ID:-quba-$SLURM_ARRAY_JOB_ID}
export QUBA_ARGS=${QUBA_ARGS:---data synth --per-class 10}

# One shard per task, so the array must be exactly 0..N-1: with 1-4 or a
# step, task ids and shard indices would disagree and a shard would be lost.
if [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ] || [ "${SLURM_ARRAY_TASK_MAX:-}" != "$((SLURM_ARRAY_TASK_COUNT - 1))" ]; then
  echo "slurm-array.sh: --array must be 0-(N-1) with step 1 (got ${SLURM_ARRAY_TASK_MIN:-?}-${SLURM_ARRAY_TASK_MAX:-?}, $SLURM_ARRAY_TASK_COUNT tasks)" >&2
  exit 2
fi
# sbatch runs a copy of this script from its spool directory; the repository is the submit directory.
exec sh "$SLURM_SUBMIT_DIR/fleet/run-shard.sh" "$SLURM_ARRAY_TASK_ID" "$SLURM_ARRAY_TASK_COUNT"
