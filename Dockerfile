# The service's image. Stages: `base` (Node, /app, the package files), `dev` (every dependency, for
# docker-compose.dev.yml), `prod-deps` (production dependencies only) and `runtime`, the default
# target: prod node_modules plus src/, migrations/, scripts/ and the package files, run as the
# unprivileged `node` user (uid 1000).
#
# Layer order: the package files and `npm ci` come before any source, so a change under src/ only
# re-runs the final COPY layers (seconds); `npm ci` runs again only when the lockfile changes.
#
# No compiler stage: better-sqlite3 ships prebuilt binaries for glibc and musl on x64 and arm64,
# and package.json denies its node-gyp script (allowScripts), so `npm ci` compiles nothing.

# Node's major and Debian's release are pinned; `docker pull` brings the patch updates.
FROM node:24-bookworm-slim AS base
WORKDIR /app
COPY package.json package-lock.json ./

FROM base AS dev
ENV NODE_ENV=development DATABASE_PATH=/app/data/app.db BACKUP_DIR=/app/data/backups
RUN npm ci --no-audit --no-fund --no-update-notifier && npm cache clean --force \
 && mkdir -p /app/data && chown node:node /app/data
COPY . .
USER node
EXPOSE 3000
# node stays the process that receives SIGTERM (exec); its JSON lines go through pino-pretty.
CMD ["bash", "-c", "exec node --watch-path=src --watch-path=migrations src/main.ts > >(exec node_modules/.bin/pino-pretty)"]

FROM base AS prod-deps
# Loading the native module here fails the build, not the container, if it does not work.
RUN npm ci --omit=dev --no-audit --no-fund --no-update-notifier && npm cache clean --force \
 && node -e "new (require('better-sqlite3'))(':memory:').close()"

FROM base AS runtime
LABEL org.opencontainers.image.title="express-sqlite-template" \
      org.opencontainers.image.description="Express 5 + TypeScript service over SQLite (WAL): transactional migrations with verified backups, /health, graceful shutdown" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/node:24-bookworm-slim"
ENV NODE_ENV=production DATABASE_PATH=/app/data/app.db BACKUP_DIR=/app/backups
# PostgreSQL's client programs (pg_dump, pg_restore, psql) for backups, restores and drills when
# DATABASE_URL names a PostgreSQL server: `--build-arg POSTGRES_CLIENT=15` (docker-compose.postgres.yml
# sets it). pg_dump refuses a server newer than itself, so this must be at least the server's major;
# bookworm carries 15. Empty by default: the SQLite image stays without them and the Perl their
# wrapper scripts need (about 55 MB).
ARG POSTGRES_CLIENT=""
# hadolint ignore=DL3008
RUN if [ -n "$POSTGRES_CLIENT" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends "postgresql-client-${POSTGRES_CLIENT}" \
      && rm -rf /var/lib/apt/lists/* \
      && "/usr/lib/postgresql/${POSTGRES_CLIENT}/bin/pg_dump" --version; \
    fi
# Mount points for the named volumes: Docker copies this ownership into a new, empty volume.
RUN mkdir -p /app/data /app/backups && chown node:node /app/data /app/backups
# Node's compile cache, filled at build time (below): a new container's first start skips compiling
# and type-stripping the ~600 modules it loads (docs/performance.md).
ENV NODE_COMPILE_CACHE=/app/.compile-cache
# Metadata before the COPY lines: a source change then rebuilds only the layers from `COPY src` on.
EXPOSE 3000
# /health answers 503 when the database cannot serve; the script's own 3 s timeout reports a hung
# server as unhealthy before Docker's 5 s timeout kills it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "scripts/healthcheck.ts"]
# node itself, never `npm start`: npm does not pass SIGTERM on reliably and adds a process. Run
# it under an init (compose `init: true`, or `docker run --init`) so signals and zombies are handled.
CMD ["node", "src/main.ts"]
COPY --from=prod-deps /app/node_modules ./node_modules
COPY migrations ./migrations
COPY scripts ./scripts
COPY src ./src
# Node keeps a cache per user id, so one start as `node` fills it; root then owns it, read-only:
# like the code, the service can read it but never rewrite it.
RUN mkdir "$NODE_COMPILE_CACHE" && chown node:node "$NODE_COMPILE_CACHE" \
 && setpriv --reuid=node --regid=node --init-groups node scripts/warm-compile-cache.ts \
 && chown -R root:root "$NODE_COMPILE_CACHE" && chmod -R a+rX,go-w "$NODE_COMPILE_CACHE"
# COPY ignores USER: the code stays owned by root, so the service can write its data, never its code.
USER node
