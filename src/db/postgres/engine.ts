// The PostgreSQL engine: the database DATABASE_URL names, served through a pg Pool that several
// processes (and machines) may share. Implements StorageEngine and Storage (../storage.ts) with the
// modules beside it. Loaded only when DATABASE_URL is set: nothing else imports pg.
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Kysely, PostgresDialect } from "kysely";
import type pg from "pg";
import type { Logger } from "pino";
import type { PostgresSettings } from "../../config.ts";
import type { MigrationContext } from "../migrator.ts";
import { type DB, MIGRATIONS_TABLE } from "../schema.ts";
import { type Storage, type StorageEngine, StorageStartupError } from "../storage.ts";
import {
  backupNameOf,
  DUMP_CHECK,
  type PostgresTarget,
  takeDump,
  verifyDumpFile,
  verifyLiveDatabase,
} from "./dump.ts";
import { inPostgresMigrationTransaction } from "./migration.ts";
import { createPool, kyselyPool, type SessionSettings } from "./pool.ts";
import { restoreDump } from "./restore.ts";
import {
  countTables,
  createDatabase,
  dropDatabase,
  holdsTables,
  openSession,
  readServerVersion,
  type SessionOptions,
  toStartupError,
  withSession,
} from "./session.ts";
import { createHealthReader } from "./stats.ts";
import { findTools, firstLine, type PgTools, runTool } from "./tools.ts";
import {
  type DatabaseUrl,
  describeDatabaseUrl,
  formatDatabaseUrl,
  libpqConnection,
  parseDatabaseUrl,
} from "./url.ts";

export interface PostgresEngineOptions {
  /** DATABASE_URL: postgres:// or postgresql://, naming the database. */
  url: string;
  settings: PostgresSettings;
  /** How long close() waits for queries still running to hand their connections back. */
  closeTimeoutMs?: number;
  /** Where the pool reports connections it lost while idle. */
  logger?: Logger | undefined;
  /** Largest size of the schema's tables (their heaps) whose rows /health counts, a scan each. */
  countRowsUpToBytes?: number;
}

const MIGRATION_CONTEXT: MigrationContext = {
  engine: "postgres",
  // BY DEFAULT, not ALWAYS: a restore or a copy of rows from elsewhere may insert explicit ids
  // (GENERATED ALWAYS refuses them, 428C9). A sequence never hands out an id twice.
  ids: { type: "bigint", primaryKey: (column) => column.primaryKey().generatedByDefaultAsIdentity() },
};

/** The PostgreSQL Storage also hands out its pool, for tests and tools that watch connections. */
export interface PostgresStorage extends Storage {
  readonly pool: pg.Pool;
}

export interface PostgresEngine extends StorageEngine {
  open(): Promise<PostgresStorage>;
}

export function createPostgresEngine(options: PostgresEngineOptions): PostgresEngine {
  const parsed = parseDatabaseUrl(options.url);
  if (typeof parsed === "string") throw new StorageStartupError(`invalid DATABASE_URL: ${parsed}`);
  const url: DatabaseUrl = parsed;
  const { settings } = options;
  // The engine's own sessions (checks, counts, CREATE DATABASE): no statement timeout, as a count
  // or a check of a large table may take long; named apart from the service's in pg_stat_activity.
  const sessions: SessionOptions = {
    url,
    connectTimeoutMs: settings.connectTimeoutMs,
    session: {
      statementTimeoutMs: 0,
      lockTimeoutMs: settings.lockTimeoutMs,
      idleInTransactionTimeoutMs: 0,
      applicationName: `${settings.applicationName}:admin`.slice(0, 63),
    },
  };
  let tools: Promise<PgTools> | undefined;
  const target: PostgresTarget = {
    url,
    sessions,
    backupName: backupNameOf(url.database),
    shown: describeDatabaseUrl(url),
    tools() {
      tools ??= withSession(sessions, readServerVersion)
        .then(({ major, version }) => findTools(major, version))
        .catch((error: unknown) => {
          tools = undefined;
          throw error;
        });
      return tools;
    },
  };

  const engine: PostgresEngine = {
    name: "postgres",
    target: target.shown,
    database: target.backupName,
    verification: [DUMP_CHECK],
    migrationContext: MIGRATION_CONTEXT,

    async open() {
      return openStorage(engine, url, options, sessions);
    },

    async exists() {
      try {
        return await withSession(sessions, (client) => holdsTables(client));
      } catch (error) {
        if ((error as { cause?: { code?: string } }).cause?.code === "3D000") return false;
        throw error;
      }
    },

    backup(backupOptions) {
      return takeDump(target, backupOptions);
    },

    async verify(file) {
      return file ? verifyDumpFile(await target.tools(), file) : verifyLiveDatabase(target);
    },

    restore(restoreOptions) {
      return restoreDump(target, restoreOptions);
    },

    async openScratch(backup) {
      const name = scratchDatabaseName(url.database);
      await withSession(sessions, (client) => createDatabase(client, name)).catch((error: unknown) => {
        throw scratchError(error, url, name);
      });
      const drop = () => withSession(sessions, (client) => dropDatabase(client, name));
      try {
        if (backup) await restoreInto(await target.tools(), url, name, backup.path);
        const scratch = createPostgresEngine({ ...options, url: formatDatabaseUrl(url, { database: name }) });
        const storage = await scratch.open();
        return {
          engine: scratch,
          storage,
          async dispose() {
            await storage.close();
            await drop();
          },
        };
      } catch (error) {
        await drop().catch(() => {});
        throw error;
      }
    },

    countRows() {
      return withSession(sessions, countTables);
    },
  };
  return engine;
}

