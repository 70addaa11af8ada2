// Migrations: Umzug runs the modules in migrations/ inside one BEGIN IMMEDIATE transaction that also
// holds their record, so a failure anywhere leaves schema, data and record exactly as they were.
// A database that holds data is backed up (VACUUM INTO, verified) before anything changes.
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { Kysely, SqliteDialect } from "kysely";
import type { Logger } from "pino";
import type { Umzug, UmzugStorage } from "umzug";
import { type BackupFile, type BackupKind, takeBackup } from "./backup.ts";
import type { Database, SqliteConnection } from "./database.ts";

export const MIGRATIONS_TABLE = "schema_migrations";
const MIGRATION_FILE = /^(\d{4})_([a-z0-9_]+)\.ts$/;

export interface MigrationFile {
  name: string;
  path: string;
}

export interface MigrationStatus {
  applied: string[];
  pending: string[];
}

export interface MigratorOptions {
  db: Database;
  migrationsDir: string;
  backupDir: string;
  logger: Logger;
  /** How long to wait for another process that is migrating the same database. */
  lockTimeoutMs?: number;
  /** false for a scratch copy (dry run, restore drill): it is its own backup. Default true. */
  backupFirst?: boolean;
}

export interface MigrationResult {
  /** Names applied (or, for a revert, reverted) by this call; empty when there was nothing to do. */
  names: string[];
  backup: BackupFile | undefined;
}

export class MigrationError extends Error {
  override name = "MigrationError";
}

interface MigrationModule {
  up(db: Kysely<any>): Promise<void>;
  down?(db: Kysely<any>): Promise<void>;
}

/** The migration modules in `dir`, in the order they apply (their four-digit prefix). */
export function findMigrations(dir: string): MigrationFile[] {
  return fs
    .readdirSync(dir)
    .filter((file) => MIGRATION_FILE.test(file))
    .sort()
    .map((file) => ({ name: file.slice(0, -".ts".length), path: path.join(dir, file) }));
}

export function readMigrationStatus(db: Database, migrations: MigrationFile[]): MigrationStatus {
  return createMigrationStatusReader(db, migrations)();
}

/** readMigrationStatus for callers that ask on every request (/health): statements prepared once. */
export function createMigrationStatusReader(
  db: Database,
  migrations: MigrationFile[],
): () => MigrationStatus {
  const readApplied = appliedReader(db.sqlite);
  return () => {
    const applied = readApplied();
    const done = new Set(applied);
    return { applied, pending: migrations.filter((m) => !done.has(m.name)).map((m) => m.name) };
  };
}

/** Applies every pending migration, all or nothing. */
export async function runMigrations(options: MigratorOptions): Promise<MigrationResult> {
  const { db, logger } = options;
  const migrations = findMigrations(options.migrationsDir);
  // Fast path without the write lock: a restart with nothing to do must not queue behind writers.
  if (readMigrationStatus(db, migrations).pending.length === 0) return { names: [], backup: undefined };

  return inMigrationTransaction(options, async (umzug) => {
    // Read again under the lock: another process may have applied them while we waited.
    const pending = (await umzug.pending()).map((m) => m.name);
    if (pending.length === 0) return { names: [], backup: undefined };
    const backup =
      options.backupFirst !== false && holdsTables(db.sqlite)
        ? backupBeforeChange(options, "pre-migration", pending[0]!)
        : undefined;
    const names = await runReportingFailure(umzug, backup, () => umzug.up());
    logger.info({ migrations: names, backup: backup?.path }, "migrations applied");
    return { names, backup };
  });
}

/** Reverts the most recently applied migration, after a backup. */
export async function revertLastMigration(options: MigratorOptions): Promise<MigrationResult> {
  return inMigrationTransaction(options, async (umzug) => {
    const last = (await umzug.executed()).at(-1)?.name;
    if (!last) return { names: [], backup: undefined };
    const backup = backupBeforeChange(options, "pre-rollback", last);
    const names = await runReportingFailure(umzug, backup, () => umzug.down({ step: 1 }));
    options.logger.info({ migrations: names, backup: backup.path }, "migration reverted");
    return { names, backup };
  });
}

async function inMigrationTransaction<T>(
  options: MigratorOptions,
  work: (umzug: Umzug<Kysely<any>>) => Promise<T>,
): Promise<T> {
  const { db, logger } = options;
  const { sqlite } = db;
  // Ignored inside a transaction, so it must change before BEGIN: with foreign keys on, a
  // migration that rebuilds a parent table (create, copy, drop, rename) would cascade ON DELETE
  // into its children when the old table is dropped. foreign_key_check before COMMIT takes its place.
  sqlite.pragma("foreign_keys = OFF");
  try {
    await beginImmediate(sqlite, options.lockTimeoutMs ?? 60_000, logger);
    try {
      sqlite.exec(
        `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (name TEXT PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL) STRICT`,
      );
      const result = await work(await createUmzug(options));
      const violations = sqlite.pragma("foreign_key_check") as { table: string; parent: string }[];
      if (violations.length > 0) {
        const first = violations[0]!;
        throw new MigrationError(
          `migrations left ${violations.length} foreign key violation(s) (first: ${first.table} -> ${first.parent}); rolled back, the database is unchanged`,
        );
      }
      sqlite.exec("COMMIT");
      return result;
    } catch (error) {
      if (sqlite.inTransaction) sqlite.exec("ROLLBACK");
      throw error;
    }
  } finally {
    sqlite.pragma("foreign_keys = ON");
  }
}

