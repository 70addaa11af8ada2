// Scheduled backups inside the service: the engine takes an online backup (requests go on being
// served), then retention applies.
import type { Config } from "../config.ts";
import type { StorageEngine } from "../db/storage.ts";
import type { Logger } from "../logger.ts";
import { pruneBackups } from "./retention.ts";

export interface BackupFailure {
  message: string;
  at: Date;
}

export interface BackupSchedule {
  /** The most recent scheduled backup's failure, or null once one has succeeded since. */
  lastFailure(): BackupFailure | null;
  /** Cancels the timer and aborts a backup in progress (its partial file is removed). */
  stop(): Promise<void>;
}

export interface BackupScheduleOptions {
  engine: StorageEngine;
  config: Pick<Config, "backupIntervalMs" | "backupDir" | "backupKeep" | "backupMaxAgeDays">;
  logger: Logger;
}

export function startBackupSchedule({ engine, config, logger }: BackupScheduleOptions): BackupSchedule {
  const { backupIntervalMs } = config;
  let failure: BackupFailure | null = null;
  if (backupIntervalMs === null) return { lastFailure: () => null, stop: async () => {} };

  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;

  const run = async () => {
    const started = performance.now();
    try {
      const backup = await engine.backup({
        backupDir: config.backupDir,
        kind: "scheduled",
        signal: abort.signal,
      });
      const pruned = pruneBackups({
        database: engine.database,
        backupDir: config.backupDir,
        keep: config.backupKeep,
        maxAgeDays: config.backupMaxAgeDays,
      });
      failure = null;
      logger.info(
        {
          backup: backup.path,
          bytes: backup.sizeBytes,
          ms: Math.round(performance.now() - started),
          pruned: pruned.map((b) => b.file),
        },
        "scheduled backup taken",
      );
    } catch (error) {
      if (abort.signal.aborted) return;
      failure = { message: (error as Error).message, at: new Date() };
      logger.error({ err: error, backupDir: config.backupDir }, "scheduled backup failed");
    }
  };

  // The next backup is scheduled when this one ends (not on a fixed beat), so a slow copy never
  // overlaps the next; unref'd, so the timer alone never keeps the process alive.
  const schedule = () => {
    timer = setTimeout(() => {
      running = run().finally(() => {
        running = undefined;
        if (!abort.signal.aborted) schedule();
      });
    }, backupIntervalMs);
    timer.unref();
  };
  schedule();
  logger.info({ intervalMs: backupIntervalMs, backupDir: config.backupDir }, "scheduled backups on");

  return {
    lastFailure: () => failure,
    async stop() {
      abort.abort();
      clearTimeout(timer);
      await running;
    },
  };
}
