// What /health reports about the database. Everything here is O(1) in the database's size except
// the row counts, which are a scan per table: cached for a few seconds, and left out (null) for a
// database too large to scan without stalling the requests behind it.
import fs from "node:fs";
import path from "node:path";
import { findNewestBackup } from "./backup.ts";
import type { BackupFailure } from "./backup-schedule.ts";
import type { Database, SqliteConnection } from "./database.ts";
import { createMigrationStatusReader, type MigrationFile } from "./migrator.ts";

export interface DatabaseStats {
  path: string;
  journalMode: string;
  sqliteVersion: string;
  sizeBytes: number;
  walSizeBytes: number;
  pageSize: number;
  pageCount: number;
  freelistCount: number;
  /**
   * Bytes the database can still grow by: the smaller of the free space on its disk and what
   * `max_page_count` leaves. Near zero, writes fail with SQLITE_FULL.
   */
  availableBytes: number;
  migrations: { applied: number; pending: number; latest: string | null };
  /**
   * The newest backup on disk (null fields when there is none) and, when the service's latest
   * scheduled backup failed, that error and its age. null: no backup and no failure.
   */
  lastBackup: {
    file: string | null;
    createdAt: string | null;
    ageSeconds: number | null;
    error?: { message: string; at: string; ageSeconds: number };
  } | null;
  /** Rows per table; null when the database is larger than `countRowsUpToBytes`. */
  tables: Record<string, number> | null;
}

export interface StatsReaderOptions {
  db: Database;
  backupDir: string;
  migrations: MigrationFile[];
  /** The scheduled backups' latest failure, if any. */
  backupFailure?: () => BackupFailure | null;
  /** How long row counts and the backup listing are reused. */
  cacheMs?: number;
  /**
   * Largest database whose rows are counted. A count reads the whole table: about a second of
   * blocked event loop per GB, every `cacheMs`, which every request waiting meanwhile would pay.
   */
  countRowsUpToBytes?: number;
  now?: () => number;
}

interface Slow {
  at: number;
  tables: Record<string, number> | null;
  lastBackup: { file: string; createdAt: Date } | null;
}

/** Returns a function that reads the current stats; it throws when the database cannot be queried. */
export function createStatsReader({
  db,
  backupDir,
  migrations,
  backupFailure = () => null,
  cacheMs = 5_000,
  countRowsUpToBytes = 64 * 2 ** 20,
  now = Date.now,
}: StatsReaderOptions): () => DatabaseStats {
  const { sqlite } = db;
  const sqliteVersion = (sqlite.prepare("SELECT sqlite_version()").pluck().get() as string) ?? "";
  // Prepared once: preparing these on every probe cost more than everything else /health does.
  const readPragmas = sqlite.prepare(
    "SELECT journal_mode, page_size, page_count, freelist_count, max_page_count FROM pragma_journal_mode(), pragma_page_size(), pragma_page_count(), pragma_freelist_count(), pragma_max_page_count()",
  );
  const readMigrationStatus = createMigrationStatusReader(db, migrations);
  let slow: Slow | undefined;

  const readSlow = (bytes: number): Slow => {
    const tables = bytes <= countRowsUpToBytes ? countRows(sqlite) : null;
    let newest: ReturnType<typeof findNewestBackup>;
    try {
      newest = findNewestBackup(backupDir, db.path);
    } catch {
      // An unreadable backup folder says nothing about the database; the failing backups report it.
      newest = undefined;
    }
    return {
      at: now(),
      tables,
      lastBackup: newest ? { file: newest.file, createdAt: newest.createdAt } : null,
    };
  };

  return () => {
    const current = now();
    const pragmas = readPragmas.get() as {
      journal_mode: string;
      page_size: number;
      page_count: number;
      freelist_count: number;
      max_page_count: number;
    };
    if (!slow || current - slow.at >= cacheMs) slow = readSlow(pragmas.page_size * pragmas.page_count);
    const status = readMigrationStatus();
    const pageLimitBytes =
      (pragmas.max_page_count - pragmas.page_count + pragmas.freelist_count) * pragmas.page_size;
    return {
      path: db.path,
      journalMode: pragmas.journal_mode,
      sqliteVersion,
      sizeBytes: fileSize(db.path),
      walSizeBytes: fileSize(`${db.path}-wal`),
      pageSize: pragmas.page_size,
      pageCount: pragmas.page_count,
      freelistCount: pragmas.freelist_count,
      availableBytes: Math.min(pageLimitBytes, diskFreeBytes(path.dirname(db.path))),
      migrations: {
        applied: status.applied.length,
        pending: status.pending.length,
        latest: status.applied.at(-1) ?? null,
      },
      lastBackup: describeLastBackup(slow.lastBackup, backupFailure(), current),
      tables: slow.tables,
    };
  };
}

function describeLastBackup(
  newest: Slow["lastBackup"],
  failure: BackupFailure | null,
  now: number,
): DatabaseStats["lastBackup"] {
  const age = (date: Date) => Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (!newest && !failure) return null;
  return {
    file: newest?.file ?? null,
    createdAt: newest?.createdAt.toISOString() ?? null,
    ageSeconds: newest ? age(newest.createdAt) : null,
    ...(failure && {
      error: { message: failure.message, at: failure.at.toISOString(), ageSeconds: age(failure.at) },
    }),
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
