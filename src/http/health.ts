// /health (the database's state, 503 when it cannot serve) and /health/live (the process answers).
import { Router } from "express";
import packageJson from "../../package.json" with { type: "json" };
import type { BackupSchedule } from "../backups/schedule.ts";
import { findMigrations } from "../db/migrator.ts";
import { createStatusReader, type DatabaseReport } from "../db/status.ts";
import type { Storage } from "../db/storage.ts";
import type { Maintenance } from "./maintenance.ts";

export interface HealthOptions {
  storage: Storage;
  backupDir: string;
  migrationsDir: string;
  /** The service's scheduled backups, whose failures /health reports. */
  backups?: Pick<BackupSchedule, "lastFailure"> | undefined;
  /** While on, /health answers 503 "maintenance" without touching the database. */
  maintenance?: Pick<Maintenance, "active"> | undefined;
}

export function healthRouter({
  storage,
  backupDir,
  migrationsDir,
  backups,
  maintenance,
}: HealthOptions): Router {
  const router = Router();
  const readReport = createStatusReader({
    storage,
    backupDir,
    migrations: findMigrations(migrationsDir),
    backupFailure: backups && (() => backups.lastFailure()),
  });

  router.get("/live", (_req, res) => {
    res.json({ status: "ok" });
  });

  router.get("/", async (req, res) => {
    const base = { version: packageJson.version, uptimeSeconds: Math.round(process.uptime()) };
    if (maintenance?.active) {
      res.status(503).json({ status: "maintenance", reason: "a database restore is in progress", ...base });
      return;
    }
    let report: DatabaseReport;
    try {
      report = await readReport();
    } catch (error) {
      req.log.error({ err: error }, "health check cannot query the database");
      res.status(503).json({ status: "error", reason: "the database cannot be queried", ...base });
      return;
    }
    const { status: database, problem: reason } = report;
    res
      .status(reason ? 503 : 200)
      .json({ status: reason ? "error" : "ok", ...(reason && { reason }), ...base, database });
  });

  return router;
}