// Kysely's SQLite driver can only issue a deferred BEGIN (kysely#1152), which can fail half-way
// with SQLITE_BUSY; IMMEDIATE takes the write lock up front, so the pending list we read is the one
// we apply. busy_timeout bounds one attempt; a long migration elsewhere gets retried until the deadline.
async function beginImmediate(
  sqlite: SqliteConnection,
  lockTimeoutMs: number,
  logger: Logger,
): Promise<void> {
  const deadline = Date.now() + lockTimeoutMs;
  let warned = false;
  for (;;) {
    try {
      sqlite.exec("BEGIN IMMEDIATE");
      return;
    } catch (error) {
      const code = (error as { code?: string }).code ?? "";
      if (!code.startsWith("SQLITE_BUSY") || Date.now() >= deadline) {
        if (code.startsWith("SQLITE_BUSY")) {
          throw new MigrationError(
            `another process has held the database's write lock for over ${lockTimeoutMs} ms; nothing was migrated`,
          );
        }
        throw error;
      }
      if (!warned) logger.info("waiting for another process to finish migrating");
      warned = true;
      // Yield between attempts rather than block: the logger writes asynchronously, and the
      // operator should see "waiting" while we wait, not after.
      await sleep(50);
    }
  }
}

async function createUmzug({ db, migrationsDir, logger }: MigratorOptions): Promise<Umzug<Kysely<any>>> {
  // Loaded only when something is pending: umzug brings its command-line dependencies, a third of
  // the service's start-up time, and a start with nothing to migrate never needs them.
  const { Umzug } = await import("umzug");
  const { sqlite } = db;
  // Migrations run through the connection that holds the transaction; they must not open
  // transactions of their own.
  const kysely = new Kysely<any>({ dialect: new SqliteDialect({ database: sqlite }) });
  // The record goes through the same connection, inside the same transaction as the schema change.
  const storage: UmzugStorage<Kysely<any>> = {
    executed: async () => readApplied(sqlite),
    logMigration: async ({ name }) => {
      sqlite
        .prepare(`INSERT INTO ${MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)`)
        .run(name, new Date().toISOString());
    },
    unlogMigration: async ({ name }) => {
      sqlite.prepare(`DELETE FROM ${MIGRATIONS_TABLE} WHERE name = ?`).run(name);
    },
  };
  const umzug = new Umzug<Kysely<any>>({
    migrations: findMigrations(migrationsDir).map(({ name, path: file }) => ({
      name,
      path: file,
      up: async ({ context }) => (await loadMigration(file)).up(context),
      down: async ({ context }) => {
        const { down } = await loadMigration(file);
        if (!down) throw new MigrationError(`${name} has no down() to revert it`);
        await down(context);
      },
    })),
    context: kysely,
    storage,
    logger: undefined,
  });
  const started = new Map<string, number>();
  umzug.on("migrating", ({ name }) => {
    started.set(name, performance.now());
    logger.info({ migration: name }, "applying migration");
  });
  umzug.on("migrated", ({ name }) => {
    logger.info(
      { migration: name, ms: Math.round(performance.now() - started.get(name)!) },
      "migration applied",
    );
  });
  umzug.on("reverting", ({ name }) => logger.info({ migration: name }, "reverting migration"));
  return umzug;
}

async function runReportingFailure(
  umzug: Umzug<Kysely<any>>,
  backup: BackupFile | undefined,
  run: () => Promise<{ name: string }[]>,
): Promise<string[]> {
  let current = "";
  const track = ({ name }: { name: string }) => {
    current = name;
  };
  umzug.on("migrating", track);
  umzug.on("reverting", track);
  try {
    return (await run()).map((m) => m.name);
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause ?? error;
    const where = backup ? ` Pre-migration backup: ${backup.path}.` : "";
    throw new MigrationError(
      `migration ${current} failed: ${(cause as Error).message ?? String(cause)}. Rolled back: the database is as it was.${where}`,
      { cause },
    );
  }
}

function backupBeforeChange(options: MigratorOptions, kind: BackupKind, migration: string): BackupFile {
  const started = performance.now();
  // Through a second connection: VACUUM INTO cannot run inside our transaction, and a reader sees
  // the last committed state, which our lock keeps from changing until we commit.
  const backup = takeBackup({
    databasePath: options.db.path,
    backupDir: options.backupDir,
    kind,
    label: migration,
  });
  options.logger.info(
    { backup: backup.path, bytes: backup.sizeBytes, ms: Math.round(performance.now() - started) },
    `${kind} backup taken and verified`,
  );
  return backup;
}

function readApplied(sqlite: SqliteConnection): string[] {
  return appliedReader(sqlite)();
}

function appliedReader(sqlite: SqliteConnection): () => string[] {
  const exists = sqlite.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?");
  // Prepared once the table exists (a database not yet migrated has none).
  let names: { all(): unknown[] } | undefined;
  return () => {
    if (!exists.get(MIGRATIONS_TABLE)) return [];
    names ??= sqlite.prepare(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY name`).pluck();
    return names.all() as string[];
  };
}

function holdsTables(sqlite: SqliteConnection): boolean {
  return (
    sqlite
      .prepare(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != ?",
      )
      .get(MIGRATIONS_TABLE) !== undefined
  );
}

async function loadMigration(file: string): Promise<MigrationModule> {
  const module = (await import(pathToFileURL(file).href)) as Partial<MigrationModule>;
  if (typeof module.up !== "function") throw new MigrationError(`${file} does not export an up(db) function`);
  return module as MigrationModule;
}
