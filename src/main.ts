// The composition root: config → database → migrations → server → signals.

import { createApp } from "./app.ts";
import { loadConfig } from "./config.ts";
import { startBackupSchedule } from "./db/backup-schedule.ts";
import { openDatabase } from "./db/database.ts";
import { runMigrations } from "./db/migrator.ts";
import { createLogger } from "./logger.ts";
import { listen } from "./server.ts";
import { exitWithStartupError } from "./startup-error.ts";

// Everything this process writes (database, -wal/-shm, backups) is for its owner only.
process.umask(0o077);

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  exitWithStartupError(error);
}
const logger = createLogger(config);

let db: ReturnType<typeof openDatabase>;
try {
  db = openDatabase({
    path: config.databasePath,
    backupDir: config.backupDir,
    busyTimeoutMs: config.busyTimeoutMs,
  });
  if (config.migrateOnStart) {
    await runMigrations({ db, migrationsDir: config.migrationsDir, backupDir: config.backupDir, logger });
  }
} catch (error) {
  exitWithStartupError(error, logger);
}

const backups = startBackupSchedule({ db, config, logger });
const app = createApp({ config, db, logger, backups });
const running = await listen(app, config).catch((error: unknown) => exitWithStartupError(error, logger));
logger.info({ port: running.port, host: config.host, database: db.path }, "listening");

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
  await backups.stop();
  db.close();
  logger.info("database closed; bye");
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
