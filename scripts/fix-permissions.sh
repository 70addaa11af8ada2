#!/usr/bin/env bash
# Makes the service's data and backup folders writable by the user the service runs as (uid 1000,
# `node`, in the image): the named volumes of docker-compose.yml, or ./data when the dev overlay
# bind-mounts it. chown runs as root in a throwaway container of the same service, so it reaches
# the volumes wherever they live (Docker Desktop's VM too) without sudo on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: scripts/fix-permissions.sh [--dry-run] [--uid N] [--gid N]
  --dry-run   only list what the service's user does not own or cannot write; exit 1 if anything
  --uid N     the uid to own the files (default 1000, the image's `node` user)
  --gid N     the gid (default: the uid)
The Compose files are Compose's own: set COMPOSE_FILE for an overlay, e.g. for the dev overlay:
  COMPOSE_FILE=docker-compose.yml:docker-compose.dev.yml scripts/fix-permissions.sh --uid "$(id -u)"
USAGE
}

uid=1000
gid=""
dry_run=false
while (($# > 0)); do
  case $1 in
    -n | --dry-run) dry_run=true ;;
    --uid) uid=${2-}; shift ;;
    --gid) gid=${2-}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fix-permissions: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
gid=${gid:-$uid}
if [[ ! $uid =~ ^[0-9]+$ || ! $gid =~ ^[0-9]+$ ]]; then
  echo "fix-permissions: --uid and --gid take numbers, got uid=\"$uid\" gid=\"$gid\"" >&2
  exit 2
fi

# Runs inside the container, where DATABASE_PATH and BACKUP_DIR say where the folders are. Prints
# "uid:gid mode path" for each entry the service's user does not own or cannot write.
# shellcheck disable=SC2016 # expanded by the container's shell, not this one
inside='
set -eu
uid=$1 gid=$2 dry_run=$3
dirs=""
for dir in "$(dirname "$DATABASE_PATH")" "$BACKUP_DIR"; do
  if [ -d "$dir" ]; then dirs="$dirs $dir"; fi
done
# The folder names hold no spaces: $dirs is split on purpose.
wrong=$(find $dirs \( ! -uid "$uid" -o ! -gid "$gid" -o ! -perm -u+w \) -printf "%U:%G %M %p\n")
if [ -z "$wrong" ]; then
  echo "nothing to fix: every file in$dirs belongs to $uid:$gid and is writable by it"
  exit 0
fi
echo "not owned by $uid:$gid or not writable by it:"
echo "$wrong"
if [ "$dry_run" = true ]; then
  echo "dry run: nothing changed (run without --dry-run to fix)"
  exit 1
fi
chown -R "$uid:$gid" $dirs
chmod -R u+rwX $dirs
echo "fixed: chown -R $uid:$gid$dirs; chmod -R u+rwX$dirs"
'

# The prod overlay drops every capability: give back only what chown needs to reach every file.
exec scripts/compose-run.sh --no-deps -T --user 0:0 \
  --cap-add CHOWN --cap-add FOWNER --cap-add DAC_OVERRIDE \
  --entrypoint sh app -c "$inside" fix-permissions "$uid" "$gid" "$dry_run"
