// Restore inside the running service (the operations API's POST /admin/restore): one at a time,
// the backup verified before anything changes, requests held off with 503 while the database is
// swapped, and the previous database put back if anything fails after the swap. SQLite only: on
// an engine whose database other processes share, the command-line restore is the safe way.
import type { Config } from "../config.ts";
import { runMigrations } from "../db/migrator.ts";
import type { Storage } from "../db/storage.ts";
import type { Maintenance } from "../http/maintenance.ts";
import type { Logger } from "../logger.ts";
import type { Repeating } from "./every.ts";
import { type BackupFile, listBackups } from "./files.ts";

export interface OnlineRestoreDeps {
  storage: Storage;
  maintenance: Maintenance;
  /** The jobs that must not race the swap (scheduled backups and drills): held until it ends. */
  jobs: Pick<Repeating, "pause" | "resume">;
  config: Pick<Config, "backupDir" | "migrationsDir" | "shutdownTimeoutMs">;
  logger: Logger;
}

export interface OnlineRestoreResult {
  backup: BackupFile;
  /** The database as it was before, kept as a pre-restore backup. */
  previous: BackupFile | null;
  /** Migrations the backup lacked, applied after the swap. */
  migrated: string[];
  /** Requests still running when the wait for them ended (they then saw 503). */
  unfinished: number;
  ms: number;
}

/**
 * busy: another restore runs; unsupported: the engine shares its database; not_found; unsound: the
 * backup failed verification; refused: the engine would not restore (another process holds the
 * database), nothing changed; failed: something failed after the swap, the previous database is back.
 */
export const RESTORE_FAILURES = ["busy", "unsupported", "not_found", "unsound", "refused", "failed"] as const;

/**
 * Why a restore did not happen or did not stick. Either way the service serves the database it
 * served before: a failure after the swap puts the previous database back.
 */
export class OnlineRestoreError extends Error {
  override name = "OnlineRestoreError";
  readonly reason: (typeof RESTORE_FAILURES)[number];
  constructor(reason: OnlineRestoreError["reason"], message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.reason = reason;
  }
}

export interface OnlineRestore {
  readonly running: boolean;
  /** Restores the backup named `name` (as the listing names it) or the newest one ("latest"). */
  restore(name: string): Promise<OnlineRestoreResult>;
}

export function createOnlineRestore(deps: OnlineRestoreDeps): OnlineRestore {
  const { storage, maintenance, jobs, config, logger } = deps;
  const { engine } = storage;
  let running = false;

  const find = (name: string): BackupFile => {
    const mine = listBackups(config.backupDir).filter((b) => b.database === engine.database);
    const backup = name === "latest" ? mine[0] : mine.find((b) => b.file === name);
    if (!backup) {
      throw new OnlineRestoreError(
        "not_found",
        name === "latest" ? "there is no backup to restore" : `no backup named ${name}`,
      );
    }
    return backup;
  };

  const swap = async (backup: BackupFile) => {
    await storage.suspend!();
    let restored: Awaited<ReturnType<typeof engine.restore>>;
    try {
      restored = await engine.restore({ backupDir: config.backupDir, source: backup.path });
    } catch (error) {
      // The engine's restore changes nothing when it fails: reopen what was there.
      await storage.resume!();
      throw new OnlineRestoreError("failed", `restore refused: ${(error as Error).message}`, {
        cause: error,
      });
    }
    try {
      await storage.resume!();
      const { names } = await runMigrations({
        storage,
        migrationsDir: config.migrationsDir,
        backupDir: config.backupDir,
        logger,
        // The restored backup is itself the copy to go back to.
        backupFirst: false,
      });
      return { previous: restored.previous, migrated: names };
    } catch (error) {
      await putBack(restored.previous, error);
      throw new OnlineRestoreError(
        "failed",
        `${backup.file} was restored, but ${(error as Error).message}; the previous database is back in place`,
        { cause: error },
      );
    }
  };

  const putBack = async (previous: BackupFile | null, cause: unknown) => {
    logger.error(
      { err: cause, previous: previous?.file },
      "online restore failed after the swap: putting the previous database back",
    );
    await storage.suspend!();
    if (previous) await engine.restore({ backupDir: config.backupDir, source: previous.path });
    await storage.resume!();
  };

  return {
    get running() {
      return running;
    },
    async restore(name) {
      if (running)
        throw new OnlineRestoreError("busy", "a restore is already running; try again when it ends");
      if (!storage.suspend || !storage.resume) {
        throw new OnlineRestoreError(
          "unsupported",
          `online restore is not offered on ${engine.name}, where other instances may share the database: stop every instance and run npm run db:restore`,
        );
      }
      running = true;
      const started = performance.now();
      try {
        const backup = find(name);
        const verdict = await engine.verify(backup.path);
        if (!verdict.ok) {
          const findings = verdict.checks.flatMap((c) => c.findings).slice(0, 3);
          throw new OnlineRestoreError(
            "unsound",
            `${backup.file} failed verification: ${findings.join("; ")}`,
          );
        }
        logger.info({ backup: backup.file }, "online restore: verified, entering maintenance");
        const { unfinished } = await maintenance.begin(config.shutdownTimeoutMs);
        await jobs.pause();
        try {
          const { previous, migrated } = await swap(backup);
          const ms = Math.round(performance.now() - started);
          logger.info(
            { backup: backup.file, previous: previous?.file, migrated, unfinished, ms },
            "online restore done",
          );
          return { backup, previous, migrated, unfinished, ms };
        } finally {
          jobs.resume();
          maintenance.end();
        }
      } finally {
        running = false;
      }
    },
  };
}
