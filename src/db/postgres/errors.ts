// PostgreSQL's failures (SQLSTATEs on the server's errors, Node's codes and pg's messages on the
// connection's) sorted into the kinds of ../errors.ts, and startup failures turned into one line.
// Reads error objects only: nothing here loads pg.
// SQLSTATEs: https://www.postgresql.org/docs/current/errcodes-appendix.html
import type { DatabaseErrorKind } from "../errors.ts";

/** A statement that may simply be run again: the server rolled it back to break a conflict. */
export const RETRYABLE_SQLSTATES = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
]);

// The socket failed or was never made; Node's codes from net and dns.
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

// pg's own errors carry no code: its messages are the only handle (pg 8.x, pg-pool 3.x).
const CONNECTION_MESSAGES = [
  "Connection terminated", // unexpectedly, or due to connection timeout
  "timeout exceeded when trying to connect", // pg-pool: no free connection within connectionTimeoutMillis
  "Client has encountered a connection error and is not queryable",
  "Client was closed and is not queryable",
  "Cannot use a pool after calling end on the pool",
  "Query read timeout", // query_timeout: the server stopped answering
  "Connection terminated due to connection timeout",
];

export function classifyPostgresError(error: unknown): DatabaseErrorKind | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return classifySqlstate(code);
  if (typeof code === "string" && NETWORK_CODES.has(code)) return "unavailable";
  if (typeof message === "string" && CONNECTION_MESSAGES.some((m) => message.includes(m))) {
    return "unavailable";
  }
  return undefined;
}

function classifySqlstate(code: string): DatabaseErrorKind | undefined {
  if (RETRYABLE_SQLSTATES.has(code)) return "busy";
  switch (code) {
    case "55P03": // lock_not_available: lock_timeout, or NOWAIT
    case "57014": // query_canceled: statement_timeout
      return "busy";
    case "53100": // disk_full
      return "full";
    case "25006": // read_only_sql_transaction: a standby, or default_transaction_read_only
      return "readonly";
    case "XX001": // data_corrupted
    case "XX002": // index_corrupted
      return "corrupt";
    default:
      break;
  }
  switch (code.slice(0, 2)) {
    case "23": // integrity_constraint_violation: unique, foreign key, check, not null, exclusion
      return "constraint";
    case "08": // connection_exception
    case "53": // insufficient_resources: too_many_connections, out_of_memory
    case "57": // operator_intervention: admin_shutdown, crash_shutdown, cannot_connect_now
    case "58": // system_error: an I/O error on the server
      return "unavailable";
    default:
      return undefined;
  }
}

/**
 * The one line a process prints when it cannot reach its database at startup, naming the server
 * and database but never the password; undefined for errors it does not recognise.
 */
export function describeStartupFailure(
  error: unknown,
  where: { server: string; database: string; user: string },
): string | undefined {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  const { server, database, user } = where;
  switch (code) {
    case "28P01": // invalid_password
    case "28000": // invalid_authorization_specification (pg_hba.conf, or no such role)
      return `PostgreSQL at ${server} refused user "${user}" for database "${database}" (${code}: ${message}): check the user and password in DATABASE_URL`;
    case "3D000": // invalid_catalog_name
      return `database "${database}" does not exist on the PostgreSQL server at ${server} (3D000): create it (createdb ${database}, or CREATE DATABASE "${database}") or fix the name in DATABASE_URL`;
    case "57P03": // cannot_connect_now
      return `PostgreSQL at ${server} is starting up or shutting down (57P03): start the service again once it accepts connections`;
    case "53300": // too_many_connections
      return `PostgreSQL at ${server} has no connection slot left (53300: ${message}): lower DATABASE_POOL_MAX across the instances or raise max_connections`;
    default:
      break;
  }
  // ENOENT: a Unix socket that is not there, the server is not running (at runtime an ENOENT may be
  // anything, so only startup reads it this way).
  if (code && (NETWORK_CODES.has(code) || code === "ENOENT")) {
    return `cannot reach PostgreSQL at ${server} (${code}): is the server running, and are DATABASE_URL's host and port right?`;
  }
  if (message?.includes("timeout")) {
    return `PostgreSQL at ${server} did not answer within DATABASE_CONNECT_TIMEOUT_MS (${message}): is the server up and reachable from here?`;
  }
  if (message && /SSL|ssl/.test(message)) {
    return `cannot open a TLS connection to PostgreSQL at ${server} (${message}): check sslmode in DATABASE_URL`;
  }
  return undefined;
}
