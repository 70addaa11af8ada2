#!/usr/bin/env bash
# `docker compose run` of a one-off container for the other scripts here, removed afterwards,
# keeping its exit status: with `--rm`, Podman's Docker API removes the container before Compose
# reads the status and reports 0, so the scripts would take a refusal for success.
# usage: scripts/compose-run.sh [docker compose run options] SERVICE [COMMAND...]
set -euo pipefail
name="oneoff-$$-$RANDOM"
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker compose run --name "$name" "$@"
