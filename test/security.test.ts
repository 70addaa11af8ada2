// Security checks: helmet's headers on every kind of response, nothing internal in an error even
// in production, files readable by their owner only, and stored text returned verbatim as JSON.
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import {
  cleanupAfterEach,
  createTestApp,
  makeTempDir,
  migrationsWith,
  ROOT,
  runNode,
  startService,
  type TestApp,
} from "./helpers.ts";

const { defer, track } = cleanupAfterEach();

function expectHelmet(headers: Record<string, string | string[] | undefined>, what: string) {
  expect(headers["x-powered-by"], what).toBeUndefined();
  expect(headers["x-content-type-options"], what).toBe("nosniff");
  expect(headers["content-security-policy"], what).toContain("default-src 'self'");
  expect(headers["x-frame-options"], what).toBe("SAMEORIGIN");
  expect(headers["strict-transport-security"], what).toMatch(/max-age=/);
  expect(headers["cross-origin-resource-policy"], what).toBe("same-origin");
  expect(headers["referrer-policy"], what).toBe("no-referrer");
}

const mode = (file: string) => (fs.statSync(file).mode & 0o777).toString(8);

describe("security headers", () => {
  it("are on every response: success, each kind of error, 404, HEAD and a 500", async () => {
    const t: TestApp = await createTestApp({ BODY_LIMIT: "1kb" });
    defer(() => t.close());
    const created = await request(t.app).post("/api/notes").send({ title: "x" });
    const responses: [string, request.Response][] = [
      ["201", created],
      ["200", await request(t.app).get(`/api/notes/${created.body.id}`)],
      ["200 health", await request(t.app).get("/health")],
      ["HEAD", await request(t.app).head("/health/live")],
      ["204", await request(t.app).delete(`/api/notes/${created.body.id}`)],
      ["400", await request(t.app).post("/api/notes").send({ title: "" })],
      [
        "400 bad json",
        await request(t.app).post("/api/notes").set("Content-Type", "application/json").send("{"),
      ],
      ["400 bad param", await request(t.app).get("/api/notes/%c3%28")],
      ["404", await request(t.app).get("/nope")],
      [
        "413",
        await request(t.app)
          .post("/api/notes")
          .send({ title: "x".repeat(2000) }),
      ],
      ["415", await request(t.app).post("/api/notes").set("Content-Type", "text/plain").send("x")],
    ];
    t.storage.sqlite.exec("DROP TABLE notes");
    responses.push(["500", await request(t.app).get("/api/notes")]);
    const statuses = responses.map(([, res]) => res.status);
    expect(statuses).toEqual([201, 200, 200, 200, 204, 400, 400, 400, 404, 413, 415, 500]);
    for (const [what, res] of responses) expectHelmet(res.headers, what);
  });
});

describe("errors in production", () => {
  it("never carry a stack, SQL or a file path", async () => {
    const dir = makeTempDir();
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, "app.db");
    const service = track(await startService({ DATABASE_PATH: file, NODE_ENV: "production" }));
    const url = (p: string) => `http://127.0.0.1:${service.port}${p}`;
    const post = (body: string, type = "application/json") =>
      fetch(url("/api/notes"), { method: "POST", headers: { "Content-Type": type }, body });
    const ok = await post(JSON.stringify({ title: "fine" }));
    expect(ok.status).toBe(201);

    // Another process breaks the schema under the running service: its next query fails inside SQLite.
    const other = new BetterSqlite3(file);
    other.exec("DROP TABLE notes");
    other.close();
    const responses = [
      await fetch(url("/api/notes")),
      await fetch(url("/api/notes/1")),
      await post(JSON.stringify({ title: "x" })),
      await post("{"),
      await post("x", "text/plain"),
      await fetch(url("/api/notes/%c3%28")),
      await fetch(url("/nope")),
    ];
    expect(responses.map((r) => r.status)).toEqual([500, 500, 500, 400, 415, 400, 404]);
    for (const res of responses) {
      expectHelmet(Object.fromEntries(res.headers), String(res.status));
      const text = await res.text();
      expect(JSON.parse(text).error.code).toMatch(/^[a-z_]+$/);
      expect(text).not.toMatch(/\bat \S+ \(|\n\s+at |SELECT|FROM|notes"|SQLITE|no such table|node_modules/);
      expect(text).not.toContain(ROOT);
      expect(text).not.toContain(dir);
    }
    // The cause is in the log, for the operator.
    await service.waitForLog(
      (l) => (l.err as { message?: string } | undefined)?.message?.includes("no such table") ?? false,
    );
  });
});

describe("file permissions", () => {
  it("keeps the database, -wal, -shm and every backup at 0600, in 0700 folders", async () => {
    const dir = makeTempDir();
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, "data", "app.db");
    const backupDir = path.join(dir, "data", "backups");
    const migrationsDir = migrationsWith(dir, {});
    const env = { DATABASE_PATH: file, MIGRATIONS_DIR: migrationsDir };
    const first = track(await startService(env));
    await fetch(`http://127.0.0.1:${first.port}/api/notes`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: "secret" }),
    });
    expect({
      db: mode(file),
      wal: mode(`${file}-wal`),
      shm: mode(`${file}-shm`),
      dir: mode(path.dirname(file)),
    }).toEqual({ db: "600", wal: "600", shm: "600", dir: "700" });
    first.process.kill("SIGTERM");
    await first.exited;

    // A pre-migration backup (the service) and a manual one (the CLI).
    fs.writeFileSync(
      path.join(migrationsDir, "0002_extra.ts"),
      'export async function up(db) { await db.schema.createTable("extra").addColumn("id", "integer").execute(); }\n',
    );
    const second = track(await startService(env));
    second.process.kill("SIGTERM");
    await second.exited;
    const cli = runNode("scripts/db.ts", ["backup"], env);
    expect((await cli.exited).code, cli.stderr()).toBe(0);

    const backups = listBackups(backupDir);
    expect(backups.map((b) => b.kind).sort()).toEqual(["manual", "pre-migration"]);
    expect(mode(backupDir)).toBe("700");
    for (const backup of backups) expect(mode(backup.path), backup.file).toBe("600");
    for (const name of fs.readdirSync(path.dirname(file))) {
      const target = path.join(path.dirname(file), name);
      expect(mode(target), name).toBe(fs.statSync(target).isDirectory() ? "700" : "600");
    }
  });
});

describe("stored text", () => {
  it("keeps notes holding SQL and HTML verbatim, and returns them as JSON", async () => {
    const t = await createTestApp();
    defer(() => t.close());
    const note = {
      title: `Robert'); DROP TABLE notes;-- <script>alert("x")</script>`,
      body: `<img src=x onerror=alert(1)> ' OR '1'='1 \\"; SELECT * FROM sqlite_schema; -- &amp; \u2028 \u0001 end`,
    };
    const created = await request(t.app).post("/api/notes").send(note).expect(201);
    expect(created.headers["content-type"]).toBe("application/json; charset=utf-8");
    const read = await request(t.app).get(`/api/notes/${created.body.id}`).expect(200);
    expect(read.headers["content-type"]).toBe("application/json; charset=utf-8");
    expect(read.body).toMatchObject(note);
    // Escaped by JSON, not by HTML-escaping that would alter the text.
    expect(read.text).toContain(JSON.stringify(note.title));
    const row = t.storage.sqlite.prepare("SELECT title, body FROM notes WHERE id = ?").get(created.body.id);
    expect(row).toEqual(note);
    expect(
      t.storage.sqlite.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'notes'").pluck().get(),
    ).toBe(1);
  });
});
