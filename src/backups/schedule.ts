// Scheduled backups inside the service: the engine takes an online backup (requests go on being
// served), then retention applies.
import type { Config } from "../config.ts";
import type { StorageEngine } from "../db/storage.ts";
import type { Logger } from "../logger.ts";
import { every, NEVER, type Repeating } from "./every.ts";
import type { BackupFile } from "./files.ts";
import { pruneBackups } from "./retention.ts";

export interface BackupFailure {
  message: string;
  at: Date;
}

export interface BackupSchedule extends Repeating {
  /** The most recent scheduled backup's failure, or null once one has succeeded since. */
  lastFailure(): BackupFailure | null;
}

export interface BackupScheduleOptions {
  engine: StorageEngine;
  config: Pick<Config, "backupIntervalMs" | "backupDir" | "backupKeep" | "backupMaxAgeDays">;
  logger: Logger;
  /** Called with each backup taken and kept: the off-site uploader's enqueue. */
  onBackup?: (backup: BackupFile) => void;
  /** Told how each backup ended (the metrics count them). */
  hooks?: {
    backupFinished(event: { kind: "scheduled"; outcome: "success" | "failure"; seconds: number }): void;
  };
}

export function startBackupSchedule({
  engine,
  config,
  logger,
  onBackup,
  hooks,
}: BackupScheduleOptions): BackupSchedule {
  const { backupIntervalMs } = config;
  let failure: BackupFailure | null = null;
  if (backupIntervalMs === null) {
    return { ...NEVER, lastFailure: () => null };
  }

  const repeating = every(backupIntervalMs, async (signal) => {
    const started = performance.now();
    const finished = (outcome: "success" | "failure") =>
      hooks?.backupFinished({ kind: "scheduled", outcome, seconds: (performance.now() - started) / 1000 });
    try {
      const backup = await engine.backup({ backupDir: config.backupDir, kind: "scheduled", signal });
      const pruned = pruneBackups({
        database: engine.database,
        backupDir: config.backupDir,
        keep: config.backupKeep,
        maxAgeDays: config.backupMaxAgeDays,
      });
      failure = null;
      finished("success");
      logger.info(
        {
          backup: backup.path,
          bytes: backup.sizeBytes,
          ms: Math.round(performance.now() - started),
          pruned: pruned.map((b) => b.file),
        },
        "scheduled backup taken",
      );
      onBackup?.(backup);
    } catch (error) {
      if (signal.aborted) return;
      failure = { message: (error as Error).message, at: new Date() };
      finished("failure");
      logger.error({ err: error, backupDir: config.backupDir }, "scheduled backup failed");
    }
  });
  logger.info({ intervalMs: backupIntervalMs, backupDir: config.backupDir }, "scheduled backups on");
  return { ...repeating, lastFailure: () => failure };
}
