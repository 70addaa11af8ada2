// What the service knows about its database at a glance, whatever the engine: the engine's own
// facts, migrations, the newest backup and row counts. Cheap per call: row counts and the backup
// listing are reused for a few seconds, and row counts are left out (null) where the engine says
// counting would stall the requests behind it.

import { findNewestBackup } from "../backups/files.ts";
import type { BackupFailure } from "../backups/schedule.ts";
import { type MigrationFile, readMigrationStatus } from "./migrator.ts";
import type { EngineName, Storage } from "./storage.ts";

export interface DatabaseStatus {
  engine: EngineName;
  /** Engine facts (file, journal mode and sizes on SQLite; server and pool on PostgreSQL). */
  [fact: string]: unknown;
  /** Bytes the database can still grow by, where the engine knows it. */
  availableBytes: number | null;
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
  /** Rows per table; null when the database is too large to count on a probe. */
  tables: Record<string, number> | null;
}

export interface DatabaseReport {
  status: DatabaseStatus;
  /** Why the database cannot serve well, in words for an operator; undefined when it can. */
  problem: string | undefined;
}

export interface StatusReaderOptions {
  storage: Storage;
  backupDir: string;
  migrations: MigrationFile[];
  /** The scheduled backups' latest failure, if any. */
  backupFailure?: () => BackupFailure | null;
  /** How long row counts and the backup listing are reused. */
  cacheMs?: number;
  now?: () => number;
}

// Below this, a write of BODY_LIMIT's default size plus its WAL frames may no longer fit.
export const MIN_AVAILABLE_BYTES = 1024 * 1024;

interface Slow {
  at: number;
  tables: Record<string, number> | null;
  lastBackup: { file: string; createdAt: Date } | null;
}

/** Returns a function that reads the current report; it rejects when the database cannot be queried. */
export function createStatusReader({
  storage,
  backupDir,
  migrations,
  backupFailure = () => null,
  cacheMs = 5_000,
  now = Date.now,
}: StatusReaderOptions): () => Promise<DatabaseReport> {
  const { engine } = storage;
  let slow: Slow | undefined;
  let refreshing: Promise<Slow> | undefined;

  const readSlow = async (): Promise<Slow> => {
    const tables = await storage.countRowsIfSmall();
    let newest: ReturnType<typeof findNewestBackup>;
    try {
      newest = findNewestBackup(backupDir, engine.database);
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

  return async () => {
    const health = await storage.readHealth();
    const current = now();
    if (!slow || current - slow.at >= cacheMs) {
      // One refresh at a time: on an engine that counts asynchronously (PostgreSQL), every probe
      // arriving during a count would otherwise start a count of its own.
      refreshing ??= readSlow().finally(() => {
        refreshing = undefined;
      });
      slow = await refreshing;
    }
    const { applied, pending } = await readMigrationStatus(storage, migrations);
    const status: DatabaseStatus = {
      engine: engine.name,
      ...health.facts,
      availableBytes: health.availableBytes,
      migrations: { applied: applied.length, pending: pending.length, latest: applied.at(-1) ?? null },
      lastBackup: describeLastBackup(slow.lastBackup, backupFailure(), current),
      tables: slow.tables,
    };
    return { status, problem: problemOf(health.problem, status) };
  };
}

function problemOf(engineProblem: string | undefined, status: DatabaseStatus): string | undefined {
  if (engineProblem) return engineProblem;
  if (status.migrations.pending > 0) {
    return `${status.migrations.pending} migration(s) pending: run npm run migrate`;
  }
  const { availableBytes } = status;
  if (availableBytes !== null && availableBytes < MIN_AVAILABLE_BYTES) {
    return `storage is full: ${availableBytes} bytes left for the database (free disk space or max_page_count); writes answer 507 storage_full, reads still work`;
  }
  return undefined;
}

function describeLastBackup(
  newest: Slow["lastBackup"],
  failure: BackupFailure | null,
  now: number,
): DatabaseStatus["lastBackup"] {
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
