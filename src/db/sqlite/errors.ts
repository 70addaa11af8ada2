// SQLite's error codes (better-sqlite3's `code`: SQLITE_BUSY, SQLITE_CONSTRAINT_UNIQUE, ...), sorted
// into the kinds of ../errors.ts.
import type { DatabaseErrorKind } from "../errors.ts";

export function classifySqliteError(error: unknown): DatabaseErrorKind | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !code.startsWith("SQLITE_")) return undefined;
  // Extended codes (SQLITE_BUSY_SNAPSHOT, SQLITE_CONSTRAINT_UNIQUE, ...) share their primary's kind.
  const primary = code.split("_").slice(0, 2).join("_");
  switch (primary) {
    case "SQLITE_BUSY":
    case "SQLITE_LOCKED":
      return "busy";
    case "SQLITE_FULL":
      return "full";
    case "SQLITE_CONSTRAINT":
      return "constraint";
    case "SQLITE_READONLY":
      return "readonly";
    case "SQLITE_CORRUPT":
    case "SQLITE_NOTADB":
      return "corrupt";
    default:
      return undefined;
  }
}
