// Database failures sorted into the few kinds the rest of the service reacts to, whatever the
// engine. The HTTP layer maps kinds to responses (src/http/errors.ts) and metrics count them, so
// neither needs to know SQLite's codes or PostgreSQL's SQLSTATEs.
import { classifySqliteError } from "./sqlite/errors.ts";
import { StorageUnavailableError } from "./storage.ts";

export type DatabaseErrorKind = "busy" | "full" | "constraint" | "readonly" | "corrupt" | "unavailable";

export function classifyDatabaseError(error: unknown): DatabaseErrorKind | undefined {
  if (error instanceof StorageUnavailableError) return "unavailable";
  return classifySqliteError(error);
}
