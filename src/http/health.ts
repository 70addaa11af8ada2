// /health (the database's state, 503 when it cannot serve) and /health/live (the process answers).
import { Router } from "express";
import packageJson from "../../package.json" with { type: "json" };
import type { BackupSchedule } from "../db/backup-schedule.ts";
import type { Database } from "../db/database.ts";
import { findMigrations } from "../db/migrator.ts";
import { createStatsReader, type DatabaseStats } from "../db/stats.ts";

export interface HealthOptions {
  db: Database;
  backupDir: string;
  migrationsDir: string;
  /** The service's scheduled backups, whose failures /health reports. */
  backups?: Pick<BackupSchedule, "lastFailure">;
}

export function healthRouter({ db, backupDir, migrationsDir, backups }: HealthOptions): Router {
  const router = Router();
  const readStats = createStatsReader({
    db,
    backupDir,
    migrations: findMigrations(migrationsDir),
    backupFailure: backups && (() => backups.lastFailure()),
  });

  router.get("/live", (_req, res) => {
    res.json({ status: "ok" });
  });

  router.get("/", (req, res) => {
    const base = { version: packageJson.version, uptimeSeconds: Math.round(process.uptime()) };
    let database: DatabaseStats;
    try {
      database = readStats();
    } catch (error) {
      req.log.error({ err: error }, "health check cannot query the database");
      res.status(503).json({ status: "error", reason: "the database cannot be queried", ...base });
      return;
    }
    const reason = unhealthyReason(database);
    res
      .status(reason ? 503 : 200)
      .json({ status: reason ? "error" : "ok", ...(reason && { reason }), ...base, database });
  });

  return router;
}

// Below this, a write of BODY_LIMIT's default size plus its WAL frames may no longer fit.
const MIN_AVAILABLE_BYTES = 1024 * 1024;

function unhealthyReason({ journalMode, migrations, availableBytes }: DatabaseStats): string | undefined {
  if (journalMode !== "wal") return `the database is in ${journalMode} journal mode, not WAL`;
  if (migrations.pending > 0) return `${migrations.pending} migration(s) pending: run npm run migrate`;
  if (availableBytes < MIN_AVAILABLE_BYTES) {
    return `storage is full: ${availableBytes} bytes left for the database (free disk space or max_page_count); writes answer 507 storage_full, reads still work`;
  }
  return undefined;
}
