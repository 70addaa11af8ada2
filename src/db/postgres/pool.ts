// The service's connections: one pg Pool with every session's settings in its startup packet (no
// extra round trip per connection), results typed as SQLite returns them, and the pool handed to
// Kysely through a thin wrapper that retries a statement the server rolled back to break a
// conflict and throws away a connection that stopped answering.
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

/**
 * Why here and not in the routes: a statement outside a transaction (every route's single query)
 * that the server rolled back for a serialization failure or a deadlock had no effect, so running
 * it again is safe and invisible to the caller. Inside a transaction only the whole transaction
 * could be retried, which is its owner's call: those errors go up at once (503 database_busy).
 */
export function kyselyPool(pool: pg.Pool, retry: RetryPolicy = DEFAULT_RETRY): PostgresPool {
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  // No cursor form of query(): Kysely only uses it for stream(), which needs a cursor class anyway.
  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    // Set when the client-side query timeout fired: the server may still be running the query,
    // and the connection would hold the next one back until it ends.
    let broken = false;
    return {
      async query<R>(sql: string, parameters: readonly unknown[]) {
        for (let attempt = 1; ; attempt++) {
          const autocommit = client.getTransactionStatus() === "I";
          try {
            return (await client.query(sql, parameters as unknown[])) as unknown as PostgresQueryResult<R>;
          } catch (error) {
            if ((error as Error).message === "Query read timeout") broken = true;
            const code = (error as { code?: string }).code;
            if (!autocommit || attempt >= retry.attempts || !RETRYABLE_SQLSTATES.has(code ?? "")) throw error;
            await sleep(retry.firstDelayMs * 2 ** (attempt - 1) * (0.5 + Math.random()));
          }
        }
      },
      release(destroy?: boolean) {
        client.release(destroy || broken);
        broken = false;
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
