#!/usr/bin/env bash
# GPT-2 on several nodes with OpenMPI and a hostfile: one process per GPU on every node, NCCL between them.
#   HOSTFILE=hosts MODEL=350M bash scripts/run_multinode_hostfile.sh
# hosts has one line per node: "node1 slots=8". Needs passwordless ssh from this node to the others, and
# the repository (with train_gpt2cu built with MPI) and the data at the same path on every node (a
# shared filesystem). Every rank finds its GPU from its rank within the node.
# Settings: MODEL (124M, 350M, 774M, 1558M), GPUS_PER_NODE [8], NGPU [nodes * GPUS_PER_NODE], and the
# recipe's variables (B, TOTAL, STEPS, LR, DATA, OUT, ...; scripts/README.md). Network: NCCL_SOCKET_IFNAME,
# NCCL_IB_HCA, NCCL_DEBUG=INFO are passed on to every rank when set.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE=${HOSTFILE:?set HOSTFILE to a file with lines \"hostname slots=GPUS\"}
[ -f "$HOSTFILE" ] || { echo "error: HOSTFILE=$HOSTFILE does not exist"; exit 1; }
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
NODES=$(grep -cvE '^[[:space:]]*(#|$)' "$HOSTFILE")
NGPU=${NGPU:-$((NODES * GPUS_PER_NODE))}
MODEL=${MODEL:-124M}
source scripts/run_common.sh
command -v mpirun >/dev/null || die "mpirun not found (apt install openmpi-bin libopenmpi-dev, then make train_gpt2cu)"
EXPORTS=(-x PATH -x LD_LIBRARY_PATH)
for v in NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA NCCL_IB_DISABLE NCCL_NET_GDR_LEVEL LLMC_NCCL_TIMEOUT; do
    [ -n "${!v:-}" ] && EXPORTS+=(-x "$v")
done
echo "$NODES node(s) x $GPUS_PER_NODE GPU(s) = $NGPU ranks"
# shellcheck disable=SC2086
exec mpirun -np "$NGPU" --hostfile "$HOSTFILE" --map-by "ppr:$GPUS_PER_NODE:node" --bind-to none \
    "${EXPORTS[@]}" ${MPIRUN_ARGS:-} "$BIN" "${ARGS[@]}"
