// Scheduled backups inside the service: they fire, show in /health, and a failure is reported there
// without taking the service down.
import fs from "node:fs";
import path from "node:path";
import { pino } from "pino";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app.ts";
import { listBackups } from "../src/backups/files.ts";
import { startBackupSchedule } from "../src/backups/schedule.ts";
import { loadConfig } from "../src/config.ts";
import { loadEngine } from "../src/db/storage.ts";
import { describeEngines, engineEnv } from "./engines.ts";
import { cleanupAfterEach, createTestApp, type LogLine, makeTempDir, startService } from "./helpers.ts";
import { ADMIN_TOKEN, bearer, healthDetails } from "./ops-helpers.ts";

const { defer } = cleanupAfterEach();

/** A logger that resolves `next(msg)` when a line with that message is written. */
function awaitableLogger() {
  const lines: LogLine[] = [];
  const waiters: { msg: string; resolve: (line: LogLine) => void }[] = [];
  const logger = pino(
    { level: "info" },
    {
      write(text: string) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        for (const w of waiters.splice(0)) {
          if (w.msg === line.msg) w.resolve(line);
          else waiters.push(w);
        }
      },
    },
  );
  const next = (msg: string) => new Promise<LogLine>((resolve) => waiters.push({ msg, resolve }));
  return { logger, lines, next };
}

describeEngines("scheduled backups", (engine) => {
  it("are taken by the running service on BACKUP_INTERVAL, verified, and reported in /health", async () => {
    const dir = makeTempDir();
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const env = await engineEnv(engine, dir);
    const service = await startService({ ...env, BACKUP_INTERVAL: "1s", BACKUP_KEEP: "2", ADMIN_TOKEN });
    defer(() => void service.process.kill("SIGKILL"));
    const post = await fetch(`http://127.0.0.1:${service.port}/api/notes`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "scheduled" }),
    });
    expect(post.status).toBe(201);

    const isTaken = (l: LogLine) => l.msg === "scheduled backup taken";
    const first = await service.waitForLog(isTaken);
    const live = await loadEngine(loadConfig(env));
    expect((await live.verify(first.backup as string)).ok).toBe(true);
    // Two more, so retention (BACKUP_KEEP=2) has had something to prune.
    const third = await service.waitForLog((l) => isTaken(l) && service.logs.filter(isTaken).length >= 3);
    expect(third.pruned).toEqual([path.basename(first.backup as string)]);
    const { body: health } = await healthDetails(service.port);
    expect(health.status).toBe("ok");
    expect(health.database.lastBackup).toMatchObject({
      file: expect.stringMatching(engine === "sqlite" ? /-scheduled\.db$/ : /-scheduled\.dump$/),
    });
    expect(health.database.lastBackup.error).toBeUndefined();

    service.process.kill("SIGTERM");
    expect((await service.exited).code).toBe(0);
    const backups = listBackups(path.join(dir, "backups"));
    expect(backups.map((b) => b.kind)).toEqual(["scheduled", "scheduled"]);
    expect(fs.readdirSync(path.join(dir, "backups")).filter((f) => f.startsWith("."))).toEqual([]);
  });
});

describe("scheduled backups on SQLite", () => {
  it("logs a failure and shows it in /health while the service keeps serving", async () => {
    const t = await createTestApp({ ADMIN_TOKEN });
    defer(() => t.close());
    // A file where the backup folder should be: every backup fails.
    const blocked = path.join(t.dir, "not-a-folder");
    fs.writeFileSync(blocked, "");
    const { logger, next } = awaitableLogger();
    const config = { ...t.config, backupDir: blocked, backupIntervalMs: 20 };
    const failed = next("scheduled backup failed");
    const backups = startBackupSchedule({ engine: t.storage.engine, config, logger });
    defer(() => backups.stop());
    const line = await failed;
    expect(line.level).toBe(50); // error

    const app = createApp({ config, storage: t.storage, logger, backups });
    const res = await request(app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(200);
    expect(res.body.database.lastBackup).toEqual({
      file: null,
      createdAt: null,
      ageSeconds: null,
      error: {
        message: expect.stringContaining(blocked),
        at: expect.any(String),
        ageSeconds: expect.any(Number),
      },
    });
    await request(app).post("/api/notes").send({ title: "still serving" }).expect(201);
  });

  it("stays off unless BACKUP_INTERVAL is set", async () => {
    const t = await createTestApp();
    defer(() => t.close());
    const { logger, lines } = awaitableLogger();
    const backups = startBackupSchedule({ engine: t.storage.engine, config: t.config, logger });
    await backups.stop();
    expect(t.config.backupIntervalMs).toBeNull();
    expect(lines).toEqual([]);
  });
});
