#!/usr/bin/env bash
# Run COMMAND against private lab K (1-9), so several people can use the lab at once.
#   lab/instance.sh K COMMAND [ARGS...]
# Lab K lives in its own controller network namespace `mactlK` (its bridge, the
# controller address 198.18.0.1 and every node address are private to it), its own
# state dir /run/multiall-labK, ssh control sockets and lock; node namespaces and
# mounts are named `maK-*`. Without this wrapper the lab is the default one (`ma-*`).
set -euo pipefail
k=${1:-}
if [[ ! $k =~ ^[1-9]$ ]] || [[ $# -lt 2 ]]; then
    echo "usage: lab/instance.sh K(1-9) COMMAND [ARGS...]" >&2
    exit 2
fi
shift
ctl="mactl$k"
if [[ ! -e /run/netns/$ctl ]]; then
    ip netns add "$ctl"
    ip -n "$ctl" link set lo up
fi
export MULTIALL_LAB_PREFIX="ma$k-" MULTIALL_LAB_DIR="/run/multiall-lab$k"
# The host's network namespace (this shell's pid stays that of flock below, which
# does not enter the lab's): host-wide settings such as the ARP table limits live there.
export MULTIALL_HOST_NETNS="/proc/$$/ns/net"
export ANSIBLE_SSH_CONTROL_PATH_DIR="/run/multiall-lab$k-cp"
mkdir -p "$MULTIALL_LAB_DIR" "$ANSIBLE_SSH_CONTROL_PATH_DIR"
# nsenter switches only the network namespace: the lab's own `ip netns add`
# bind mounts must stay visible to every later command (ip netns exec would hide them).
exec flock "/run/multiall-lab$k.lock" nsenter --net="/run/netns/$ctl" -- "$@"
