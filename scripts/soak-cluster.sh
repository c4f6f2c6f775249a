#!/usr/bin/env bash
# Longer cluster soak: tests/cluster_soak.rs (one redis-server, three pushwire nodes,
# browsers on every node, a backend per node pushing `/push ID` lines the whole time;
# per cycle a node killed with SIGKILL and restarted on its ports, then redis-server
# killed and restarted on its port; every push and frame checked as a ledger, presence
# convergence timed after each fault) on the release build, scaled up.
#
# Usage: scripts/soak-cluster.sh [CYCLES] [UIDS] [RATE]   (defaults: 6 cycles, 1000 uids,
#        500 pushes/s per backend)
#   SOAK_STEADY_MS  steady phase between faults (default 3000)
#   SOAK_DOWN_MS    how long a node or Redis stays down (default 2000)
# Prints the soak's figures (convergence times, reply latencies, the ledger's counts)
# and exits non-zero if any ledger rule or bound failed. CI runs the bounded version:
# `cargo test --test cluster_soak`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export SOAK_CYCLES=${1:-6} SOAK_UIDS=${2:-1000} SOAK_RATE=${3:-500}
export SOAK_STEADY_MS=${SOAK_STEADY_MS:-3000} SOAK_DOWN_MS=${SOAK_DOWN_MS:-2000}
exec cargo test --release --test cluster_soak cluster_soak_with -- --nocapture
