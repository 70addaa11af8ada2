// The service's connections: one pg Pool with every session's settings in its startup packet (no
// extra round trip per connection), results typed as SQLite returns them, and the pool handed to
// Kysely through a thin wrapper that retries a statement the server rolled back to break a
// conflict and throws away a connection that stopped answering.
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from "kysely";
import pg from "pg";
import type { Logger } from "pino";
import type { PostgresSettings } from "../../config.ts";
import { RETRYABLE_SQLSTATES } from "./errors.ts";
import { type DatabaseUrl, formatDatabaseUrl } from "./url.ts";

// OIDs from pg_type: https://github.com/postgres/postgres/blob/master/src/include/catalog/pg_type.dat
const INT8 = 20;
const TIMESTAMPTZ = 1184;

/**
 * int8 (bigint ids, count(*), pg_database_size) as a number, as SQLite returns it, and a loud
 * failure past 2^53 rather than a silently rounded id. timestamptz as the ISO 8601 text the
 * application stores (`new Date().toISOString()`), not a Date. numeric stays a string: it has more
 * digits than a double.
 */
export function createTypeParsers(): pg.CustomTypesConfig {
  const types = new pg.TypeOverrides();
  types.setTypeParser(INT8, (text: string) => {
    const value = Number(text);
    if (!Number.isSafeInteger(value)) {
      throw new RangeError(`int8 value ${text} is beyond 2^53 and cannot be returned as a number exactly`);
    }
    return value;
  });
  const parseTimestamp = pg.types.getTypeParser(TIMESTAMPTZ);
  types.setTypeParser(TIMESTAMPTZ, (text: string) => {
    const date: unknown = parseTimestamp(text);
    // 'infinity' and '-infinity' have no ISO form: they stay as PostgreSQL wrote them.
    return date instanceof Date && !Number.isNaN(date.getTime()) ? date.toISOString() : text;
  });
  return types;
}

/** Settings of the migration connection: no statement or idle limit, a lock wait of its own. */
export interface SessionSettings {
  statementTimeoutMs: number;
  lockTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  applicationName: string;
}

/** What pg.Client and pg.Pool take to open a session on `database` with `session`'s settings. */
export function clientConfig(
  url: DatabaseUrl,
  session: SessionSettings,
  { connectTimeoutMs, database }: { connectTimeoutMs: number; database?: string },
): pg.ClientConfig {
  const { statementTimeoutMs } = session;
  return {
    connectionString: formatDatabaseUrl(url, database === undefined ? {} : { database }),
    connectionTimeoutMillis: connectTimeoutMs,
    statement_timeout: statementTimeoutMs,
    lock_timeout: session.lockTimeoutMs,
    idle_in_transaction_session_timeout: session.idleInTransactionTimeoutMs,
    application_name: session.applicationName,
    // statement_timeout is enforced by the server; a server that stopped answering (frozen, or cut
    // off by the network) is caught by this client-side timer instead, a little later.
    ...(statementTimeoutMs > 0 && { query_timeout: statementTimeoutMs + 5_000 }),
    keepAlive: true,
    types: createTypeParsers(),
  };
}

export function createPool(
  url: DatabaseUrl,
  settings: PostgresSettings,
  logger: Logger | undefined,
): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(url, settings, settings),
    max: settings.poolMax,
    // Idle connections are closed after 30 s (pg's default is 10 s): a quiet service keeps a few
    // warm without holding max_connections slots through the night.
    idleTimeoutMillis: 30_000,
  });
  // Without a listener, an idle connection's error (the server restarted, an admin terminated it)
  // is an unhandled 'error' event and kills the process. The pool has already dropped the connection;
  // the next checkout opens a new one.
  pool.on("error", (error) => {
    // Closing: connections still saying goodbye when the server ends them (a dropped scratch database).
    if (pool.ending) return;
    logger?.warn(
      { err: { message: error.message, code: (error as { code?: string }).code } },
      "postgres: idle connection lost",
    );
  });
  return pool;
}

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Pause before the second attempt; doubled for each later one, with jitter. */
  firstDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, firstDelayMs: 10 };

