#!/usr/bin/env bash
# Moving the service to another host, step 2: puts the database from an archive written by
# scripts/volume-export.sh into this host's data volume. The archive's backup is copied into the
# backup volume, then `node scripts/db.ts restore` verifies it and renames it into place, with the
# service stopped (restore refuses while anything holds the database).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: scripts/volume-import.sh [--force] ARCHIVE.tar.gz
  --force  replace a database that is already there (restore keeps a backup of it first)
Stop the service first (docker compose stop app); start it afterwards (docker compose up -d).
Set COMPOSE_FILE for an overlay, e.g. COMPOSE_FILE=docker-compose.yml:docker-compose.prod.yml
USAGE
}

force=false
archive=""
while (($# > 0)); do
  case $1 in
    -f | --force) force=true ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "volume-import: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *)
      if [[ -n $archive ]]; then echo "volume-import: one archive at a time" >&2; exit 2; fi
      archive=$1
      ;;
  esac
  shift
done
if [[ -z $archive ]]; then usage >&2; exit 2; fi
if [[ ! -f $archive ]]; then
  echo "volume-import: no file at $archive" >&2
  exit 2
fi

# An export holds exactly one backup file at the top level: anything else is not ours to unpack.
entry=$(tar -tzf "$archive")
if [[ ! $entry =~ ^[A-Za-z0-9._-]+\.db$ ]]; then
  echo "volume-import: $archive is not an archive from volume-export.sh (it holds: $(echo "$entry" | head -3 | tr '\n' ' '))" >&2
  exit 1
fi

if [[ -n $(docker compose ps --status running --quiet app) ]]; then
  echo "volume-import: the service is running; stop it first: docker compose stop app" >&2
  exit 1
fi

# Inside a one-off container of the service, the archive on stdin.
# shellcheck disable=SC2016 # expanded by the container's shell
inside='set -eu
force=$1 entry=$2
data=$(dirname "$DATABASE_PATH")
if [ "$force" != true ] && [ -n "$(ls -A "$data")" ]; then
  echo "volume-import: $data already holds data:" >&2
  ls -l "$data" >&2
  echo "refusing to replace it; run again with --force to replace it (a backup of it is kept)" >&2
  exit 1
fi
mkdir -p "$BACKUP_DIR"
unpacked=$(mktemp -d "$BACKUP_DIR/.import.XXXXXX")
tar -C "$unpacked" -xzf -
if [ ! -e "$BACKUP_DIR/$entry" ]; then
  mv "$unpacked/$entry" "$BACKUP_DIR/$entry"
elif ! cmp -s "$unpacked/$entry" "$BACKUP_DIR/$entry"; then
  rm -r "$unpacked"
  echo "volume-import: a different $BACKUP_DIR/$entry already exists; not overwriting it" >&2
  exit 1
fi
rm -rf "$unpacked"
node scripts/db.ts restore "$BACKUP_DIR/$entry"'

scripts/compose-run.sh --no-deps -T --entrypoint sh app -c "$inside" volume-import "$force" "$entry" <"$archive"
echo "imported; start the service: docker compose up -d"
