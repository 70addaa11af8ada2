// What SQLite tells /health and the metrics: PRAGMAs, file sizes and free space, all O(1) in the
// database's size, and row counts (a scan per table) for callers that cache them.
import fs from "node:fs";
import path from "node:path";
import type { EngineHealth } from "../storage.ts";
import type { SqliteConnection, SqliteDb } from "./open.ts";

export interface SqliteFacts {
  path: string;
  journalMode: string;
  sqliteVersion: string;
  sizeBytes: number;
  walSizeBytes: number;
  pageSize: number;
  pageCount: number;
  freelistCount: number;
}

/** Returns a function that reads the current facts; it throws when the database cannot be queried. */
export function createHealthReader(db: SqliteDb): () => EngineHealth & { facts: SqliteFacts } {
  const { sqlite } = db;
  const sqliteVersion = (sqlite.prepare("SELECT sqlite_version()").pluck().get() as string) ?? "";
  // Prepared once: preparing these on every probe cost more than everything else /health does.
  const readPragmas = sqlite.prepare(
    "SELECT journal_mode, page_size, page_count, freelist_count, max_page_count FROM pragma_journal_mode(), pragma_page_size(), pragma_page_count(), pragma_freelist_count(), pragma_max_page_count()",
  );
  return () => {
    const pragmas = readPragmas.get() as {
      journal_mode: string;
      page_size: number;
      page_count: number;
      freelist_count: number;
      max_page_count: number;
    };
    const pageLimitBytes =
      (pragmas.max_page_count - pragmas.page_count + pragmas.freelist_count) * pragmas.page_size;
    return {
      facts: {
        path: db.path,
        journalMode: pragmas.journal_mode,
        sqliteVersion,
        sizeBytes: fileSize(db.path),
        walSizeBytes: fileSize(`${db.path}-wal`),
        pageSize: pragmas.page_size,
        pageCount: pragmas.page_count,
        freelistCount: pragmas.freelist_count,
      },
      // The smaller of the free space on its disk and what max_page_count leaves: near zero, writes
      // fail with SQLITE_FULL.
      availableBytes: Math.min(pageLimitBytes, diskFreeBytes(path.dirname(db.path))),
      problem:
        pragmas.journal_mode === "wal"
          ? undefined
          : `the database is in ${pragmas.journal_mode} journal mode, not WAL`,
    };
  };
}

/** Rows per table (the schema's own tables excluded): a scan each, so callers cache or run it rarely. */
export function countRows(sqlite: SqliteConnection): Record<string, number> {
  const names = sqlite
    .prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .pluck()
    .all() as string[];
  const tables: Record<string, number> = {};
  for (const name of names) {
    tables[name] = sqlite
      .prepare(`SELECT count(*) FROM "${name.replaceAll('"', '""')}"`)
      .pluck()
      .get() as number;
  }
  return tables;
}

export function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

// One statfs call: the space an unprivileged writer may still use on the database's filesystem.
function diskFreeBytes(dir: string): number {
  try {
    const { bavail, bsize } = fs.statfsSync(dir);
    return bavail * bsize;
  } catch {
    return Number.MAX_SAFE_INTEGER;
  }
}
