// PostgreSQL's migration transaction: a session of its own (no statement or idle timeout, so a long
// migration or the pre-migration pg_dump is not cut short), BEGIN, the advisory lock FIRST, then
// the record table, the work, COMMIT. DDL is transactional here: a failure anywhere rolls schema,
// data and record back together.
import {
  Kysely,
  PostgresDialect,
  type PostgresPool,
  type PostgresPoolClient,
  type PostgresQueryResult,
} from "kysely";
import type pg from "pg";
import type { Logger } from "pino";
import { MigrationError } from "../migrator.ts";
import { MIGRATIONS_TABLE } from "../schema.ts";
import type { MigrationTransaction } from "../storage.ts";
import { holdsTables } from "./session.ts";

/**
 * One key for every process migrating this database (advisory locks are per database). Taken
 * before anything else, the record table's creation included: two first starts racing on CREATE
 * TABLE IF NOT EXISTS would otherwise collide in the catalog (23505 on pg_type).
 */
export const MIGRATION_LOCK_KEY = "7233590174112003";

export async function inPostgresMigrationTransaction<T>(
  client: pg.Client,
  work: (tx: MigrationTransaction) => Promise<T>,
  { lockTimeoutMs, logger }: { lockTimeoutMs: number; logger: Logger },
): Promise<T> {
  await client.query("BEGIN");
  try {
    await takeMigrationLock(client, lockTimeoutMs, logger);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (name text PRIMARY KEY NOT NULL, applied_at text NOT NULL)`,
    );
    const result = await work(migrationTransaction(client));
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  }
}

// The session's lock_timeout is lockTimeoutMs: pg_advisory_xact_lock waits at most that long.
async function takeMigrationLock(client: pg.Client, lockTimeoutMs: number, logger: Logger): Promise<void> {
  const free = await client.query<{ got: boolean }>("SELECT pg_try_advisory_xact_lock($1) AS got", [
    MIGRATION_LOCK_KEY,
  ]);
  if (free.rows[0]!.got) return;
  logger.info("waiting for another process to finish migrating");
  try {
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
  } catch (error) {
    if ((error as { code?: string }).code === "55P03") {
      throw new MigrationError(
        `another process has held the migration lock for over ${lockTimeoutMs} ms; nothing was migrated`,
      );
    }
    throw error;
  }
}

function migrationTransaction(client: pg.Client): MigrationTransaction {
  return {
    kysely: new Kysely<any>({ dialect: new PostgresDialect({ pool: sessionAsPool(client) }) }),
    readApplied: async () =>
      (await client.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY name`)).rows.map(
        (row) => row.name,
      ),
    record: async (name) => {
      await client.query(`INSERT INTO ${MIGRATIONS_TABLE} (name, applied_at) VALUES ($1, $2)`, [
        name,
        new Date().toISOString(),
      ]);
    },
    unrecord: async (name) => {
      await client.query(`DELETE FROM ${MIGRATIONS_TABLE} WHERE name = $1`, [name]);
    },
    holdsTables: () => holdsTables(client, MIGRATIONS_TABLE),
  };
}

// A migration that called db.transaction() would COMMIT the migrator's own transaction half-way
// (PostgreSQL only warns about a nested BEGIN): refused, so the all-or-nothing promise holds.
const TRANSACTION_CONTROL = /^\s*(begin|start\s+transaction|commit|end|rollback(?!\s+to)|abort)\b/i;

/** Kysely over the one session that holds the transaction: every statement of a migration runs in it. */
function sessionAsPool(client: pg.Client): PostgresPool {
  const session = {
    async query<R>(sql: string, parameters: readonly unknown[]) {
      if (TRANSACTION_CONTROL.test(sql)) {
        throw new MigrationError(
          "a migration opened or ended a transaction: migrations already run inside the migrator's one transaction, so call db.schema / db.insertInto directly",
        );
      }
      return (await client.query(sql, parameters as unknown[])) as unknown as PostgresQueryResult<R>;
    },
    release() {},
  };
  // No cursor form of query(): Kysely only uses it for stream(), which needs a cursor class anyway.
  return { connect: async () => session as unknown as PostgresPoolClient, end: async () => {}, options: {} };
}
