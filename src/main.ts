// The composition root: config → storage → migrations → server → signals.
import module from "node:module";
import type { Storage } from "./db/storage.ts";

// Node's compile cache (in the OS temp folder; NODE_DISABLE_COMPILE_CACHE=1 turns it off) keeps
// compiled code and stripped TypeScript, so a restart skips half of start-up's CPU (docs/
// performance.md). It must be on before the modules load, which static imports would do first.
module.enableCompileCache?.();
const [
  { createApp },
  { loadConfig },
  { startBackupSchedule },
  { startDrillSchedule },
  { createOnlineRestore },
  { createMaintenance },
  { listBackups },
  { loadEngine },
  { runMigrations },
  logging,
  server,
  startup,
] = await Promise.all([
  import("./app.ts"),
  import("./config.ts"),
  import("./backups/schedule.ts"),
  import("./backups/drill-schedule.ts"),
  import("./backups/online-restore.ts"),
  import("./http/maintenance.ts"),
  import("./backups/files.ts"),
  import("./db/storage.ts"),
  import("./db/migrator.ts"),
  import("./logger.ts"),
  import("./server.ts"),
  import("./startup-error.ts"),
]);
const { createLogger } = logging;
const { listen } = server;
// Annotated: TypeScript only narrows after a call to a `never` function with a declared type.
const exitWithStartupError: typeof startup.exitWithStartupError = startup.exitWithStartupError;

// Everything this process writes (database, -wal/-shm, backups) is for its owner only.
process.umask(0o077);

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  exitWithStartupError(error);
}
const logger = createLogger(config);

let storage: Storage;
try {
  const engine = await loadEngine(config, logger);
  storage = await engine.open();
  if (config.migrateOnStart) {
    await runMigrations({
      storage,
      migrationsDir: config.migrationsDir,
      backupDir: config.backupDir,
      logger,
      backupFirst: config.migrateBackup || "off",
    });
  }
} catch (error) {
  exitWithStartupError(error, logger);
}

const { engine } = storage;
// Loaded only when BACKUP_S3_URL is set: a service without off-site backups never loads the S3 SDK.
const offsite = config.offsite
  ? (await import("./backups/offsite/uploader.ts")).createOffsiteUploader({
      config: config.offsite,
      logger,
      database: engine.database,
      listLocal: () => listBackups(config.backupDir).filter((b) => b.database === engine.database),
    })
  : undefined;
// prom-client is loaded only when someone may scrape: it costs ~100 ms and ~20 MB at start.
const metrics =
  config.metricsToken !== null || config.adminToken !== null
    ? await import("./metrics/service-metrics.ts").then((m) =>
        m.createServiceMetrics({ storage, offsite, config }),
      )
    : undefined;
const backups = startBackupSchedule({
  engine,
  config,
  logger,
  onBackup: offsite && ((backup) => offsite.enqueue(backup)),
  hooks: metrics?.recorder,
});
const drills = startDrillSchedule({
  engine,
  config,
  logger,
  onDrill:
    metrics &&
    ((drill) =>
      metrics.recorder.drillFinished({
        outcome: drill.ok ? "success" : "failure",
        seconds: drill.ms / 1000,
      })),
});
// The operations API's online restore holds the API off while it swaps the database, and holds the
// jobs that read it.
const maintenance = createMaintenance({ onChange: metrics && ((on) => metrics.recorder.setMaintenance(on)) });
const restorer = createOnlineRestore({
  storage,
  maintenance,
  jobs: {
    pause: async () => {
      await Promise.all([backups.pause(), drills.pause()]);
    },
    resume: () => {
      backups.resume();
      drills.resume();
    },
  },
  config,
  logger,
});
const operations = {
  restorer,
  onBackup: offsite && ((backup: Parameters<typeof offsite.enqueue>[0]) => offsite.enqueue(backup)),
  listRemote: config.offsite
    ? async () => {
        const { listBucket } = await import("./backups/offsite/operations.ts");
        return listBucket({ offsite: config.offsite! });
      }
    : undefined,
};
const readJobs = () => ({
  ...(offsite && { offsite: offsite.status() }),
  ...(config.backupDrillIntervalMs !== null && { drill: drills.last() }),
});
const app = createApp({ config, storage, logger, backups, readJobs, metrics, maintenance, operations });
const running = await listen(app, config).catch((error: unknown) => exitWithStartupError(error, logger));
logger.info(
  { port: running.port, host: config.host, engine: engine.name, database: engine.target },
  "listening",
);
// After listening, never before: the pre-migration backup, and any local backup the bucket lacks
// (taken while the service was down, or by a command), upload in the background.
offsite?.catchUp();

let shuttingDown = false;
const shutdown = async (signal: NodeJS.Signals) => {
  if (shuttingDown) {
    logger.warn({ signal }, "second signal: exiting at once");
    process.exit(1);
  }
  shuttingDown = true;
  // Stop listening before saying so: a client that reads this line must find the port closed.
  const stopped = running.stop(config.shutdownTimeoutMs);
  logger.info({ signal, timeoutMs: config.shutdownTimeoutMs }, "shutting down: draining requests");
  const { cut } = await stopped;
  if (cut > 0) logger.warn({ cut }, "shutdown timeout reached: cut the requests still running");
  await Promise.all([backups.stop(), drills.stop()]);
  // An upload in flight is aborted: no half object is left in the bucket.
  await offsite?.stop();
  await storage.close();
  logger.info("database closed; bye");
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
