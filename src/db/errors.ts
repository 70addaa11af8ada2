// SQLite's error codes, sorted into the few kinds the rest of the service reacts to. The HTTP
// layer maps kinds to responses, so it never needs to know SQLite's codes (or another dialect's).

export type DatabaseErrorKind = "busy" | "full" | "constraint" | "readonly" | "corrupt";

export function classifyDatabaseError(error: unknown): DatabaseErrorKind | undefined {
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
