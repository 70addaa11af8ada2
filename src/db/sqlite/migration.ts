// SQLite's migration transaction: BEGIN IMMEDIATE on the raw connection (the write lock up front,
// so the pending list read under it is the one applied), foreign keys off around it, and the
// record of applied migrations written through the same connection, inside the same transaction.
import { setTimeout as sleep } from "node:timers/promises";
import { Kysely, SqliteDialect } from "kysely";
import type { Logger } from "pino";
import { MigrationError } from "../migrator.ts";
import { MIGRATIONS_TABLE } from "../schema.ts";
import type { MigrationTransaction } from "../storage.ts";
import type { SqliteConnection } from "./open.ts";

export async function inSqliteMigrationTransaction<T>(
  sqlite: SqliteConnection,
  work: (tx: MigrationTransaction) => Promise<T>,
  { lockTimeoutMs, logger }: { lockTimeoutMs: number; logger: Logger },
): Promise<T> {
  // Ignored inside a transaction, so it must change before BEGIN: with foreign keys on, a
  // migration that rebuilds a parent table (create, copy, drop, rename) would cascade ON DELETE
  // into its children when the old table is dropped. foreign_key_check before COMMIT takes its place.
  sqlite.pragma("foreign_keys = OFF");
  try {
    await beginImmediate(sqlite, lockTimeoutMs, logger);
    try {
      sqlite.exec(
        `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (name TEXT PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL) STRICT`,
      );
      const result = await work(migrationTransaction(sqlite));
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

function migrationTransaction(sqlite: SqliteConnection): MigrationTransaction {
  return {
    // Over the raw connection that holds the transaction (Kysely's driver would wait for it).
    kysely: new Kysely<any>({ dialect: new SqliteDialect({ database: sqlite }) }),
    readApplied: async () => readAppliedMigrations(sqlite),
    record: async (name) => {
      sqlite
        .prepare(`INSERT INTO ${MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)`)
        .run(name, new Date().toISOString());
    },
    unrecord: async (name) => {
      sqlite.prepare(`DELETE FROM ${MIGRATIONS_TABLE} WHERE name = ?`).run(name);
    },
    holdsTables: async () =>
      sqlite
        .prepare(
          "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != ?",
        )
        .get(MIGRATIONS_TABLE) !== undefined,
  };
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

/** Applied migrations, oldest first; statements prepared once per connection, as /health asks often. */
export function appliedMigrationsReader(sqlite: SqliteConnection): () => string[] {
  const exists = sqlite.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?");
  // Prepared once the table exists (a database not yet migrated has none).
  let names: { all(): unknown[] } | undefined;
  return () => {
    if (!exists.get(MIGRATIONS_TABLE)) return [];
    names ??= sqlite.prepare(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY name`).pluck();
    return names.all() as string[];
  };
}

function readAppliedMigrations(sqlite: SqliteConnection): string[] {
  return appliedMigrationsReader(sqlite)();
}
