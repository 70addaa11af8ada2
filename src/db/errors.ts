// Database failures sorted into the few kinds the rest of the service reacts to, whatever the
// engine. The HTTP layer maps kinds to responses (src/http/errors.ts) and metrics count them, so
// neither needs to know SQLite's codes or PostgreSQL's SQLSTATEs.
import { classifyPostgresError } from "./postgres/errors.ts";
import { classifySqliteError } from "./sqlite/errors.ts";
import { StorageUnavailableError } from "./storage.ts";

/** unavailable: the database is out of reach for now (connection lost, server restarting, no free connection). */
export type DatabaseErrorKind = "busy" | "full" | "constraint" | "readonly" | "corrupt" | "unavailable";

export function classifyDatabaseError(error: unknown): DatabaseErrorKind | undefined {
  if (error instanceof StorageUnavailableError) return "unavailable";
  return classifySqliteError(error) ?? classifyPostgresError(error);
}
