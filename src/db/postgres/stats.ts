// What PostgreSQL tells /health: settings and functions that read no table (server version,
// database size, connections against max_connections, recovery, read-only), plus the pool's own
// counts from memory.
import type pg from "pg";
import type { EngineHealth } from "../storage.ts";

export type PostgresFacts = {
  /** DATABASE_URL without its password. */
  target: string;
  serverVersion: string;
  /** pg_database_size(): a stat() of the database's files, no table read. */
  sizeBytes: number;
  /** Client sessions on the whole server, against max_connections (superuser slots excluded). */
  connections: { used: number; max: number };
  /** This process's pool: open connections, idle ones, and queries waiting for one. */
  pool: { total: number; idle: number; waiting: number; max: number };
  /** true on a standby: it serves reads only. */
  inRecovery: boolean;
};

interface SlowRow {
  server_version: string;
  size: number;
  used: number;
  max_connections: string;
  reserved: string;
}

interface ProbeRow {
  in_recovery: boolean;
  read_only: string;
}

// Read at most once per cacheMs: pg_database_size() stats every file of the database, and
// pg_stat_activity copies the server's array of sessions (max_connections entries) and joins two
// catalogs; together about 3 ms of server time, which at every probe of a busy /health would make
// PostgreSQL the bottleneck. Neither reads a table.
const SLOW_QUERY = `SELECT current_setting('server_version') AS server_version,
  pg_database_size(current_database()) AS size,
  (SELECT count(*) FROM pg_stat_get_activity(NULL) WHERE backend_type = 'client backend') AS used,
  current_setting('max_connections') AS max_connections,
  current_setting('superuser_reserved_connections') AS reserved`;

// On every probe: cheap, and it proves the database answers.
const PROBE_QUERY = `SELECT pg_is_in_recovery() AS in_recovery,
  current_setting('default_transaction_read_only') AS read_only`;

export function createHealthReader(
  pool: pg.Pool,
  target: string,
  poolMax: number,
  { cacheMs = 5_000, now = Date.now }: { cacheMs?: number; now?: () => number } = {},
) {
  let slow: { at: number; row: SlowRow } | undefined;
  let refreshing: Promise<SlowRow> | undefined;
  const readSlow = async (): Promise<SlowRow> => {
    if (slow && now() - slow.at < cacheMs) return slow.row;
    refreshing ??= pool
      .query<SlowRow>(SLOW_QUERY)
      .then(({ rows }) => {
        slow = { at: now(), row: rows[0]! };
        return slow.row;
      })
      .finally(() => {
        refreshing = undefined;
      });
    return refreshing;
  };
  return async (): Promise<EngineHealth & { facts: PostgresFacts }> => {
    const { rows } = await pool.query<ProbeRow>(PROBE_QUERY);
    const probe = rows[0]!;
    const row = await readSlow();
    const max = Number(row.max_connections) - Number(row.reserved);
    const facts: PostgresFacts = {
      target,
      serverVersion: row.server_version.split(" ")[0]!,
      sizeBytes: row.size,
      connections: { used: row.used, max },
      pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: poolMax },
      inRecovery: probe.in_recovery,
    };
    return { facts, availableBytes: null, problem: problemOf(facts, probe.read_only === "on") };
  };
}
function problemOf(facts: PostgresFacts, readOnly: boolean): string | undefined {
  if (facts.inRecovery) {
    return "the database is a read-only standby (pg_is_in_recovery): writes fail; point DATABASE_URL at the primary";
  }
  if (readOnly) {
    return "default_transaction_read_only is on for this database: writes fail with 503 database_readonly";
  }
  if (facts.connections.used >= facts.connections.max) {
    return `PostgreSQL has no connection slot left (${facts.connections.used} of ${facts.connections.max} in use): new connections are refused; lower DATABASE_POOL_MAX across the instances or raise max_connections`;
  }
  return undefined;
}
