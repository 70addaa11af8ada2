// The SQLite engine: one file at DATABASE_PATH, served by one process through better-sqlite3.
// Implements StorageEngine and Storage (../storage.ts) with the modules beside it.
import fs from "node:fs";
import path from "node:path";
import type { MigrationContext } from "../migrator.ts";
import type { Storage, StorageEngine } from "../storage.ts";
import { checkpointDatabase } from "./checkpoint.ts";
import { appliedMigrationsReader, inSqliteMigrationTransaction } from "./migration.ts";
import { databaseNameOf, openSqlite, type SqliteConnection } from "./open.ts";
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
      return verifyDatabaseFile(file ?? databasePath);
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
  const db = openSqlite({
    path: options.databasePath,
    backupDir: options.backupDir,
    busyTimeoutMs: options.busyTimeoutMs,
  });
  const readHealth = createHealthReader(db);
  const readApplied = appliedMigrationsReader(db.sqlite);
  return {
    engine,
    kysely: db.kysely,
    sqlite: db.sqlite,
    async readHealth() {
      return readHealth();
    },
    async readAppliedMigrations() {
      return readApplied();
    },
    async countRowsIfSmall() {
      const { facts } = readHealth();
      return facts.pageSize * facts.pageCount <= countRowsUpToBytes ? countRows(db.sqlite) : null;
    },
    inMigrationTransaction(work, transactionOptions) {
      return inSqliteMigrationTransaction(db.sqlite, work, transactionOptions);
    },
    async close() {
      db.close();
    },
  };
}
