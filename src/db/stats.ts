// What /health reports about the database. Everything here is O(1) in the database's size except
// the row counts, which are a scan per table and so are cached for a few seconds.
import fs from "node:fs";
import { findNewestBackup } from "./backup.ts";
import type { Database } from "./database.ts";
import { type MigrationFile, readMigrationStatus } from "./migrator.ts";

export interface DatabaseStats {
  path: string;
  journalMode: string;
  sqliteVersion: string;
  sizeBytes: number;
  walSizeBytes: number;
  pageSize: number;
  pageCount: number;
  freelistCount: number;
  migrations: { applied: number; pending: number; latest: string | null };
  lastBackup: { file: string; createdAt: string; ageSeconds: number } | null;
  tables: Record<string, number>;
}

export interface StatsReaderOptions {
  db: Database;
  backupDir: string;
  migrations: MigrationFile[];
  /** How long row counts and the backup listing are reused. */
  cacheMs?: number;
  now?: () => number;
}

interface Slow {
  at: number;
  tables: Record<string, number>;
  lastBackup: { file: string; createdAt: Date } | null;
}

/** Returns a function that reads the current stats; it throws when the database cannot be queried. */
export function createStatsReader({
  db,
  backupDir,
  migrations,
  cacheMs = 5_000,
  now = Date.now,
}: StatsReaderOptions): () => DatabaseStats {
  const { sqlite } = db;
  const pragma = (name: string) => sqlite.pragma(name, { simple: true });
  const sqliteVersion = (sqlite.prepare("SELECT sqlite_version()").pluck().get() as string) ?? "";
  let slow: Slow | undefined;

  const readSlow = (): Slow => {
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
    const newest = findNewestBackup(backupDir);
    return {
      at: now(),
      tables,
      lastBackup: newest ? { file: newest.file, createdAt: newest.createdAt } : null,
    };
  };

  return () => {
    const current = now();
    if (!slow || current - slow.at >= cacheMs) slow = readSlow();
    const status = readMigrationStatus(db, migrations);
    return {
      path: db.path,
      journalMode: String(pragma("journal_mode")),
      sqliteVersion,
      sizeBytes: fileSize(db.path),
      walSizeBytes: fileSize(`${db.path}-wal`),
      pageSize: Number(pragma("page_size")),
      pageCount: Number(pragma("page_count")),
      freelistCount: Number(pragma("freelist_count")),
      migrations: {
        applied: status.applied.length,
        pending: status.pending.length,
        latest: status.applied.at(-1) ?? null,
      },
      lastBackup: slow.lastBackup && {
        file: slow.lastBackup.file,
        createdAt: slow.lastBackup.createdAt.toISOString(),
        ageSeconds: Math.max(0, Math.round((current - slow.lastBackup.createdAt.getTime()) / 1000)),
      },
      tables: slow.tables,
    };
  };
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}
