// The SQLite engine: one file at DATABASE_PATH, served by one process through better-sqlite3.
// Implements StorageEngine and Storage (../storage.ts) with the modules beside it.
import fs from "node:fs";
import path from "node:path";
import type { MigrationContext } from "../migrator.ts";
import { type Storage, type StorageEngine, StorageUnavailableError, verdictOf } from "../storage.ts";
import { checkpointDatabase } from "./checkpoint.ts";
import { appliedMigrationsReader, inSqliteMigrationTransaction } from "./migration.ts";
import { createSqliteKysely, databaseNameOf, openSqlite, type SqliteConnection } from "./open.ts";
import { restoreBackup } from "./restore.ts";
import { openForReading, takeOnlineBackup, verifyDatabaseFile } from "./snapshot.ts";
import { countRows, createHealthReader } from "./stats.ts";

export interface SqliteEngineOptions {
  databasePath: string;
  backupDir: string;
  busyTimeoutMs: number;
  /**
   * Largest database whose rows /health counts. A count reads the whole table: about a second of
   * blocked event loop per GB, which every request waiting meanwhile would pay.
   */
  countRowsUpToBytes?: number;
}

const MIGRATION_CONTEXT: MigrationContext = {
  engine: "sqlite",
  // AUTOINCREMENT: ids are never reused after a delete, so a URL never points at another note and
  // "newest first" is simply "highest id first".
  ids: { type: "integer", primaryKey: (column) => column.primaryKey().autoIncrement() },
};

/** The SQLite Storage also hands out its raw connection, for tests and tools that inspect the file. */
export interface SqliteStorage extends Storage {
  readonly sqlite: SqliteConnection;
}

export interface SqliteEngine extends StorageEngine {
  open(): Promise<SqliteStorage>;
}

export function createSqliteEngine(options: SqliteEngineOptions): SqliteEngine {
  const { databasePath, busyTimeoutMs } = options;
  const engine: SqliteEngine = {
    name: "sqlite",
    target: databasePath,
    database: databaseNameOf(databasePath),
    verification: ["integrity_check", "foreign_key_check"],
    migrationContext: MIGRATION_CONTEXT,

    async open() {
      return openStorage(engine, options);
    },

    async exists() {
      return fs.existsSync(databasePath) && fs.statSync(databasePath).size > 0;
    },

    async backup(options) {
      return takeOnlineBackup({ databasePath, ...options });
    },

    async verify(file) {
      try {
        return verifyDatabaseFile(file ?? databasePath);
      } catch (error) {
        // A file SQLite cannot open as a database fails verification; it is not an error of ours.
        const { code = "", message } = error as { code?: string; message: string };
        if (code !== "SQLITE_NOTADB" && !code.startsWith("SQLITE_CORRUPT")) throw error;
        return verdictOf([
          { name: "integrity_check", findings: [`not a readable SQLite database (${code}: ${message})`] },
        ]);
      }
    },

    async restore(options) {
      return restoreBackup({ databasePath, ...options });
    },

    async openScratch(backup, scratchDir) {
      const copy = path.join(scratchDir, path.basename(databasePath));
      if (backup) fs.copyFileSync(backup.path, copy);
      const scratch = createSqliteEngine({ databasePath: copy, backupDir: scratchDir, busyTimeoutMs: 1_000 });
      const storage = await scratch.open();
      return { engine: scratch, storage, dispose: () => storage.close() };
    },

    async countRows() {
      const db = openForReading(databasePath);
      try {
        return countRows(db);
      } finally {
        db.close();
      }
    },

    // wal_checkpoint(TRUNCATE) through a connection of its own: safe while the service runs.
    async checkpoint() {
      return checkpointDatabase(databasePath, busyTimeoutMs);
    },
  };
  return engine;
}

function openStorage(
  engine: StorageEngine,
  { countRowsUpToBytes = 64 * 2 ** 20, ...options }: SqliteEngineOptions,
): SqliteStorage {
  const open = () => {
    const db = openSqlite({
      path: options.databasePath,
      backupDir: options.backupDir,
      busyTimeoutMs: options.busyTimeoutMs,
    });
    // Prepared statements belong to their connection: made again with each one.
    return { db, readHealth: createHealthReader(db), readApplied: appliedMigrationsReader(db.sqlite) };
  };
  let current: ReturnType<typeof open> | undefined = open();
  const live = () => {
    if (!current) throw new StorageUnavailableError("the database is closed for maintenance");
    return current;
  };
  return {
    engine,
    kysely: createSqliteKysely(() => live().db.sqlite),
    get sqlite() {
      return live().db.sqlite;
    },
    async readHealth() {
      return live().readHealth();
    },
    async readAppliedMigrations() {
      return live().readApplied();
    },
    async countRowsIfSmall() {
      const { db, readHealth } = live();
      const { facts } = readHealth();
      return facts.pageSize * facts.pageCount <= countRowsUpToBytes ? countRows(db.sqlite) : null;
    },
    inMigrationTransaction(work, transactionOptions) {
      return inSqliteMigrationTransaction(live().db.sqlite, work, transactionOptions);
    },
    async suspend() {
      current?.db.close();
      current = undefined;
    },
    async resume() {
      current ??= open();
    },
    async close() {
      current?.db.close();
    },
  };
}