// Statements prepared per connection, by SQL text: the server parses and plans each once instead of
// on every execution, which is most of the cost of a point read by id (the same reason the SQLite
// side caches its statements). Bounded: SQL whose text varies (IN lists of every length) runs
// unprepared once a connection holds this many.
const PREPARED_PER_CONNECTION = 100;
// SQLSTATE 0A000 "cached plan must not change result type": another instance's migration changed
// a table a prepared `SELECT *` reads. The statement is run again unprepared and the connection is
// retired, so its stale statements go with it.
const STALE_PLAN = "0A000";

const statementNames = new Map<string, string>();
function statementName(sql: string): string {
  let name = statementNames.get(sql);
  if (!name) {
    name = `k${createHash("sha1").update(sql).digest("hex").slice(0, 20)}`;
    // Forget the oldest past a bound: the names are cheap to compute again.
    if (statementNames.size >= 1_000) statementNames.delete(statementNames.keys().next().value!);
    statementNames.set(sql, name);
  }
  return name;
}

/**
 * Kysely's view of the pool. Also why retries live here and not in the routes: a statement outside
 * a transaction (every route's single query) that the server rolled back for a serialization
 * failure or a deadlock had no effect, so running it again is safe and invisible to the caller.
 * Inside a transaction only the whole transaction could be retried, which is its owner's call:
 * those errors go up at once (503 database_busy).
 */
export function kyselyPool(pool: pg.Pool, retry: RetryPolicy = DEFAULT_RETRY): PostgresPool {
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  // No cursor form of query(): Kysely only uses it for stream(), which needs a cursor class anyway.
  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    // The pool listens for errors only while a connection is idle. One that dies while checked out
    // (the server restarted under a request) fails the query in flight and then emits 'error' too,
    // which with no listener would crash the process. The query's own failure is the report.
    client.on("error", () => {});
    // Set when the connection should not serve again: the client-side query timeout fired (the
    // server may still be running the query, and would hold the next one back), or a prepared
    // statement went stale.
    let broken = false;
    const prepared = new Set<string>();
    const nameFor = (sql: string): string | undefined => {
      if (broken) return undefined;
      const name = statementName(sql);
      if (prepared.has(name)) return name;
      if (prepared.size >= PREPARED_PER_CONNECTION) return undefined;
      prepared.add(name);
      return name;
    };
    return {
      async query<R>(sql: string, parameters: readonly unknown[]) {
        for (let attempt = 1; ; attempt++) {
          const autocommit = client.getTransactionStatus() === "I";
          const name = nameFor(sql);
          try {
            const values = parameters as unknown[];
            return (await client.query({
              text: sql,
              values,
              ...(name && { name }),
            })) as unknown as PostgresQueryResult<R>;
          } catch (error) {
            const code = (error as { code?: string }).code ?? "";
            if ((error as Error).message === "Query read timeout") broken = true;
            if (code === STALE_PLAN && name) {
              broken = true;
              if (autocommit) continue;
            }
            if (!autocommit || attempt >= retry.attempts || !RETRYABLE_SQLSTATES.has(code)) throw error;
            await sleep(retry.firstDelayMs * 2 ** (attempt - 1) * (0.5 + Math.random()));
          }
        }
      },
      release(destroy?: boolean) {
        client.release(destroy || broken);
      },
      get processID() {
        return (client as unknown as { processID?: number }).processID;
      },
    } as unknown as PostgresPoolClient;
  };
  return {
    options: pool.options,
    async connect() {
      const client = await pool.connect();
      let wrapper = wrappers.get(client);
      if (!wrapper) {
        wrapper = wrap(client);
        wrappers.set(client, wrapper);
      }
      return wrapper;
    },
    end: () => pool.end(),
  };
}
