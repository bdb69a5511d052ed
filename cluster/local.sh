#!/usr/bin/env bash
# Start, inspect and stop a real multi-node Ray cluster on this machine (127.0.0.1).
#
#   cluster/local.sh start [N_WORKERS=2] [CPUS_PER_NODE=1]   head + N workers, token auth
#   cluster/local.sh status                                   exit 0 if running
#   eval "$(cluster/local.sh env)"                            RAY_ADDRESS, RAY_AUTH_* for a client
#   cluster/local.sh stop                                     kill exactly the recorded processes
#
# State lives in $ARNAS_CLUSTER_DIR (default /tmp/arnas-local-cluster): token (mode 600),
# address, dashboard, node_ip, temp_dir, pids, logs/. `stop` never runs `ray stop`.
# The work is done by cluster/local_cluster.py (class LocalCluster), which tests use too.
# PYTHON selects the interpreter (default: the repository's .venv, else python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$here/../.venv/bin/python" ]]; then
        PYTHON="$here/../.venv/bin/python"
    else
        PYTHON=python3
    fi
fi

case "${1:-}" in
    start | stop | status | env) ;;
    *)
        echo "usage: $0 start [N_WORKERS=2] [CPUS_PER_NODE=1] | stop | status | env" >&2
        exit 2
        ;;
esac

exec "$PYTHON" "$here/local_cluster.py" "$@"
