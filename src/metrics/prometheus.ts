// The service's Prometheus metrics: one registry per call (nothing global, so two apps in one
// process never share a series), HTTP metrics from a middleware, database and backup state read
// at scrape time from the functions it is given, and a recorder for events as they happen.
// Loaded with import() only when a token is set: prom-client costs ~100 ms and ~20 MB at start.

import type { Request, RequestHandler } from "express";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { MetricsRecorder, Outcome } from "./recorder.ts";

/** The database as a scrape sees it: cheap reads only (PRAGMAs, stat, statfs), never a table scan. */
export interface DatabaseSnapshot {
  /** Where the engine knows it cheaply (the file's size on SQLite). */
  sizeBytes?: number;
  migrationsPending: number;
  /** SQLite: bytes the database can still grow by on its filesystem (and under max_page_count). */
  availableBytes?: number;
  /** SQLite: size of the -wal file. */
  walSizeBytes?: number;
  /** PostgreSQL: node-postgres' pool.totalCount, idleCount and waitingCount. */
  pool?: { total: number; idle: number; waiting: number };
}

/** The off-site uploader's state (src/backups/offsite/uploader.ts: status()). */
export interface OffsiteSnapshot {
  /** Uploads that succeeded, and runs that failed, since the process started. */
  uploads: number;
  failures: number;
  /** Backups waiting for (or in) an upload. */
  pending: number;
  lastSuccessAt: Date | null;
  lastFailureAt: Date | null;
}

/** The newest backup of one kind on disk. */
export interface BackupSnapshot {
  kind: string;
  createdAt: Date;
  sizeBytes: number;
}

export interface MetricsOptions {
  version: string;
  /** Decides which engine-specific series exist: the WAL's on SQLite, the pool's on PostgreSQL. */
  engine: "sqlite" | "postgres";
  /** Read at each scrape; rejects when the database cannot be queried (then app_database_up is 0). */
  readDatabaseStats: () => Promise<DatabaseSnapshot>;
  /** The newest backup of each kind, read at each scrape. */
  readBackups: () => BackupSnapshot[];
  /** The off-site uploader's state, read at each scrape; absent when off-site backups are off. */
  readOffsite?: () => OffsiteSnapshot;
  /** Interval of the service's scheduled backups in seconds; null when they are off. */
  backupIntervalSeconds: number | null;
  /** prom-client's process and Node.js metrics (CPU, memory, event loop lag, GC). */
  processMetrics?: boolean;
}

export interface ServiceMetrics {
  recorder: MetricsRecorder;
  /** The app's first middleware: request durations by route template, requests in flight. */
  httpMiddleware: RequestHandler;
  /** Collects every metric now, in Prometheus' text format. */
  scrape(): Promise<{ contentType: string; body: string }>;
}

const PREFIX = "app_";
const STATEMENT_ERROR_KINDS = ["busy", "full", "constraint", "readonly", "corrupt", "unavailable"];
const OUTCOMES: Outcome[] = ["success", "failure"];

