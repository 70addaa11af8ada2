// Single sessions outside the pool, for the engine's own work: what the server is, catalog queries
// for drills and restores, and creating or dropping a scratch database.
import pg from "pg";
import { StorageStartupError } from "../storage.ts";
import { describeStartupFailure } from "./errors.ts";
import { clientConfig, type SessionSettings } from "./pool.ts";
import { type DatabaseUrl, describeServer } from "./url.ts";

export interface SessionOptions {
  url: DatabaseUrl;
  session: SessionSettings;
  connectTimeoutMs: number;
}

/** Opens a session on `database` (default: the URL's), failing with the one-line startup message. */
export async function openSession(options: SessionOptions, database?: string): Promise<pg.Client> {
  const { url, session, connectTimeoutMs } = options;
  const client = new pg.Client(
    clientConfig(url, session, { connectTimeoutMs, ...(database !== undefined && { database }) }),
  );
  // A session lost while idle (the server restarted) must not crash the process: the query in
  // flight, if any, fails with the same error.
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => {});
    throw toStartupError(error, url, database ?? url.database);
  }
  return client;
}

export async function withSession<T>(
  options: SessionOptions,
  work: (client: pg.Client) => Promise<T>,
  database?: string,
): Promise<T> {
  const client = await openSession(options, database);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A connection failure as the one line a command prints; other errors as they are. */
export function toStartupError(error: unknown, url: DatabaseUrl, database = url.database): Error {
  const message = describeStartupFailure(error, {
    server: describeServer(url),
    database,
    user: url.user || "(libpq's default user)",
  });
  return message ? new StorageStartupError(message, { cause: error }) : (error as Error);
}

export interface ServerVersion {
  /** "15.18" */
  version: string;
  major: number;
}

export async function readServerVersion(client: pg.Client): Promise<ServerVersion> {
  const { rows } = await client.query<{ version: string; num: string }>(
    "SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num",
  );
  const { version, num } = rows[0]!;
  // server_version may carry a distribution's suffix ("15.18 (Debian 15.18-0+deb12u1)").
  return { version: version.split(" ")[0]!, major: Math.floor(Number(num) / 10_000) };
}

// The tables of the schema the service's migrations write to (the first on search_path, normally
// public): the ones a drill counts and a restore replaces.
const TABLES = `
  SELECT c.relname AS name
    FROM pg_class c
   WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
   ORDER BY c.relname`;

/** Rows per table of the current schema: a scan each. */
export async function countTables(client: pg.Client | pg.Pool): Promise<Record<string, number>> {
  const { rows } = await client.query<{ name: string }>(TABLES);
  const counts: Record<string, number> = {};
  for (const { name } of rows) {
    const quoted = `"${name.replaceAll('"', '""')}"`;
    const result = await client.query<{ count: number }>(`SELECT count(*) AS count FROM ${quoted}`);
    counts[name] = result.rows[0]!.count;
  }
  return counts;
}

/** Whether any schema other than the system's holds a table (`except`, the migrations' record, aside). */
export async function holdsTables(client: pg.Client | pg.Pool, except?: string): Promise<boolean> {
  const { rows } = await client.query(
    `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
        AND NOT (c.relnamespace = current_schema()::regnamespace AND c.relname = $1)
      LIMIT 1`,
    [except ?? ""],
  );
  return rows.length > 0;
}

/** Other sessions on the current database, by application_name: what a restore must wait for. */
export async function otherSessions(client: pg.Client): Promise<{ count: number; names: string[] }> {
  const { rows } = await client.query<{ name: string; count: number }>(
    `SELECT coalesce(nullif(application_name, ''), '(unnamed)') AS name, count(*) AS count
       FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
      GROUP BY 1 ORDER BY 2 DESC, 1`,
  );
  return {
    count: rows.reduce((sum, row) => sum + row.count, 0),
    names: rows.map((row) => (row.count > 1 ? `${row.name} x${row.count}` : row.name)),
  };
}

const quoteIdentifier = (name: string) => `"${name.replaceAll('"', '""')}"`;

/** CREATE DATABASE from template0 (nothing an operator added to template1 comes along). */
export async function createDatabase(client: pg.Client, name: string): Promise<void> {
  await client.query(`CREATE DATABASE ${quoteIdentifier(name)} TEMPLATE template0`);
}

/** DROP DATABASE, ending any session still on it (PostgreSQL 13+). */
export async function dropDatabase(client: pg.Client, name: string): Promise<void> {
  await client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)} WITH (FORCE)`);
}
