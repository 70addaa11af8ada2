// The storage layer as the rest of the service sees it: a StorageEngine (what can be done to a
// database: open it, back it up, verify, restore, rehearse on a scratch copy) and the Storage it
// opens (a Kysely instance, health facts, the migration transaction, close). One implementation
// per engine, in its own folder (sqlite/, postgres/); a third engine is a third folder that
// implements these two interfaces. Engines are imported on demand: SQLite never loads pg.
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { BackupFile, BackupKind } from "../backups/files.ts";
import type { PostgresSettings } from "../config.ts";
import type { MigrationContext } from "./migrator.ts";
import type { DB } from "./schema.ts";

export const ENGINE_NAMES = ["sqlite", "postgres"] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

export interface StorageEngine {
  readonly name: EngineName;
  /** What the engine works on, safe to log and show: a file path, or a URL without its password. */
  readonly target: string;
  /** The database's name in its backups' names: "app" for app.db, the database name on PostgreSQL. */
  readonly database: string;
  /** The checks verify() runs, by name, as the commands report them. */
  readonly verification: readonly string[];
  /** Handed to every migration's up() and down(): how to write column types for this engine. */
  readonly migrationContext: MigrationContext;
  /** Opens the database for serving: fails with a StorageStartupError naming the fix. */
  open(): Promise<Storage>;
  /** Whether the database exists and holds anything (a restore drill compares against it). */
  exists(): Promise<boolean>;
  /**
   * A verified backup into `backupDir`, taken while the database serves: readers and writers go on,
   * and the caller's event loop is never blocked for the length of the copy.
   */
  backup(options: BackupOptions): Promise<BackupFile>;
  /** Checks a backup file (every page or every entry read); without `file`, the live database. */
  verify(file?: string): Promise<Verdict>;
  /**
   * Puts a verified backup in place of the database, keeping what was there as a pre-restore
   * backup. Refuses, changing nothing, while another process uses the database.
   */
  restore(options: RestoreOptions): Promise<RestoreResult>;
  /**
   * A throwaway database in `scratchDir`, loaded from `backup` (empty when null), for restore drills
   * and migration dry runs; `dispose()` drops it. Nothing live is touched.
   */
  openScratch(backup: BackupFile | null, scratchDir: string): Promise<ScratchDatabase>;
  /** Rows per table of the live database, a scan each: for drills, never for probes. */
  countRows(): Promise<Record<string, number>>;
  /** Folds the write-ahead log into the database file (SQLite); absent where the server does it. */
  checkpoint?(): Promise<CheckpointResult>;
}

export interface CheckpointResult {
  /** A reader (or writer) in another connection kept the checkpoint from completing. */
  busy: boolean;
  /** Pages (WAL frames) in the log before the checkpoint, and how many reached the database file. */
  walPages: number;
  checkpointedPages: number;
  walBytesBefore: number;
  walBytesAfter: number;
}

export interface Storage {
  readonly engine: StorageEngine;
  /** The typed query builder: the only way routes talk to the database. */
  readonly kysely: Kysely<DB>;
  /**
   * Engine facts for /health and metrics, cheap enough for every probe (no table scan, no catalog
   * scan); throws when the database cannot be queried.
   */
  readHealth(): Promise<EngineHealth>;
  /** Names of the applied migrations, oldest first; [] before the first migration. */
  readAppliedMigrations(): Promise<string[]>;
  /** Rows per table when counting is cheap enough to do now and then (a small database), else null. */
  countRowsIfSmall(): Promise<Record<string, number> | null>;
  /**
   * Runs `work` in the one migration transaction, under a lock that makes concurrent migrators
   * wait (up to `lockTimeoutMs`): schema changes and their record commit together or not at all.
   */
  inMigrationTransaction<T>(
    work: (tx: MigrationTransaction) => Promise<T>,
    options: { lockTimeoutMs: number; logger: Logger },
  ): Promise<T>;
  /**
   * Closes every connection but keeps this Storage, and the Kysely its callers hold, for resume():
   * queries in between fail with StorageUnavailableError. For swapping the database under a running
   * service (online restore); absent where other processes may share the database.
   */
  suspend?(): Promise<void>;
  /** Opens the database again after suspend(), as open() would (checks, settings). */
  resume?(): Promise<void>;
  /** Closes every connection, leaving the database complete on its own. Safe to call twice. */
  close(): Promise<void>;
}