export function createMetrics(options: MetricsOptions): ServiceMetrics {
  const registry = new Registry();
  const registers = [registry];
  const gauge: GaugeFactory = (name, help, labelNames = [], onCollect) =>
    new Gauge({
      name: PREFIX + name,
      help,
      labelNames,
      registers,
      ...(onCollect && {
        collect(this: Gauge) {
          return onCollect(this);
        },
      }),
    });
  const counter = (name: string, help: string, labelNames: string[]) =>
    new Counter({ name: PREFIX + name, help, labelNames, registers });

  gauge("build_info", "Version of the service and of Node.js it runs on; always 1.", ["version", "node"]).set(
    { version: options.version, node: process.version },
    1,
  );
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });

  const http = httpMetrics(registers);
  registerDatabaseGauges(options, gauge);
  registerBackupGauges(options, gauge);

  const statementErrors = counter(
    "database_statement_errors_total",
    "Statements that failed, by kind: busy (locked), full (no space), constraint, readonly, corrupt, unavailable (closed for maintenance).",
    ["kind"],
  );
  for (const kind of STATEMENT_ERROR_KINDS) statementErrors.inc({ kind }, 0);
  const checkpoints = counter(
    "database_checkpoints_total",
    "WAL checkpoints run by the service: complete, or busy (a reader kept part of the WAL).",
    ["outcome"],
  );
  const backups = counter("backups_total", "Backups the service took, by kind and outcome.", [
    "kind",
    "outcome",
  ]);
  for (const outcome of OUTCOMES) backups.inc({ kind: "scheduled", outcome }, 0);
  const backupSeconds = gauge(
    "backup_last_duration_seconds",
    "How long the service's latest backup of each kind took, whatever its outcome.",
    ["kind"],
  );
  if (options.readOffsite) registerOffsiteMetrics(options.readOffsite, registers, gauge);
  const drills = counter("restore_drills_total", "Restore drills, by outcome.", ["outcome"]);
  const drillLastSuccess = gauge(
    "restore_drill_last_success_timestamp_seconds",
    "When a restore drill last succeeded (Unix time; 0: not since the service started).",
  );
  const restores = counter("restores_total", "Restores of a backup into the running service, by outcome.", [
    "outcome",
  ]);
  const restoreSeconds = gauge(
    "restore_last_duration_seconds",
    "How long the latest restore took, maintenance mode included (0: none since the service started).",
  );
  const maintenance = gauge("maintenance_mode", "1 while the service refuses API requests for an operation.");

  const unixNow = () => Date.now() / 1000;
  const recorder: MetricsRecorder = {
    statementError: (kind) => statementErrors.inc({ kind }),
    checkpoint: (outcome) => checkpoints.inc({ outcome }),
    backupFinished({ kind, outcome, seconds }) {
      backups.inc({ kind, outcome });
      backupSeconds.set({ kind }, seconds);
    },
    drillFinished({ outcome }) {
      drills.inc({ outcome });
      if (outcome === "success") drillLastSuccess.set(unixNow());
    },
    restoreFinished({ outcome, seconds }) {
      restores.inc({ outcome });
      restoreSeconds.set(seconds);
    },
    setMaintenance: (on) => maintenance.set(on ? 1 : 0),
  };

  return {
    recorder,
    httpMiddleware: http,
    async scrape() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

type GaugeFactory = (
  name: string,
  help: string,
  labelNames?: string[],
  onCollect?: (g: Gauge) => void | Promise<void>,
) => Gauge;

// Several gauges come from one reading: it is started by the first gauge a scrape collects and
// shared until the scrape's synchronous pass over its metrics ends (prom-client starts every
// metric's collect() in one pass before it awaits any; if that ever changed, each gauge would just
// read again). A failed read is undefined: the gauges then say "unknown".
function oncePerScrape<T>(read: () => T | Promise<T>): () => Promise<T | undefined> {
  let current: Promise<T | undefined> | undefined;
  return () => {
    if (!current) {
      current = (async () => read())().catch(() => undefined);
      queueMicrotask(() => {
        current = undefined;
      });
    }
    return current;
  };
}

function registerDatabaseGauges(options: MetricsOptions, gauge: GaugeFactory): void {
  const read = oncePerScrape(options.readDatabaseStats);
  // An unreadable database leaves its values unknown: NaN, which no threshold alert mistakes for 0.
  const from = (pick: (s: DatabaseSnapshot) => number | undefined) => async (g: Gauge) => {
    const snapshot = await read();
    g.set(snapshot ? (pick(snapshot) ?? Number.NaN) : Number.NaN);
  };
  gauge(
    "database_up",
    "1 when the database answered this scrape's queries, 0 when it did not.",
    [],
    async (g) => g.set((await read()) ? 1 : 0),
  );
  gauge(
    "database_size_bytes",
    "Size of the database (the file, on SQLite).",
    [],
    from((s) => s.sizeBytes),
  );
  gauge(
    "database_migrations_pending",
    "Migrations in the migrations folder not yet applied to the database.",
    [],
    from((s) => s.migrationsPending),
  );
  if (options.engine === "sqlite") {
    gauge(
      "database_wal_size_bytes",
      "Size of the SQLite write-ahead log (-wal file).",
      [],
      from((s) => s.walSizeBytes),
    );
    gauge(
      "database_available_bytes",
      "Bytes the SQLite database can still grow by: free space on its filesystem, or max_page_count's limit if smaller.",
      [],
      from((s) => s.availableBytes),
    );
  } else {
    gauge(
      "database_pool_connections",
      "Connections the pool holds, in use or idle.",
      [],
      from((s) => s.pool?.total),
    );
    gauge(
      "database_pool_idle_connections",
      "Connections idle in the pool.",
      [],
      from((s) => s.pool?.idle),
    );
    gauge(
      "database_pool_waiting_clients",
      "Queries waiting for a connection from the pool.",
      [],
      from((s) => s.pool?.waiting),
    );
  }
}

// The uploader keeps its own counts and times (it reports them in /health/details too): a scrape
// reads them rather than the uploader telling the metrics about each upload.
function registerOffsiteMetrics(
  readOffsite: () => OffsiteSnapshot,
  registers: Registry[],
  gauge: GaugeFactory,
): void {
  const unix = (date: Date | null) => (date ? date.getTime() / 1000 : 0);
  new Counter({
    name: `${PREFIX}offsite_uploads_total`,
    help: "Off-site uploads since the service started: outcome success (backups uploaded) or failure (runs that failed).",
    labelNames: ["outcome"],
    registers,
    collect(this: Counter) {
      const { uploads, failures } = readOffsite();
      this.reset();
      this.inc({ outcome: "success" }, uploads);
      this.inc({ outcome: "failure" }, failures);
    },
  });
  gauge("offsite_backups_pending", "Local backups waiting for (or in) an off-site upload.", [], (g) =>
    g.set(readOffsite().pending),
  );
  gauge(
    "offsite_upload_last_success_timestamp_seconds",
    "When an off-site upload last succeeded (Unix time; 0: not since the service started).",
    [],
    (g) => g.set(unix(readOffsite().lastSuccessAt)),
  );
  gauge(
    "offsite_upload_last_failure_timestamp_seconds",
    "When an off-site upload last failed (Unix time; 0: not since the service started).",
    [],
    (g) => g.set(unix(readOffsite().lastFailureAt)),
  );
}

function registerBackupGauges(options: MetricsOptions, gauge: GaugeFactory): void {
  const read = oncePerScrape(options.readBackups);
  // From the backup folder rather than from events: it survives restarts and sees backups that
  // another process (npm run db:backup) took.
  const perKind = (pick: (b: BackupSnapshot) => number) => async (g: Gauge) => {
    const backups = await read();
    g.reset();
    for (const backup of backups ?? []) g.set({ kind: backup.kind }, pick(backup));
  };
  gauge(
    "backup_last_success_timestamp_seconds",
    "When the newest backup of each kind on disk was taken (Unix time).",
    ["kind"],
    perKind((b) => b.createdAt.getTime() / 1000),
  );
  gauge(
    "backup_last_size_bytes",
    "Size of the newest backup of each kind on disk.",
    ["kind"],
    perKind((b) => b.sizeBytes),
  );
  if (options.backupIntervalSeconds !== null) {
    gauge("backup_interval_seconds", "BACKUP_INTERVAL: how often the service takes a backup.").set(
      options.backupIntervalSeconds,
    );
  }
}

// Express sets req.route when a route matches, but restores req.baseUrl when an error leaves the
// route's router: by the time an error response finishes, `req.baseUrl + req.route.path` reads
// "/:id" instead of "/api/notes/:id". So the template is taken as the route is set, by an accessor
// on the app's request prototype (one per app, installed on its first request). An accessor
// defined on each request instead gave every request object a hidden class of its own: 15-25 µs
// more server CPU per GET /api/notes/:id than this one (alternating rounds, both ways).
const ROUTE = Symbol("route");
const ROUTE_LABEL = Symbol("route label");
const withRouteLabel = new WeakSet<object>();

type LabelledRequest = Request & { [ROUTE]?: { path: string }; [ROUTE_LABEL]?: string };

function captureRouteTemplates(prototype: object): void {
  if (withRouteLabel.has(prototype)) return;
  withRouteLabel.add(prototype);
  Object.defineProperty(prototype, "route", {
    configurable: true,
    get(this: LabelledRequest) {
      return this[ROUTE];
    },
    set(this: LabelledRequest, route: { path: string } | undefined) {
      this[ROUTE] = route;
      // A router's own "/" is its mount path: "/metrics", not "/metrics/".
      this[ROUTE_LABEL] = !route
        ? undefined
        : route.path === "/" && this.baseUrl
          ? this.baseUrl
          : this.baseUrl + route.path;
    },
  });
}

function httpMetrics(registers: Registry[]): RequestHandler {
  const duration = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time from a request's arrival to its response's last byte, by route template.",
    labelNames: ["method", "route", "status_code"],
    registers,
  });
  const inFlight = new Gauge({
    name: "http_requests_in_flight",
    help: "Requests received and not yet answered.",
    registers,
  });
  return (req, res, next) => {
    const started = performance.now();
    captureRouteTemplates(Object.getPrototypeOf(req));
    inFlight.inc();
    // 'close' comes after 'finish', or alone when the client went away before the response ended
    // (not a duration worth recording).
    res.once("close", () => {
      inFlight.dec();
      if (!res.writableFinished) return;
      duration.observe(
        {
          method: req.method,
          route: (req as LabelledRequest)[ROUTE_LABEL] ?? "unmatched",
          status_code: String(res.statusCode),
        },
        (performance.now() - started) / 1000,
      );
    });
    next();
  };
}
