// Database failures sorted into the few kinds the rest of the service reacts to, whatever the
// engine. The HTTP layer maps kinds to responses (src/http/errors.ts) and metrics count them, so
// neither needs to know SQLite's codes or PostgreSQL's SQLSTATEs.
import { classifySqliteError } from "./sqlite/errors.ts";

export type DatabaseErrorKind = "busy" | "full" | "constraint" | "readonly" | "corrupt";

export function classifyDatabaseError(error: unknown): DatabaseErrorKind | undefined {
  return classifySqliteError(error);
}
