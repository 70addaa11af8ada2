// Rehearsals on a scratch copy, touching nothing live: a restore drill (the newest backup restored,
// migrated and checked) and a dry run of pending migrations against a fresh snapshot.
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "../logger.ts";
import {
  type BackupFile,
  findNewestBackup,
  openForReading,
  takeBackup,
  type Verdict,
  verifyDatabaseFile,
} from "./backup.ts";
import { openDatabase } from "./database.ts";
import { runMigrations } from "./migrator.ts";
import { countRows } from "./stats.ts";

export interface RehearsalOptions {
  databasePath: string;
  backupDir: string;
  migrationsDir: string;
  logger: Logger;
}

export interface DrillReport {
  backup: BackupFile;
  /** Migrations the backup lacked, applied to the scratch copy. */
  migrated: string[];
  verdict: Verdict;
  /** Rows per table in the restored copy and in the live database (null: no such table there). */
  tables: Record<string, { restored: number | null; live: number | null }>;
}

export class DrillError extends Error {
  override name = "DrillError";
}

/** Restores the newest backup into a scratch file, migrates and verifies it, compares row counts. */
export async function runRestoreDrill(options: RehearsalOptions): Promise<DrillReport> {
  const { databasePath, backupDir } = options;
  const backup = findNewestBackup(backupDir, databasePath);
  if (!backup) throw new DrillError(`no backup of ${databasePath} in ${backupDir}: nothing to drill`);
  return withScratch(backupDir, async (scratch) => {
    const copy = path.join(scratch, path.basename(databasePath));
    fs.copyFileSync(backup.path, copy);
    const { migrated, restored } = await migrateCopy(copy, scratch, options).catch((error: Error) => {
      throw new DrillError(
        `drill FAILED: ${backup.file} restores, but the migrations fail on it: ${error.message}`,
        {
          cause: error,
        },
      );
    });
    const verdict = verifyDatabaseFile(copy);
    const live = fs.existsSync(databasePath) ? readRowCounts(databasePath) : {};
    const tables: DrillReport["tables"] = {};
    for (const name of [...new Set([...Object.keys(restored), ...Object.keys(live)])].sort()) {
      tables[name] = { restored: restored[name] ?? null, live: live[name] ?? null };
    }
    return { backup, migrated, verdict, tables };
  });
}

export interface DryRunReport {
  /** Migrations that were pending, all applied to the copy without error. */
  applied: string[];
}

/**
 * Applies the pending migrations to a fresh snapshot of the live database (VACUUM INTO, safe
 * while the service runs) in a scratch folder; throws what the real run would throw.
 */
export async function dryRunMigrations(options: RehearsalOptions): Promise<DryRunReport> {
  const { databasePath, backupDir } = options;
  return withScratch(backupDir, async (scratch) => {
    const copy = path.join(scratch, path.basename(databasePath));
    if (fs.existsSync(databasePath) && fs.statSync(databasePath).size > 0) {
      fs.renameSync(takeBackup({ databasePath, backupDir: scratch, kind: "manual" }).path, copy);
    }
    const { migrated } = await migrateCopy(copy, scratch, options);
    return { applied: migrated };
  });
}

async function migrateCopy(
  file: string,
  scratch: string,
  { migrationsDir, logger }: RehearsalOptions,
): Promise<{ migrated: string[]; restored: Record<string, number> }> {
  const db = openDatabase({ path: file, backupDir: scratch, busyTimeoutMs: 1_000 });
  try {
    // No pre-migration backup: the scratch file is itself a copy, deleted afterwards.
    const { names } = await runMigrations({
      db,
      migrationsDir,
      backupDir: scratch,
      logger,
      backupFirst: false,
    });
    return { migrated: names, restored: countRows(db.sqlite) };
  } finally {
    db.close();
  }
}

function readRowCounts(databasePath: string): Record<string, number> {
  const db = openForReading(databasePath);
  try {
    return countRows(db);
  } finally {
    db.close();
  }
}

// In the backup folder rather than /tmp: it is on the data volume, with room for a database-sized
// copy (a container's /tmp is often a small tmpfs). The leading dot keeps it out of listings.
async function withScratch<T>(backupDir: string, work: (dir: string) => Promise<T>): Promise<T> {
  fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const dir = fs.mkdtempSync(path.join(backupDir, ".rehearsal-"));
  try {
    return await work(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
