// Rehearsals on a scratch database, touching nothing live: a restore drill (the newest backup
// restored, migrated, verified and counted) and a dry run of pending migrations against a fresh
// snapshot. Engine-neutral: the engine makes and drops the scratch database.
import { runMigrations } from "../db/migrator.ts";
import type { StorageEngine, Verdict } from "../db/storage.ts";
import type { Logger } from "../logger.ts";
import { type BackupFile, findNewestBackup, withScratchDir } from "./files.ts";

export interface RehearsalOptions {
  engine: StorageEngine;
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

/** Restores the newest backup (or `backup`) into a scratch database, migrates and verifies it, compares row counts. */
export async function runRestoreDrill(
  options: RehearsalOptions & { backup?: BackupFile },
): Promise<DrillReport> {
  const { engine, backupDir } = options;
  const backup = options.backup ?? findNewestBackup(backupDir, engine.database);
  if (!backup) throw new DrillError(`no backup of ${engine.target} in ${backupDir}: nothing to drill`);
  return withScratchDir(backupDir, async (scratchDir) => {
    const { migrated, restored, verdict } = await migrateScratch(backup, scratchDir, options).catch(
      (error: Error) => {
        throw new DrillError(
          `drill FAILED: ${backup.file} restores, but the migrations fail on it: ${error.message}`,
          { cause: error },
        );
      },
    );
    const live = (await engine.exists()) ? await engine.countRows() : {};
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
 * Applies the pending migrations to a fresh snapshot of the live database (an online backup, safe
 * while the service runs) in a scratch folder; throws what the real run would throw.
 */
export async function dryRunMigrations(options: RehearsalOptions): Promise<DryRunReport> {
  const { engine } = options;
  return withScratchDir(options.backupDir, async (scratchDir) => {
    const snapshot = (await engine.exists())
      ? await engine.backup({ backupDir: scratchDir, kind: "manual" })
      : null;
    const { migrated } = await migrateScratch(snapshot, scratchDir, options);
    return { applied: migrated };
  });
}

async function migrateScratch(
  backup: BackupFile | null,
  scratchDir: string,
  { engine, migrationsDir, logger }: RehearsalOptions,
): Promise<{ migrated: string[]; restored: Record<string, number>; verdict: Verdict }> {
  const scratch = await engine.openScratch(backup, scratchDir);
  try {
    // No pre-migration backup: the scratch database is itself a copy, dropped afterwards.
    const { names } = await runMigrations({
      storage: scratch.storage,
      migrationsDir,
      backupDir: scratchDir,
      logger,
      backupFirst: false,
    });
    await scratch.storage.close();
    return {
      migrated: names,
      restored: await scratch.engine.countRows(),
      verdict: await scratch.engine.verify(),
    };
  } finally {
    await scratch.dispose();
  }
}
