// Migrations, whatever the engine: Umzug runs the modules in migrations/ inside the engine's one
// migration transaction, which also holds their record, so a failure anywhere leaves schema, data
// and record exactly as they were. A database that holds data is backed up (verified) first, under
// the migration lock, so N processes starting at once take one backup and apply each migration once.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { ColumnDefinitionBuilder, Kysely } from "kysely";
import type { Logger } from "pino";
import type { Umzug, UmzugStorage } from "umzug";
import type { BackupFile, BackupKind } from "../backups/files.ts";
import type { EngineName, MigrationTransaction, Storage } from "./storage.ts";

const MIGRATION_FILE = /^(\d{4})_([a-z0-9_]+)\.ts$/;

/**
 * The second argument of a migration's up() and down(): what it needs to write one migration for
 * every engine. A migration that ignores it (`up(db)`) keeps working.
 */
export interface MigrationContext {
  engine: EngineName;
  /**
   * An integer primary key the database assigns and never reuses:
   * `.addColumn("id", ids.type, ids.primaryKey)`. SQLite: an AUTOINCREMENT rowid alias;
   * PostgreSQL: a bigint identity.
   */
  ids: {
    type: "integer" | "bigint";
    primaryKey: (column: ColumnDefinitionBuilder) => ColumnDefinitionBuilder;
  };
}

export interface MigrationFile {
  name: string;
  path: string;
}

export interface MigrationStatus {
  applied: string[];
  pending: string[];
}

export interface MigratorOptions {
  storage: Storage;
  migrationsDir: string;
  backupDir: string;
  logger: Logger;
  /** How long to wait for another process that is migrating the same database. */
  lockTimeoutMs?: number;
  /**
   * false for a scratch copy (dry run, restore drill): it is its own backup. "off": the operator
   * turned backups off (MIGRATE_BACKUP=off, relying on the platform's snapshots); the log says so
   * each time one would have been taken. Default true.
   */
  backupFirst?: boolean | "off";
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
  up(db: Kysely<any>, context: MigrationContext): Promise<void>;
  down?(db: Kysely<any>, context: MigrationContext): Promise<void>;
}

/** The migration modules in `dir`, in the order they apply (their four-digit prefix). */
export function findMigrations(dir: string): MigrationFile[] {
  return fs
    .readdirSync(dir)
    .filter((file) => MIGRATION_FILE.test(file))
    .sort()
    .map((file) => ({ name: file.slice(0, -".ts".length), path: path.join(dir, file) }));
}

export async function readMigrationStatus(
  storage: Storage,
  migrations: MigrationFile[],
): Promise<MigrationStatus> {
  const applied = await storage.readAppliedMigrations();
  const done = new Set(applied);
  return { applied, pending: migrations.filter((m) => !done.has(m.name)).map((m) => m.name) };
}

/** Applies every pending migration, all or nothing. */
export async function runMigrations(options: MigratorOptions): Promise<MigrationResult> {
  const { storage, logger } = options;
  const migrations = findMigrations(options.migrationsDir);
  // Fast path without the lock: a restart with nothing to do must not queue behind writers.
  if ((await readMigrationStatus(storage, migrations)).pending.length === 0) {
    return { names: [], backup: undefined };
  }
  return inMigrationTransaction(options, async (umzug, tx) => {
    // Read again under the lock: another process may have applied them while we waited.
    const pending = (await umzug.pending()).map((m) => m.name);
    if (pending.length === 0) return { names: [], backup: undefined };
    const backup =
      options.backupFirst !== false && (await tx.holdsTables())
        ? await backupBeforeChange(options, "pre-migration", pending[0]!)
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
    const backup = await backupBeforeChange(options, "pre-rollback", last);
    const names = await runReportingFailure(umzug, backup, () => umzug.down({ step: 1 }));
    options.logger.info({ migrations: names, backup: backup?.path }, "migration reverted");
    return { names, backup };
  });
}

function inMigrationTransaction<T>(
  options: MigratorOptions,
  work: (umzug: Umzug<Kysely<any>>, tx: MigrationTransaction) => Promise<T>,
): Promise<T> {
  const { storage, logger } = options;
  return storage.inMigrationTransaction(async (tx) => work(await createUmzug(options, tx), tx), {
    lockTimeoutMs: options.lockTimeoutMs ?? 60_000,
    logger,
  });
}

async function createUmzug(
  { storage, migrationsDir, logger }: MigratorOptions,
  tx: MigrationTransaction,
): Promise<Umzug<Kysely<any>>> {
  // Loaded only when something is pending: umzug brings its command-line dependencies, a third of
  // the service's start-up time, and a start with nothing to migrate never needs them.
  const { Umzug } = await import("umzug");
  const context = storage.engine.migrationContext;
  // The record goes through the transaction too: it commits with the schema change or not at all.
  const record: UmzugStorage<Kysely<any>> = {
    executed: () => tx.readApplied(),
    logMigration: ({ name }) => tx.record(name),
    unlogMigration: ({ name }) => tx.unrecord(name),
  };
  const umzug = new Umzug<Kysely<any>>({
    migrations: findMigrations(migrationsDir).map(({ name, path: file }) => ({
      name,
      path: file,
      up: async () => (await loadMigration(file)).up(tx.kysely, context),
      down: async () => {
        const { down } = await loadMigration(file);
        if (!down) throw new MigrationError(`${name} has no down() to revert it`);
        await down(tx.kysely, context);
      },
    })),
    context: tx.kysely,
    storage: record,
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

// Under the migration lock and before any change: what is copied is the last committed state,
// which the lock keeps from changing until we commit.
async function backupBeforeChange(
  options: MigratorOptions,
  kind: BackupKind,
  migration: string,
): Promise<BackupFile | undefined> {
  if (options.backupFirst === "off") {
    options.logger.warn({ migration }, `${kind} backup skipped: MIGRATE_BACKUP=off`);
    return undefined;
  }
  const started = performance.now();
  const backup = await options.storage.engine.backup({
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

async function loadMigration(file: string): Promise<MigrationModule> {
  const module = (await import(pathToFileURL(file).href)) as Partial<MigrationModule>;
  if (typeof module.up !== "function") throw new MigrationError(`${file} does not export an up(db) function`);
  return module as MigrationModule;
}
