// Online restore inside a running service: under concurrent reads and writes over real HTTP,
// with a failing migration after the swap, and the refusals that leave everything as it was.
import fs from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app.ts";
import { listBackups } from "../src/backups/files.ts";
import { createOnlineRestore, OnlineRestoreError } from "../src/backups/online-restore.ts";
import { startBackupSchedule } from "../src/backups/schedule.ts";
import { runMigrations } from "../src/db/migrator.ts";
import { createMaintenance } from "../src/http/maintenance.ts";
import {
  cleanupAfterEach,
  inFlightPost,
  migrationsWith,
  openSqliteStorage,
  silentLogger,
  testConfig,
} from "./helpers.ts";
import { ADMIN_TOKEN, bearer } from "./ops-helpers.ts";

const { defer, tempDir } = cleanupAfterEach();

async function service(extraMigrations: Record<string, string> = {}) {
  const dir = tempDir();
  const config = { ...testConfig(dir, { ADMIN_TOKEN }), migrationsDir: migrationsWith(dir, extraMigrations) };
  const storage = await openSqliteStorage(config);
  defer(() => storage.close());
  await runMigrations({
    storage,
    migrationsDir: config.migrationsDir,
    backupDir: config.backupDir,
    logger: silentLogger,
  });
  const maintenance = createMaintenance();
  const backups = startBackupSchedule({ engine: storage.engine, config, logger: silentLogger });
  const app = createApp({ config, storage, logger: silentLogger, backups, maintenance });
  const server: Server = app.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  defer(() => new Promise((resolve) => server.close(resolve)));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const restorer = createOnlineRestore({ storage, maintenance, jobs: backups, config, logger: silentLogger });
  return { dir, config, storage, base, restorer, maintenance };
}

