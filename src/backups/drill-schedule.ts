// Restore drills on BACKUP_DRILL_INTERVAL inside the service: the proof, repeated, that the newest
// backup restores. From the bucket when off-site backups are on (the copy that survives the host),
// else from BACKUP_DIR; into a scratch database, migrated, verified and counted, nothing live touched.
import type { Config } from "../config.ts";
import type { StorageEngine } from "../db/storage.ts";
import type { Logger } from "../logger.ts";
import { every, NEVER, type Repeating } from "./every.ts";
import { runRestoreDrill } from "./rehearsal.ts";

export interface DrillOutcome {
  ok: boolean;
  /** Where the drilled backup came from. */
  source: "bucket" | "local";
  /** The backup's name; null when none could be found or fetched. */
  backup: string | null;
  at: Date;
  ms: number;
  /** Why it failed, in one line. */
  message?: string;
}

export interface DrillSchedule extends Repeating {
  /** The latest drill's outcome; null before the first. */
  last(): DrillOutcome | null;
}

export interface DrillScheduleOptions {
  engine: StorageEngine;
  config: Pick<Config, "backupDrillIntervalMs" | "backupDir" | "migrationsDir" | "offsite">;
  logger: Logger;
  /** Called with each outcome (metrics). */
  onDrill?: (outcome: DrillOutcome) => void;
}

export function startDrillSchedule({ engine, config, logger, onDrill }: DrillScheduleOptions): DrillSchedule {
  let last: DrillOutcome | null = null;
  const interval = config.backupDrillIntervalMs;
  if (interval === null) {
    return { ...NEVER, last: () => null };
  }
  const { offsite } = config;
  const source = offsite ? "bucket" : "local";
  const repeating = every(interval, async (signal) => {
    const started = performance.now();
    let outcome: DrillOutcome;
    try {
      const common = { engine, backupDir: config.backupDir, migrationsDir: config.migrationsDir, logger };
      // The bucket's code loads only when off-site backups are configured.
      const report = offsite
        ? (
            await import("./offsite/operations.ts").then((m) =>
              m.drillFromBucket({ ...common, offsite, which: "latest", signal }),
            )
          ).drill
        : await runRestoreDrill(common);
      const failed = report.verdict.checks.flatMap((c) => c.findings);
      outcome = {
        ok: report.verdict.ok,
        source,
        backup: report.backup.file,
        at: new Date(),
        ms: Math.round(performance.now() - started),
        ...(failed.length > 0 && { message: failed.slice(0, 3).join("; ") }),
      };
    } catch (error) {
      if (signal.aborted) return;
      outcome = {
        ok: false,
        source,
        backup: null,
        at: new Date(),
        ms: Math.round(performance.now() - started),
        message: (error as Error).message,
      };
    }
    last = outcome;
    onDrill?.(outcome);
    if (outcome.ok) logger.info({ drill: outcome }, "restore drill passed");
    else logger.error({ drill: outcome }, "restore drill FAILED");
  });
  logger.info({ intervalMs: interval, source }, "scheduled restore drills on");
  return { ...repeating, last: () => last };
}
