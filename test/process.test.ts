// The service as a real child process: startup, refusal to start, and graceful shutdown.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import {
  callService,
  cleanupAfterEach,
  connect,
  inFlightPost,
  migrationsWith,
  runNode,
  startService,
} from "./helpers.ts";
import { ADMIN_TOKEN, healthDetails } from "./ops-helpers.ts";

const { track, tempDir } = cleanupAfterEach();

describe("the service process", () => {
  it("creates the database at a nested DATABASE_PATH and serves /health with WAL", async () => {
    const dir = tempDir();
    const databasePath = path.join(dir, "a", "b", "app.db");
    const service = track(await startService({ DATABASE_PATH: databasePath, ADMIN_TOKEN }));
    expect(await callService(service.port, "GET", "/health")).toMatchObject({
      status: 200,
      body: { status: "ok" },
    });
    const { status, body } = await healthDetails(service.port);
    expect(status).toBe(200);
    expect(body.database).toMatchObject({
      path: databasePath,
      journalMode: "wal",
      migrations: { pending: 0 },
    });
    expect(fs.statSync(databasePath).isFile()).toBe(true);
    expect((fs.statSync(databasePath).mode & 0o777).toString(8)).toBe("600");
  });

  it("exits 1 with one line naming a bad setting", async () => {
    const child = runNode("src/main.ts", [], { PORT: "eighty" });
    expect((await child.exited).code).toBe(1);
    expect(child.stderr()).toBe(
      'startup failed: invalid PORT="eighty": expected a whole number from 0 to 65535\n',
    );
    expect(child.logs.some((l) => l.msg === "listening")).toBe(false);
  });

  it("exits 1 with one line when DATABASE_PATH is not a database, leaving it untouched", async () => {
    const dir = tempDir();
    const databasePath = path.join(dir, "app.db");
    fs.writeFileSync(databasePath, "hello, I am a text file\n");
    const child = runNode("src/main.ts", [], { DATABASE_PATH: databasePath });
    expect((await child.exited).code).toBe(1);
    expect(child.stderr()).toMatch(
      /^startup failed: .*app\.db is not a SQLite database .*No backup found in .*\n$/,
    );
    expect(child.stderr().split("\n")).toHaveLength(2);
    expect(fs.readFileSync(databasePath, "utf8")).toBe("hello, I am a text file\n");
  });

  it("never serves when a migration fails, and names the backup it took", async () => {
    const dir = tempDir();
    const databasePath = path.join(dir, "app.db");
    const migrationsDir = migrationsWith(dir, {});
    const first = track(await startService({ DATABASE_PATH: databasePath, MIGRATIONS_DIR: migrationsDir }));
    await fetch(`http://127.0.0.1:${first.port}/api/notes`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: "keep me" }),
    });
    first.process.kill("SIGTERM");
    expect((await first.exited).code).toBe(0);

    fs.writeFileSync(
      path.join(migrationsDir, "0002_broken.ts"),
      'export async function up() { throw new Error("nope"); }\n',
    );
    const child = runNode("src/main.ts", [], {
      DATABASE_PATH: databasePath,
      MIGRATIONS_DIR: migrationsDir,
      PORT: "0",
    });
    expect((await child.exited).code).toBe(1);
    const [backup] = listBackups(path.join(dir, "backups"));
    expect(child.stderr()).toBe(
      `startup failed: migration 0002_broken failed: nope. Rolled back: the database is as it was. Pre-migration backup: ${backup!.path}.\n`,
    );
    expect(child.logs.some((l) => l.msg === "listening")).toBe(false);
  });

  it("on SIGTERM finishes the request in flight, refuses new connections, closes the database and exits 0", async () => {
    const dir = tempDir();
    const databasePath = path.join(dir, "app.db");
    const service = track(await startService({ DATABASE_PATH: databasePath, SHUTDOWN_TIMEOUT_MS: "20000" }));
    const post = inFlightPost(service.port);
    await post.accepted;

    service.process.kill("SIGTERM");
    await service.waitForLog((l) => l.msg === "shutting down: draining requests");
    expect(await connect(service.port)).toBe("ECONNREFUSED");
    post.finish();

    const response = await post.response;
    expect(response.status).toBe(201);
    expect(JSON.parse(response.body)).toMatchObject({ title: "sent during shutdown" });
    expect(response.headers.connection).toBe("close");
    expect(await service.exited).toEqual({ code: 0, signal: null });
    expect(service.logs.some((l) => l.msg === "database closed; bye")).toBe(true);
    expect(fs.existsSync(`${databasePath}-wal`)).toBe(false);
    expect(fs.existsSync(`${databasePath}-shm`)).toBe(false);
  });

  it("exits at once on a second signal", async () => {
    const dir = tempDir();
    const service = track(
      await startService({ DATABASE_PATH: path.join(dir, "app.db"), SHUTDOWN_TIMEOUT_MS: "600000" }),
    );
    const post = inFlightPost(service.port);
    post.response.catch(() => {}); // the connection is cut
    await post.accepted;
    service.process.kill("SIGTERM");
    await service.waitForLog((l) => l.msg === "shutting down: draining requests");
    service.process.kill("SIGINT");
    expect((await service.exited).code).toBe(1);
    expect(service.logs.some((l) => l.msg === "second signal: exiting at once")).toBe(true);
  });
});
