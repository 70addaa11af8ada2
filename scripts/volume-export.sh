#!/usr/bin/env bash
# Moving the service to another host, step 1: a consistent backup of the database, packed into one
# file. The backup is taken by `node scripts/db.ts backup` inside the service's container (SQLite's
# VACUUM INTO through a second connection: every committed transaction, the WAL's included, then
# verified), never by copying or tarring the live files, which misses what the -wal still holds.
# Step 2 on the other host: scripts/volume-import.sh FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: scripts/volume-export.sh [OUTPUT.tar.gz]
  OUTPUT   where to write the archive (default: ./app-export-<UTC time>.tar.gz)
Takes the backup through the running service (docker compose exec) or, when it is stopped, in a
throwaway container of it (docker compose run). Set COMPOSE_FILE for an overlay, e.g.
  COMPOSE_FILE=docker-compose.yml:docker-compose.prod.yml scripts/volume-export.sh
USAGE
}

case ${1-} in
  -h | --help) usage; exit 0 ;;
  -*) echo "volume-export: unknown option: $1" >&2; usage >&2; exit 2 ;;
esac
output=${1:-app-export-$(date -u +%Y%m%dT%H%M%SZ).tar.gz}
if [[ -e $output ]]; then
  echo "volume-export: $output already exists; choose another name" >&2
  exit 1
fi

# Inside the container: take and verify the backup (its report goes to stderr), then write a
# gzipped tar holding that one file to stdout.
# shellcheck disable=SC2016 # expanded by the container's shell
inside='set -eu
backup=$(node scripts/db.ts backup --json | node -e "process.stdout.write(JSON.parse(require(\"node:fs\").readFileSync(0, \"utf8\")).backup.path)")
echo "backup taken: $backup" >&2
tar -C "$(dirname "$backup")" -czf - "$(basename "$backup")"'

if [[ -n $(docker compose ps --status running --quiet app) ]]; then
  run=(docker compose exec -T app sh)
else
  echo "the service is not running: taking the backup in a throwaway container" >&2
  run=(scripts/compose-run.sh --no-deps -T --entrypoint sh app)
fi

partial="$output.partial"
trap 'rm -f "$partial"' EXIT
"${run[@]}" -c "$inside" >"$partial"
entries=$(tar -tzf "$partial")
mv "$partial" "$output"
echo "exported $output ($(wc -c <"$output" | tr -d ' ') bytes, holding $entries)"
echo "on the other host: scripts/volume-import.sh $(basename "$output")"
