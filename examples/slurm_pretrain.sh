#!/bin/bash
# Multi-node Uni-Mol2 pretraining (DDP over NCCL) under SLURM: one torchrun
# per node, one rank per GPU, rendezvous on the first node of the job.
#
#   STORE=/shared/pubchem_store OUT=/shared/runs/84M \
#       sbatch --nodes=4 examples/slurm_pretrain.sh [unimol2 pretrain flags]
#
# STORE (a store of unimol2 build-hdf5) and OUT must be on a file system
# that every node sees: rank 0 writes the checkpoints into OUT, and on a
# resume every rank reads the newest one. Submitting the script again with
# the same OUT (or a requeue after a preemption) resumes from its newest
# checkpoint; the number of nodes and GPUs must then stay the same. Flags
# given after the script name are passed on to unimol2 pretrain and win over
# the ones below (e.g. --config run.toml --max-steps 500000 --max-tokens N:
# the batch size is per rank and micro-batch).
#SBATCH --job-name=unimol2-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${STORE:?set STORE to the store directory (unimol2 build-hdf5)}"
OUT=${OUT:-runs/pretrain}
NPROC_PER_NODE=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
# CPU threads of each rank: the task's cores shared by its ranks.
THREADS=$(( ${SLURM_CPUS_PER_TASK:-$NPROC_PER_NODE} / NPROC_PER_NODE ))
export OMP_NUM_THREADS=$(( THREADS > 0 ? THREADS : 1 ))

echo "pretraining on $SLURM_NNODES nodes x $NPROC_PER_NODE ranks," \
    "rendezvous $MASTER_ADDR:$MASTER_PORT, run directory $OUT"
srun --kill-on-bad-exit=1 torchrun \
    --nnodes="$SLURM_NNODES" --nproc_per_node="$NPROC_PER_NODE" \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d \
    --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
    -m pyg_unimol2.pretrain --store "$STORE" --out "$OUT" \
    --preset 84M --precision bf16 --num-workers 4 --no-progress "$@"
