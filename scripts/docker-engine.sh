#!/usr/bin/env bash
# Make a Docker engine answer for the container tests: start Debian's dockerd when it is
# installed but not running; with --install, install docker.io first (and debootstrap, which
# scripts/docker-base.sh needs where Docker Hub is unreachable). Idempotent; exits 1 when no
# engine can answer. The daemon keeps running afterwards (log: /var/log/pagecast-dockerd.log).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
if ! command -v dockerd >/dev/null 2>&1; then
    if [[ "${1:-}" != "--install" ]]; then
        echo "docker-engine: no dockerd (scripts/test.sh --docker installs Debian's docker.io)" >&2
        exit 1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap
fi
# Host networking is all the tests use: no bridge, no NAT, and the host's firewall untouched.
$SUDO sh -c 'nohup dockerd --iptables=false --ip-masq=false --bridge=none \
    --storage-driver=overlay2 >>/var/log/pagecast-dockerd.log 2>&1 </dev/null &'
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then exit 0; fi
    sleep 1
done
echo "docker-engine: dockerd did not answer within 60 s (see /var/log/pagecast-dockerd.log)" >&2
exit 1