async function call(base: string, method: string, url: string, body?: unknown) {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

async function createNotes(base: string, prefix: string, count: number): Promise<string[]> {
  const titles = Array.from({ length: count }, (_, i) => `${prefix} ${i}`);
  for (const title of titles) expect((await call(base, "POST", "/api/notes", { title })).status).toBe(201);
  return titles;
}

async function allTitles(base: string): Promise<string[]> {
  const titles: string[] = [];
  let cursor: string | null = null;
  do {
    const page = await call(base, "GET", `/api/notes?limit=100${cursor ? `&cursor=${cursor}` : ""}`);
    expect(page.status).toBe(200);
    titles.push(...page.body.items.map((n: { title: string }) => n.title));
    cursor = page.body.nextCursor;
  } while (cursor);
  return titles.sort();
}

describe("online restore", () => {
  it("swaps the database under concurrent reads and writes: clients see only 2xx and 503", async () => {
    const { base, storage, config, restorer } = await service();
    const kept = await createNotes(base, "in the backup", 20);
    const backup = await storage.engine.backup({ backupDir: config.backupDir, kind: "manual" });
    const lost = await createNotes(base, "after the backup", 5);

    // Four clients read and write in a loop for as long as the restore runs, and a little after.
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    const acknowledged: { title: string; sentAfterRestore: boolean }[] = [];
    let restoreDone = false;
    let stop = false;
    let sequence = 0;
    const client = async () => {
      while (!stop) {
        const title = `load ${sequence++}`;
        const sentAfterRestore = restoreDone;
        try {
          const write = await call(base, "POST", "/api/notes", { title });
          statuses.set(write.status, (statuses.get(write.status) ?? 0) + 1);
          if (write.status === 201) acknowledged.push({ title, sentAfterRestore });
          else if (write.status === 503) expect(write.headers.get("retry-after")).toBeTruthy();
          const read = await call(base, "GET", "/api/notes?limit=5");
          statuses.set(read.status, (statuses.get(read.status) ?? 0) + 1);
        } catch (error) {
          failures.push(String(error));
        }
      }
    };
    const load = Array.from({ length: 4 }, client);
    while (acknowledged.length < 20) await new Promise((resolve) => setImmediate(resolve)); // under way
    const result = await restorer.restore(backup.file);
    restoreDone = true;
    while (acknowledged.filter((a) => a.sentAfterRestore).length < 5)
      await new Promise((r) => setImmediate(r));
    stop = true;
    await Promise.all(load);

    expect(failures).toEqual([]);
    expect([...statuses.keys()].every((s) => s === 200 || s === 201 || s === 503)).toBe(true);
    expect(result).toMatchObject({ backup: { file: backup.file }, migrated: [] });

    // Afterwards: the backup's notes, plus what was written after the swap, and nothing else.
    const titles = await allTitles(base);
    const loadTitles = new Set(acknowledged.map((a) => a.title));
    for (const title of kept) expect(titles).toContain(title);
    for (const title of lost) expect(titles).not.toContain(title);
    for (const title of titles) expect(kept.includes(title) || loadTitles.has(title)).toBe(true);
    for (const a of acknowledged.filter((x) => x.sentAfterRestore)) expect(titles).toContain(a.title);

    // The pre-restore backup holds the database as it was, the notes written after the backup included.
    const previous = result.previous!;
    expect(previous.kind).toBe("pre-restore");
    const scratch = await openSqliteStorage({ ...config, databasePath: previous.path });
    defer(() => scratch.close());
    const before = scratch.sqlite.prepare("SELECT title FROM notes").pluck().all() as string[];
    for (const title of [...kept, ...lost]) expect(before).toContain(title);
  });

  it("puts the previous database back, and serves it, when a migration fails on the restored one", async () => {
    // 0002 fails on any database that still holds the table `poison`.
    const { base, storage, config, restorer } = await service();
    await createNotes(base, "old", 3);
    storage.sqlite.exec("CREATE TABLE poison (x)");
    const backup = await storage.engine.backup({ backupDir: config.backupDir, kind: "manual" });
    storage.sqlite.exec("DROP TABLE poison");
    fs.writeFileSync(
      path.join(config.migrationsDir, "0002_refuse_poison.ts"),
      `import { sql } from "kysely";
export async function up(db) {
  const { rows } = await sql\`SELECT count(*) AS n FROM sqlite_schema WHERE name = 'poison'\`.execute(db);
  if (rows[0].n > 0) throw new Error("poison found");
}`,
    );
    await runMigrations({
      storage,
      migrationsDir: config.migrationsDir,
      backupDir: config.backupDir,
      logger: silentLogger,
    });
    const current = await createNotes(base, "current", 2);

    const error = await restorer.restore(backup.file).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OnlineRestoreError);
    expect(error).toMatchObject({ reason: "failed", message: expect.stringContaining("poison found") });
    expect((error as Error).message).toContain("the previous database is back in place");

    const titles = await allTitles(base);
    for (const title of current) expect(titles).toContain(title);
    const details = await fetch(`${base}/health/details`, { headers: bearer(ADMIN_TOKEN) });
    expect(await details.json()).toMatchObject({
      status: "ok",
      database: { migrations: { applied: 2, pending: 0 } },
    });
    expect(
      storage.sqlite.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'poison'").pluck().get(),
    ).toBe(0);
    expect((await call(base, "POST", "/api/notes", { title: "still writable" })).status).toBe(201);
  });

  it("refuses a backup that fails verification before anything changes", async () => {
    const { base, config, restorer, maintenance } = await service();
    const titles = await createNotes(base, "live", 3);
    fs.mkdirSync(config.backupDir, { recursive: true });
    const fake = path.join(config.backupDir, "app-20261125T000000000Z-manual.db");
    fs.writeFileSync(fake, "not a database".repeat(400));
    const error = await restorer.restore(path.basename(fake)).catch((e: unknown) => e);
    expect(error).toMatchObject({ reason: "unsound" });
    expect(maintenance.active).toBe(false);
    expect(await allTitles(base)).toEqual(titles.sort());
    expect(listBackups(config.backupDir).map((b) => b.kind)).toEqual(["manual"]); // no pre-restore taken
  });

  it("runs one restore at a time, and names a backup it cannot find", async () => {
    const { base, storage, config, restorer } = await service();
    await createNotes(base, "n", 50);
    const backup = await storage.engine.backup({ backupDir: config.backupDir, kind: "manual" });
    const first = restorer.restore(backup.file);
    await expect(restorer.restore(backup.file)).rejects.toMatchObject({ reason: "busy" });
    await first;
    expect(restorer.running).toBe(false);
    await expect(restorer.restore("app-20200101T000000000Z-manual.db")).rejects.toMatchObject({
      reason: "not_found",
    });
    await expect(restorer.restore("../../etc/passwd")).rejects.toMatchObject({ reason: "not_found" });
  });

  it("lets a request already inside finish before the swap, and answers 503 to those arriving meanwhile", async () => {
    const { base, storage, config, restorer, maintenance } = await service();
    await createNotes(base, "kept", 2);
    const backup = await storage.engine.backup({ backupDir: config.backupDir, kind: "manual" });
    const inside = inFlightPost(Number(new URL(base).port), "admitted before the restore");
    await inside.accepted;

    const restoring = restorer.restore(backup.file);
    while (!maintenance.active) await new Promise((resolve) => setImmediate(resolve));
    const meanwhile = await call(base, "GET", "/api/notes");
    expect(meanwhile.status).toBe(503);
    expect(meanwhile.body.error.code).toBe("maintenance");

    inside.finish();
    expect((await inside.response).status).toBe(201);
    const { previous } = await restoring;
    // Finished on the old database, before the swap: kept in the pre-restore backup, not in the restored one.
    expect(await allTitles(base)).toEqual(["kept 0", "kept 1"]);
    const old = await openSqliteStorage({ ...config, databasePath: previous!.path });
    defer(() => old.close());
    expect(old.sqlite.prepare("SELECT title FROM notes ORDER BY id DESC LIMIT 1").pluck().get()).toBe(
      "admitted before the restore",
    );
  });

  it("is refused, pointing to the command line, on an engine that cannot close its database for everyone", async () => {
    const { storage, config, maintenance } = await service();
    // As PostgreSQL's Storage: other instances may share the database, so it has no suspend().
    const shared = { ...storage, suspend: undefined, resume: undefined, engine: storage.engine };
    const restorer = createOnlineRestore({
      storage: shared,
      maintenance,
      jobs: { pause: async () => {}, resume: () => {} },
      config,
      logger: silentLogger,
    });
    const error = await restorer.restore("latest").catch((e: unknown) => e);
    expect(error).toMatchObject({
      reason: "unsupported",
      message: expect.stringContaining("npm run db:restore"),
    });
    expect(maintenance.active).toBe(false);
  });

  it("answers 503 maintenance on the API and on /health while the database is swapped", async () => {
    const { base, maintenance } = await service();
    await maintenance.begin(1_000);
    const api = await call(base, "GET", "/api/notes");
    expect(api.status).toBe(503);
    expect(api.headers.get("retry-after")).toBe("5");
    expect(api.body.error.code).toBe("maintenance");
    expect((await call(base, "GET", "/health")).body).toMatchObject({ status: "maintenance" });
    expect((await call(base, "GET", "/health/live")).status).toBe(200);
    maintenance.end();
    expect((await call(base, "GET", "/api/notes")).status).toBe(200);
  });
});
