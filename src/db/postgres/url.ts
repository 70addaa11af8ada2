// DATABASE_URL, read without loading pg: parsed once for validation (config.ts), shown without its
// password (logs, /health, command output), pointed at another database (scratch copies), and
// handed to libpq's tools with the password in their environment, never on a command line.

export interface DatabaseUrl {
  scheme: "postgres" | "postgresql";
  user: string;
  password: string;
  /** host, host:port or [v6]:port; empty for libpq's default (a local socket or localhost). */
  authority: string;
  database: string;
  /** Query parameters (sslmode=require, host=/run/postgresql, ...), passed through as they are. */
  params: URLSearchParams;
}

// scheme://[user[:password]@][authority][/database][?params]. A password holding @ / ? # or %
// must be percent-encoded, as libpq requires too.
const URL_PATTERN = /^(postgres|postgresql):\/\/(?:([^@/?#]*)@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/;

/** The parts of a PostgreSQL URL, or a sentence saying what is wrong (never echoing the value). */
export function parseDatabaseUrl(raw: string): DatabaseUrl | string {
  const match = URL_PATTERN.exec(raw);
  if (!match) {
    return "expected postgres://USER:PASSWORD@HOST:5432/DATABASE (or postgresql://...; percent-encode @ / ? # % in the password)";
  }
  const [, scheme, userinfo = "", authority = "", path = "", query = ""] = match;
  const colon = userinfo.indexOf(":");
  let user: string;
  let password: string;
  let database: string;
  try {
    user = decodeURIComponent(colon === -1 ? userinfo : userinfo.slice(0, colon));
    password = colon === -1 ? "" : decodeURIComponent(userinfo.slice(colon + 1));
    database = decodeURIComponent(path);
  } catch {
    return "holds a malformed percent-encoding (%XX)";
  }
  if (database === "" || database.includes("/")) {
    return "names no database: end it with /DATABASE, e.g. postgres://USER:PASSWORD@HOST:5432/app";
  }
  return {
    scheme: scheme as DatabaseUrl["scheme"],
    user,
    password,
    authority,
    database,
    params: new URLSearchParams(query),
  };
}

/** The URL for `database` on the same server; `password: false` leaves the password out. */
export function formatDatabaseUrl(
  url: DatabaseUrl,
  { database = url.database, password = true }: { database?: string; password?: boolean } = {},
): string {
  const user = url.user ? encodeURIComponent(url.user) : "";
  const secret = password && url.password ? `:${encodeURIComponent(url.password)}` : "";
  const query = url.params.size > 0 ? `?${url.params}` : "";
  return `${url.scheme}://${user || secret ? `${user}${secret}@` : ""}${url.authority}/${encodeURIComponent(database)}${query}`;
}

/**
 * What logs and /health show: scheme, user, server and database; no password, and of the query
 * only the socket folder and sslmode (others, such as sslpassword, may be secrets).
 */
export function describeDatabaseUrl(url: DatabaseUrl): string {
  const shown = new URLSearchParams();
  for (const name of ["host", "port", "sslmode"]) {
    const value = url.params.get(name);
    if (value !== null) shown.set(name, value);
  }
  const user = url.user ? `${encodeURIComponent(url.user)}@` : "";
  const query = shown.size > 0 ? `?${shown}` : "";
  return `${url.scheme}://${user}${url.authority}/${encodeURIComponent(url.database)}${query}`;
}

/** Where the server is, for messages: "db.example.com:5432", or the socket folder. */
export function describeServer(url: DatabaseUrl): string {
  const host = url.params.get("host");
  if (url.authority) return url.authority;
  return host ? `socket ${host}` : "localhost (libpq's default)";
}

/**
 * How libpq's tools (pg_dump, pg_restore, psql) reach `database`: the URL without its password as
 * --dbname (a command line is visible to every user of the machine in ps), the password in the
 * child's environment only.
 */
export function libpqConnection(
  url: DatabaseUrl,
  database = url.database,
): { dbname: string; env: Record<string, string> } {
  return {
    dbname: formatDatabaseUrl(url, { database, password: false }),
    env: url.password ? { PGPASSWORD: url.password } : {},
  };
}
