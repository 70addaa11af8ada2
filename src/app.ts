// createApp: the Express app over the dependencies it is given: middleware, routers, errors.
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import express, { type Express } from "express";
import helmet from "helmet";
import { pinoHttp } from "pino-http";
import type { OnlineRestore } from "./backups/online-restore.ts";
import type { BackupSchedule } from "./backups/schedule.ts";
import type { Config } from "./config.ts";
import { findMigrations } from "./db/migrator.ts";
import { createStatusReader } from "./db/status.ts";
import type { Storage } from "./db/storage.ts";
import { type AdminOptions, adminRouter } from "./http/admin.ts";
import { apiDocsRouter } from "./http/api-docs.ts";
import type { ApiRoutes } from "./http/api-router.ts";
import { createOperationsAuth } from "./http/auth.ts";
import { createErrorHandler, JSON_TYPES, notFound, requireJsonBody } from "./http/errors.ts";
import { healthRouter } from "./http/health.ts";
import type { Maintenance } from "./http/maintenance.ts";
import { metricsRouter } from "./http/metrics.ts";
import { notesRouter } from "./http/notes.ts";
import { redactUrl } from "./http/redact-url.ts";
import type { Logger } from "./logger.ts";
import type { ServiceMetrics } from "./metrics/prometheus.ts";

export interface AppDeps {
  config: Pick<
    Config,
    | "bodyLimit"
    | "trustProxy"
    | "backupDir"
    | "backupKeep"
    | "backupMaxAgeDays"
    | "migrationsDir"
    | "apiDocs"
    | "adminToken"
    | "metricsToken"
  >;
  storage: Storage;
  logger: Logger;
  /** Scheduled backups, when the service runs them: their failures show in /health. */
  backups?: Pick<BackupSchedule, "lastFailure">;
  /** The background jobs' state for /health/details (off-site uploads, the latest drill). */
  readJobs?: () => { offsite?: unknown; drill?: unknown };
  /** Holds the API off with 503 while the database is swapped (online restore). */
  maintenance?: Maintenance;
  /** Prometheus metrics (src/metrics/prometheus.ts), when a token is set: served on GET /metrics. */
  metrics?: Pick<ServiceMetrics, "httpMiddleware" | "scrape" | "recorder">;
  /** The operations API's restore and off-site hooks: /admin is mounted when ADMIN_TOKEN is set. */
  operations?: { restorer: OnlineRestore } & Pick<AdminOptions, "listRemote" | "onBackup">;
}

// Kept when a proxy or client sends one, so a request can be followed across services; anything
// longer or with other characters (CR/LF, spaces, quotes) is replaced, never echoed.
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

export function createApp({
  config,
  storage,
  logger,
  backups,
  readJobs,
  maintenance,
  metrics,
  operations,
}: AppDeps): Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("trust proxy", config.trustProxy);
  const auth = createOperationsAuth(config);

  if (metrics) app.use(metrics.httpMiddleware);
  app.use(
    helmet(),
    pinoHttp({
      logger,
      genReqId: (req: IncomingMessage, res: ServerResponse) => {
        const incoming = req.headers["x-request-id"];
        const id = typeof incoming === "string" && REQUEST_ID.test(incoming) ? incoming : randomUUID();
        res.setHeader("X-Request-Id", id);
        return id;
      },
      // Health probes every few seconds would drown the log: successful ones log at debug.
      customLogLevel: (req, res, error) => {
        if (error || res.statusCode >= 500) return "error";
        if (res.statusCode >= 400) return "warn";
        // Express strips a router's mount path from req.url; originalUrl keeps it.
        const url = (req as { originalUrl?: string }).originalUrl ?? req.url ?? "";
        return url.startsWith("/health") || url.startsWith("/metrics") ? "debug" : "info";
      },
      // Who called a guarded route (a name and a token fingerprint, never the token), or why not.
      customProps: (_req, res) => {
        const auth = (res as { locals?: { auth?: unknown } }).locals?.auth;
        // Typed as always an object, but pino-http skips a falsy one; {} would cost a child logger.
        return (auth === undefined ? undefined : { auth }) as object;
      },
      serializers: {
        req: (req: { id: unknown; method: string; url: string; remoteAddress: string }) => ({
          id: req.id,
          method: req.method,
          url: redactUrl(req.url),
          remoteAddress: req.remoteAddress,
        }),
        res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
      },
    }),
  );
  // Before the body is read: a request still sending its body is in flight too, and the swap of
  // an online restore waits for it.
  if (maintenance) app.use("/api", maintenance.gate);
  app.use(requireJsonBody, express.json({ limit: config.bodyLimit, type: JSON_TYPES }));

  const readDetails = createStatusReader({
    storage,
    backupDir: config.backupDir,
    migrations: findMigrations(config.migrationsDir),
    backupFailure: backups && (() => backups.lastFailure()),
  });
  // The documented routers, by the path each is mounted at: /openapi.json describes exactly these.
  const api: ApiRoutes = {
    "/health": healthRouter({ readDetails, readJobs, requireAdmin: auth.admin, maintenance }),
    ...(metrics && { "/metrics": metricsRouter({ metrics, requireToken: auth.metrics }) }),
    ...(operations &&
      config.adminToken !== null && {
        "/admin": adminRouter({
          engine: storage.engine,
          config,
          requireAdmin: auth.admin,
          recorder: metrics?.recorder,
          ...operations,
        }),
      }),
    "/api/notes": notesRouter(storage.kysely),
  };
  for (const [path, { router }] of Object.entries(api)) app.use(path, router);
  if (config.apiDocs) app.use(apiDocsRouter(api));

  app.use(
    notFound,
    createErrorHandler({ onDatabaseError: metrics && ((kind) => metrics.recorder.statementError(kind)) }),
  );
  return app;
}
