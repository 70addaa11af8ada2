// /health (the database's state, 503 when it cannot serve) and /health/live (the process answers).
import { z } from "zod";
import packageJson from "../../package.json" with { type: "json" };
import type { BackupSchedule } from "../backups/schedule.ts";
import { findMigrations } from "../db/migrator.ts";
import { createStatusReader, type DatabaseReport } from "../db/status.ts";
import type { Storage } from "../db/storage.ts";
import { type ApiOperation, type ApiRouter, apiRouter } from "./api-router.ts";
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

// The public body. Loose for now: today's body also carries the detailed view (version, uptime,
// database), which moves behind a token; make it strict when it has.
const healthStatus = z
  .looseObject({
    status: z.enum(["ok", "error", "maintenance"]),
    reason: z.string().optional().meta({ description: "Why the status is not ok" }),
  })
  .meta({ id: "HealthStatus" });

const getLiveness: ApiOperation = {
  operationId: "getLiveness",
  summary: "Liveness: the process answers",
  responses: {
    200: { description: "Always, while the process runs", body: z.strictObject({ status: z.literal("ok") }) },
  },
};

const getHealth: ApiOperation = {
  operationId: "getHealth",
  summary: "Readiness: whether the service can serve requests",
  // The body is public; a caller with the operations token gets the detailed view too.
  auth: "bearer-optional",
  responses: {
    200: { description: "It can", body: healthStatus },
    503: { description: "It cannot; reason says why", body: healthStatus },
  },
};

export function healthRouter({
  storage,
  backupDir,
  migrationsDir,
  backups,
  maintenance,
}: HealthOptions): ApiRouter {
  const router = apiRouter({ name: "health", description: "For load balancers and orchestrators" });
  const readReport = createStatusReader({
    storage,
    backupDir,
    migrations: findMigrations(migrationsDir),
    backupFailure: backups && (() => backups.lastFailure()),
  });

  router.get("/live", getLiveness, (_req, res) => {
    res.json({ status: "ok" });
  });

  router.get("/", getHealth, async (req, res) => {
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
