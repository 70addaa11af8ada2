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
  /**
   * Holds the schedule: aborts a backup in progress (its partial file is removed) and takes none
   * until resume(). For work that must not race a backup, such as an online restore.
   */
  pause(): Promise<void>;
  /** The next backup comes one interval after this call. */
  resume(): void;
  /** Cancels the timer and aborts a backup in progress, for good. */
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
  if (backupIntervalMs === null) {
    return { lastFailure: () => null, pause: async () => {}, resume: () => {}, stop: async () => {} };
  }

  let timer: NodeJS.Timeout | undefined;
  let current: { abort: AbortController; done: Promise<void> } | undefined;
  let held = false;

  const run = async (signal: AbortSignal) => {
    const started = performance.now();
    try {
      const backup = await engine.backup({ backupDir: config.backupDir, kind: "scheduled", signal });
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
      if (signal.aborted) return;
      failure = { message: (error as Error).message, at: new Date() };
      logger.error({ err: error, backupDir: config.backupDir }, "scheduled backup failed");
    }
  };

  // The next backup is scheduled when this one ends (not on a fixed beat), so a slow copy never
  // overlaps the next; unref'd, so the timer alone never keeps the process alive.
  const schedule = () => {
    timer = setTimeout(() => {
      const abort = new AbortController();
      current = {
        abort,
        done: run(abort.signal).finally(() => {
          current = undefined;
          if (!held) schedule();
        }),
      };
    }, backupIntervalMs);
    timer.unref();
  };
  const hold = async () => {
    held = true;
    clearTimeout(timer);
    current?.abort.abort();
    await current?.done;
  };
  schedule();
  logger.info({ intervalMs: backupIntervalMs, backupDir: config.backupDir }, "scheduled backups on");

  let stopped = false;
  return {
    lastFailure: () => failure,
    pause: hold,
    resume() {
      if (stopped || !held) return;
      held = false;
      schedule();
    },
    async stop() {
      stopped = true;
      await hold();
    },
  };
}