async function openStorage(
  engine: StorageEngine,
  url: DatabaseUrl,
  { settings, logger, closeTimeoutMs = 10_000, countRowsUpToBytes = 16 * 2 ** 20 }: PostgresEngineOptions,
  sessions: SessionOptions,
): Promise<PostgresStorage> {
  const pool = createPool(url, settings, logger);
  // One query now: a wrong password or a missing database stops the service at startup with one
  // line, not at the first request.
  try {
    await pool.query("SELECT 1");
  } catch (error) {
    await pool.end().catch(() => {});
    throw toStartupError(error, url);
  }
  const kysely = new Kysely<DB>({ dialect: new PostgresDialect({ pool: kyselyPool(pool) }) });
  const readHealth = createHealthReader(pool, engine.target, settings.poolMax);
  let closing: Promise<void> | undefined;
  let recordExists = false;

  return {
    engine,
    kysely,
    pool,
    readHealth,
    // /health asks on every probe: once the record table exists, one query instead of two.
    async readAppliedMigrations() {
      if (!recordExists) {
        const { rows } = await pool.query<{ present: boolean }>(
          "SELECT to_regclass($1) IS NOT NULL AS present",
          [MIGRATIONS_TABLE],
        );
        if (!rows[0]!.present) return [];
        recordExists = true;
      }
      try {
        const names = await pool.query<{ name: string }>(
          `SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY name`,
        );
        return names.rows.map((row) => row.name);
      } catch (error) {
        // undefined_table: gone since (a restore of a database that had none).
        if ((error as { code?: string }).code !== "42P01") throw error;
        recordExists = false;
        return [];
      }
    },
    // Exact counts while the tables are small: a count is a scan, and the probes that arrive while
    // status.ts refreshes them (every few seconds) wait for it. Estimates (reltuples) would be
    // instant but lag behind writes; the same numbers on both engines are worth more here.
    async countRowsIfSmall() {
      const { rows } = await pool.query<{ size: number }>(
        `SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::int8 AS size FROM pg_class c
          WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')`,
      );
      return rows[0]!.size <= countRowsUpToBytes ? countTables(pool) : null;
    },
    async inMigrationTransaction(work, { lockTimeoutMs, logger: migrationLogger }) {
      const session: SessionSettings = {
        statementTimeoutMs: 0,
        lockTimeoutMs,
        idleInTransactionTimeoutMs: 0,
        applicationName: `${settings.applicationName}:migrate`.slice(0, 63),
      };
      const client = await openSession({ ...sessions, session });
      try {
        return await inPostgresMigrationTransaction(client, work, { lockTimeoutMs, logger: migrationLogger });
      } finally {
        await client.end().catch(() => {});
      }
    },
    close() {
      closing ??= closePool(kysely, pool, closeTimeoutMs, logger);
      return closing;
    },
  };
}

// pool.end() waits for every checked-out connection to come back: a query stuck on a lock would
// hold the shutdown forever. Bounded; whatever is left goes with the process.
async function closePool(kysely: Kysely<DB>, pool: pg.Pool, timeoutMs: number, logger: Logger | undefined) {
  const ended = (async () => {
    await kysely.destroy();
    // Kysely ends the pool only if it ever used it; /health and the migrator use it directly.
    if (!pool.ending) await pool.end();
    return "ended" as const;
  })();
  const outcome = await Promise.race([ended, sleep(timeoutMs, "timeout" as const, { ref: false })]);
  if (outcome === "timeout") {
    logger?.warn(
      { timeoutMs, inUse: pool.totalCount - pool.idleCount },
      "postgres: connections still in use at the shutdown timeout; closing without them",
    );
  }
}

function scratchDatabaseName(database: string): string {
  // 63 bytes is PostgreSQL's limit for a name; the random part keeps two drills apart.
  return `${database.replace(/[^A-Za-z0-9_]/g, "_").slice(0, 32)}_scratch_${process.pid}_${randomBytes(4).toString("hex")}`;
}

function scratchError(error: unknown, url: DatabaseUrl, name: string): Error {
  if ((error as { code?: string }).code === "42501") {
    return new StorageStartupError(
      `a drill or dry run restores into a scratch database, and user "${url.user}" may not create one (42501): ALTER ROLE "${url.user}" CREATEDB, or rehearse on a server where it may`,
    );
  }
  return error instanceof Error ? error : new Error(`cannot create database ${name}: ${String(error)}`);
}

/** pg_restore into the (empty) scratch database, all or nothing. */
async function restoreInto(tools: PgTools, url: DatabaseUrl, database: string, file: string): Promise<void> {
  const { dbname, env } = libpqConnection(url, database);
  const result = await runTool(
    tools.pgRestore,
    ["--no-owner", "--exit-on-error", "--single-transaction", "--no-password", `--dbname=${dbname}`, file],
    env,
  );
  if (result.code !== 0) throw new Error(`pg_restore of ${file} failed: ${firstLine(result.stderr)}`);
}