export interface MigrationTransaction {
  /** Runs statements inside the transaction; a migration must not open transactions of its own. */
  readonly kysely: Kysely<any>;
  readApplied(): Promise<string[]>;
  record(name: string): Promise<void>;
  unrecord(name: string): Promise<void>;
  /** Whether the database holds any table besides the migrations' record: a backup is worth taking. */
  holdsTables(): Promise<boolean>;
}

export interface BackupOptions {
  backupDir: string;
  kind: BackupKind;
  /** The migration a pre-migration (or pre-rollback) backup is taken for. */
  label?: string;
  now?: Date;
  /** Stops the copy (at shutdown); its partial file is removed. */
  signal?: AbortSignal;
  /**
   * Told now and then how many bytes of the backup are written, and how many the engine expects
   * (undefined when it cannot tell): a terminal's progress display.
   */
  onProgress?: (written: number, expected: number | undefined) => void;
}

export interface RestoreOptions {
  backupDir: string;
  /** The backup file to put in place. */
  source: string;
  now?: Date;
}

export interface RestoreResult {
  source: string;
  /** The database restored, as StorageEngine.target names it. */
  target: string;
  /** The database as it was, kept as a pre-restore backup; null when there was none. */
  previous: BackupFile | null;
  /** Engine-specific notes on what else was kept or removed, one line each. */
  notes: string[];
}

/** What a verification found: each check with its findings (none: passed). */
export interface Verdict {
  ok: boolean;
  checks: { name: string; findings: string[] }[];
}

export interface ScratchDatabase {
  storage: Storage;
  engine: StorageEngine;
  dispose(): Promise<void>;
}

export interface EngineHealth {
  /** Facts for the detailed health view, engine-specific (journal mode, pool counts, ...). */
  facts: Record<string, unknown>;
  /** Bytes the database can still grow by, where the engine knows it; null otherwise. */
  availableBytes: number | null;
  /** Why the database cannot serve well, in words fit for an operator; undefined when it can. */
  problem: string | undefined;
}

/** A database that cannot be opened: the message is the one line to print before exiting. */
export class StorageStartupError extends Error {
  override name = "StorageStartupError";
}

/** The database is closed for a moment (maintenance) or out of reach: retry shortly. */
export class StorageUnavailableError extends Error {
  override name = "StorageUnavailableError";
}

/** A backup that could not be taken or failed its verification; nothing was kept. */
export class BackupError extends Error {
  override name = "BackupError";
}

/** A restore refused or failed: the message says what, and whether anything changed. */
export class RestoreError extends Error {
  override name = "RestoreError";
}

/** Builds a verdict from named checks; it is ok when none found anything. */
export function verdictOf(checks: Verdict["checks"]): Verdict {
  return { ok: checks.every((check) => check.findings.length === 0), checks };
}

export interface EngineConfig {
  databasePath: string;
  backupDir: string;
  busyTimeoutMs: number;
  /** Set: PostgreSQL at this URL, and databasePath is unused. */
  databaseUrl?: string | null;
  postgres?: PostgresSettings;
  /** How long closing waits for queries still running (PostgreSQL's pool). */
  shutdownTimeoutMs?: number;
}

/** The engine the configuration selects: DATABASE_URL when set, else SQLite at DATABASE_PATH. */
export async function loadEngine(config: EngineConfig, logger?: Logger): Promise<StorageEngine> {
  if (config.databaseUrl) {
    if (!config.postgres) throw new Error("loadEngine: databaseUrl without postgres settings");
    const { createPostgresEngine } = await import("./postgres/engine.ts");
    return createPostgresEngine({
      url: config.databaseUrl,
      settings: config.postgres,
      logger,
      ...(config.shutdownTimeoutMs !== undefined && { closeTimeoutMs: config.shutdownTimeoutMs }),
    });
  }
  const { createSqliteEngine } = await import("./sqlite/engine.ts");
  return createSqliteEngine(config);
}
