// /health: whether the service can serve, for anyone (load balancers, Docker), in words that name
// no path, table or file (CWE-497); /health/details: the same check with the database's state
// behind it, for ADMIN_TOKEN holders; /health/live: the process answers.
import type { Request, RequestHandler } from "express";
import { z } from "zod";
import packageJson from "../../package.json" with { type: "json" };
import { type DatabaseReport, type DatabaseStatus, MIN_AVAILABLE_BYTES } from "../db/status.ts";
import { type ApiOperation, type ApiRouter, apiRouter } from "./api-router.ts";
import type { Maintenance } from "./maintenance.ts";

export interface HealthOptions {
  /** The database's state; rejects when the database cannot be queried. */
  readDetails: () => Promise<DatabaseReport>;
  /** Guards /health/details: the admin token (404 when none is configured). */
  requireAdmin: RequestHandler;
  /** The background jobs' state for /health/details: off-site uploads, the latest drill. */
  readJobs?: (() => { offsite?: unknown; drill?: unknown }) | undefined;
  /** While on, both answer 503 "maintenance" without touching the database. */
  maintenance?: Pick<Maintenance, "active"> | undefined;
}

const PUBLIC_REASONS = [
  "database unavailable",
  "database misconfigured",
  "migrations pending",
  "storage full",
  "maintenance",
] as const;

const healthStatus = z
  .strictObject({
    status: z.enum(["ok", "error", "maintenance"]),
    reason: z.enum(PUBLIC_REASONS).optional().meta({ description: "Why the status is not ok" }),
  })
  .meta({ id: "HealthStatus" });

const healthDetails = z
  .looseObject({
    status: z.enum(["ok", "error", "maintenance"]),
    reason: z.string().optional().meta({ description: "Why the status is not ok, in full" }),
    version: z.string(),
    uptimeSeconds: z.number(),
    database: z
      .looseObject({ engine: z.string() })
      .optional()
      .meta({ description: "The engine's facts, migrations, the newest backup, row counts" }),
    offsite: z
      .looseObject({ target: z.string(), encrypted: z.boolean(), failing: z.boolean() })
      .optional()
      .meta({ description: "Off-site backups (BACKUP_S3_URL): uploads, failures and their age" }),
    drill: z
      .looseObject({ ok: z.boolean(), source: z.enum(["bucket", "local"]) })
      .nullable()
      .optional()
      .meta({
        description: "The latest scheduled restore drill (BACKUP_DRILL_INTERVAL); null before the first",
      }),
  })
  .meta({ id: "HealthDetails" });

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
  responses: {
    200: { description: "It can", body: healthStatus },
    503: { description: "It cannot; reason says which kind of trouble", body: healthStatus },
  },
};

const getHealthDetails: ApiOperation = {
  operationId: "getHealthDetails",
  summary: "The readiness check with the database's state behind it (ADMIN_TOKEN)",
  auth: "bearer",
  responses: {
    200: { description: "It can serve", body: healthDetails },
    503: { description: "It cannot; reason says why", body: healthDetails },
  },
};

/** The verdict: `reason` is public (generic), `detail` only for /health/details. */
type Check =
  | { status: "ok"; database: DatabaseStatus }
  | { status: "error" | "maintenance"; reason: string; detail: string; database?: DatabaseStatus };

export function healthRouter({ readDetails, readJobs, requireAdmin, maintenance }: HealthOptions): ApiRouter {
  const router = apiRouter({
    name: "health",
    description: "For load balancers, orchestrators and operators",
  });

  const check = async (req: Request): Promise<Check> => {
    if (maintenance?.active) {
      return { status: "maintenance", reason: "maintenance", detail: "a database restore is in progress" };
    }
    let report: DatabaseReport;
    try {
      report = await readDetails();
    } catch (error) {
      req.log.error({ err: error }, "health check cannot query the database");
      return { status: "error", reason: "database unavailable", detail: "the database cannot be queried" };
    }
    const { status: database, problem } = report;
    if (!problem) return { status: "ok", database };
    return { status: "error", reason: publicReason(database), detail: problem, database };
  };

  router.get("/live", getLiveness, (_req, res) => {
    res.json({ status: "ok" });
  });

  router.get("/", getHealth, async (req, res) => {
    const result = await check(req);
    res
      .status(result.status === "ok" ? 200 : 503)
      .json(result.status === "ok" ? { status: "ok" } : { status: result.status, reason: result.reason });
  });

  router.get("/details", getHealthDetails, requireAdmin, async (req, res) => {
    const result = await check(req);
    res
      .status(result.status === "ok" ? 200 : 503)
      .set("Cache-Control", "no-store")
      .json({
        status: result.status,
        ...(result.status !== "ok" && { reason: result.detail }),
        version: packageJson.version,
        uptimeSeconds: Math.round(process.uptime()),
        ...(result.database && { database: result.database }),
        ...readJobs?.(),
      });
  });

  return router;
}

// The operator's reason (src/db/status.ts) may name the journal mode, a count, a path: the public
// one only says which kind of trouble it is.
function publicReason({ migrations, availableBytes }: DatabaseStatus): (typeof PUBLIC_REASONS)[number] {
  if (migrations.pending > 0) return "migrations pending";
  if (availableBytes !== null && availableBytes < MIN_AVAILABLE_BYTES) return "storage full";
  return "database misconfigured";
}
