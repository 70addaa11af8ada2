// Faults the service must survive: a full disk, another process holding the write lock, a corrupt
// or foreign file at DATABASE_PATH, five processes starting at once, SIGTERM under load, and a data
// folder it cannot write. Real files and real child processes throughout.
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import { runMigrations } from "../src/db/migrator.ts";
import { takeBackup, verifyDatabaseFile } from "../src/db/sqlite/snapshot.ts";
import {
  callService,
  childEnv,
  cleanupAfterEach,
  connect,
  createTestApp,
  inFlightPost,
  migrationsWith,
  openSqliteStorage,
  ROOT,
  runNode,
  silentLogger,
  startService,
} from "./helpers.ts";
import { ADMIN_TOKEN, bearer, healthDetails } from "./ops-helpers.ts";

const { defer, track, tempDir } = cleanupAfterEach();

const isRoot = process.getuid?.() === 0;

/** Mounts (as root); false where the machine refuses (no privileges, no mount binary). */
function tryMount(args: string[]): boolean {
  if (!isRoot) return false;
  const result = spawnSync("mount", args, { stdio: "ignore" });
  return result.status === 0;
}

/** A fresh tmpfs (unmounted after the test), or the test is skipped where mounting is refused. */
function mountTmpfs(ctx: { skip(note: string): never }, name: string, options: string): string {
  const mountpoint = path.join(tempDir("svc-faults-"), name);
  fs.mkdirSync(mountpoint);
  if (!tryMount(["-t", "tmpfs", "-o", options, "tmpfs", mountpoint])) {
    ctx.skip("mounting a tmpfs needs root and a machine that allows mount (containers usually refuse)");
  }
  defer(() => spawnSync("umount", ["-l", mountpoint]));
  return mountpoint;
}

/** A database with notes in it, closed, and a verified backup of it in `backupDir`. */
async function databaseWithBackup(dir: string) {
  const file = path.join(dir, "data", "app.db");
  const backupDir = path.join(dir, "data", "backups");
  const db = await openSqliteStorage({ databasePath: file, backupDir, busyTimeoutMs: 1000 });
  await runMigrations({
    storage: db,
    migrationsDir: path.join(ROOT, "migrations"),
    backupDir,
    logger: silentLogger,
  });
  db.sqlite
    .prepare("INSERT INTO notes (title, body, created_at, updated_at) VALUES (?, ?, 'now', 'now')")
    .run("kept", "x".repeat(20_000));
  await db.close();
  const backup = takeBackup({ databasePath: file, backupDir, kind: "manual" });
  return { file, backupDir, backup };
}

/**
 * Every file in `dir` (not descending into folders) with a hash of its bytes. The -shm is an index
 * SQLite rebuilds on any open, not data: its presence counts, not its bytes.
 */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    if (entry.name.endsWith("-shm")) {
      files[entry.name] = "present";
      continue;
    }
    files[entry.name] = createHash("sha256")
      .update(fs.readFileSync(path.join(dir, entry.name)))
      .digest("hex");
  }
  return files;
}

function expectErrorBody(body: any, code: string) {
  expect(body).toEqual({ error: { code, message: expect.any(String), requestId: expect.any(String) } });
}

describe("disk full", () => {
  it("answers 507 storage_full to writes, keeps reads working, says why in /health, and recovers", async () => {
    const t = await createTestApp({ ADMIN_TOKEN });
    defer(() => t.close());
    const { sqlite } = t.storage;
    const first = await request(t.app).post("/api/notes").send({ title: "before", body: "b" }).expect(201);
    // SQLite's own limit stands in for the disk: the file may not grow past a few pages more.
    const pageCount = Number(sqlite.pragma("page_count", { simple: true }));
    sqlite.pragma(`max_page_count = ${pageCount + 8}`);

    let full: request.Response | undefined;
    let written = 0;
    for (let i = 0; i < 100 && !full; i++) {
      const res = await request(t.app)
        .post("/api/notes")
        .send({ title: `n${i}`, body: "z".repeat(9000) });
      if (res.status === 201) written++;
      else full = res;
    }
    expect(full?.status).toBe(507);
    expectErrorBody(full!.body, "storage_full");
    const stored = sqlite.prepare("SELECT count(*) FROM notes").pluck().get();
    expect(stored).toBe(written + 1);

    // Updates fail the same way; the note keeps its old body.
    const patch = await request(t.app)
      .patch(`/api/notes/${first.body.id}`)
      .send({ body: "y".repeat(9000) })
      .expect(507);
    expectErrorBody(patch.body, "storage_full");

    const read = await request(t.app).get(`/api/notes/${first.body.id}`).expect(200);
    expect(read.body.body).toBe("b");
    await request(t.app).get("/api/notes?limit=100").expect(200);
    await request(t.app).get("/health").expect(503, { status: "error", reason: "storage full" });
    const health = await request(t.app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(503);
    expect(health.body.reason).toMatch(/^storage is full: \d+ bytes left/);
    expect(health.body.database.availableBytes).toBeLessThan(1024 * 1024);
    expect(sqlite.pragma("integrity_check", { simple: true })).toBe("ok");

    // Space returns.
    sqlite.pragma("max_page_count = 1000000");
    await request(t.app)
      .post("/api/notes")
      .send({ title: "after", body: "z".repeat(9000) })
      .expect(201);
    await request(t.app).get("/health").expect(200);
    expect(sqlite.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(written + 2);
  });

  it("survives a real full filesystem (tmpfs): 507, reads, /health, then writes once it grows", async (ctx) => {
    const mountpoint = mountTmpfs(ctx, "small", "size=1m,mode=0700");
    const file = path.join(mountpoint, "app.db");
    const service = track(await startService({ DATABASE_PATH: file, ADMIN_TOKEN }));
    let status = 201;
    let sent = 0;
    const kept: number[] = [];
    while (status === 201 && sent < 200) {
      const res = await callService(service.port, "POST", "/api/notes", {
        title: `n${sent++}`,
        body: "q".repeat(9000),
      });
      status = res.status;
      if (status === 201) kept.push(res.body.id);
      else expectErrorBody(res.body, "storage_full");
    }
    expect(status).toBe(507);
    expect((await callService(service.port, "GET", `/api/notes/${kept[0]}`)).status).toBe(200);
    const health = await healthDetails(service.port);
    expect(health.status).toBe(503);
    expect(health.body.reason).toMatch(/^storage is full/);

    expect(tryMount(["-o", "remount,size=16m", mountpoint])).toBe(true);
    expect(
      (await callService(service.port, "POST", "/api/notes", { title: "after", body: "ok" })).status,
    ).toBe(201);
    expect((await callService(service.port, "GET", "/health")).status).toBe(200);
    service.process.kill("SIGTERM");
    expect((await service.exited).code).toBe(0);
    expect(verifyDatabaseFile(file).integrity).toEqual(["ok"]);
    const db = new BetterSqlite3(file, { readonly: true });
    expect(db.prepare("SELECT id FROM notes WHERE id <= ? ORDER BY id").pluck().all(kept.at(-1))).toEqual(
      kept,
    );
    db.close();
  });
});

// A second process that takes the write lock and holds it until SIGUSR2.
const LOCK_HOLDER = `
const db = new (require("better-sqlite3"))(process.env.DATABASE_PATH);
db.exec("BEGIN IMMEDIATE");
db.prepare("INSERT INTO notes (title, body, created_at, updated_at) VALUES ('from the holder', '', 'now', 'now')").run();
console.log(JSON.stringify({ msg: "locked" }));
process.on("SIGUSR2", () => {
  db.exec("COMMIT");
  db.close();
  console.log(JSON.stringify({ msg: "released" }));
});
setInterval(() => {}, 1000);
`;

describe("lock contention", () => {
  it("answers 503 database_busy with Retry-After while another process holds the lock, and serves reads", async () => {
    const dir = tempDir("svc-faults-");
    const file = path.join(dir, "app.db");
    const service = track(await startService({ DATABASE_PATH: file, BUSY_TIMEOUT_MS: "50" }));
    const before = await callService(service.port, "POST", "/api/notes", { title: "before the lock" });
    expect(before.status).toBe(201);

    const holder = track(runNode("-e", [LOCK_HOLDER], { DATABASE_PATH: file }));
    await holder.waitForLog((l) => l.msg === "locked");

    const writes = await Promise.all([
      callService(service.port, "POST", "/api/notes", { title: "blocked 1" }),
      callService(service.port, "POST", "/api/notes", { title: "blocked 2" }),
      callService(service.port, "PATCH", `/api/notes/${before.body.id}`, { title: "blocked 3" }),
      callService(service.port, "DELETE", `/api/notes/${before.body.id}`),
    ]);
    for (const res of writes) {
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
      expectErrorBody(res.body, "database_busy");
    }
    // WAL: readers do not wait for the writer.
    const read = await callService(service.port, "GET", `/api/notes/${before.body.id}`);
    expect(read).toMatchObject({ status: 200, body: { title: "before the lock" } });
    expect((await callService(service.port, "GET", "/api/notes")).body.items).toHaveLength(1);
    expect((await callService(service.port, "GET", "/health")).status).toBe(200);

    holder.process.kill("SIGUSR2");
    await holder.waitForLog((l) => l.msg === "released");
    const after = await callService(service.port, "POST", "/api/notes", { title: "after the lock" });
    expect(after.status).toBe(201);
    const titles = (await callService(service.port, "GET", "/api/notes")).body.items.map((n: any) => n.title);
    expect(titles).toEqual(["after the lock", "from the holder", "before the lock"]);
  });
});

describe("a corrupt or foreign file at DATABASE_PATH", () => {
  const cases: [string, (file: string) => void, RegExp][] = [
    ["a truncated database", (file) => fs.truncateSync(file, 8192), /is truncated: its header describes/],
    [
      "random bytes",
      (file) =>
        fs.writeFileSync(file, Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 7919 + 13) % 256))),
      /is not a SQLite database \(its first bytes are not the SQLite header\)/,
    ],
    [
      "a text file",
      (file) => fs.writeFileSync(file, "name,email\nada,ada@example.com\n"),
      /is not a SQLite database/,
    ],
    [
      "a database whose schema page is garbage",
      (file) => {
        // Keep the 100-byte header, overwrite the rest of page 1 (the schema's b-tree).
        const fd = fs.openSync(file, "r+");
        fs.writeSync(fd, Buffer.alloc(4096 - 100, 0xa5), 0, 4096 - 100, 100);
        fs.closeSync(fd);
      },
      /is not a SQLite database or is corrupt \(SQLITE_CORRUPT/,
    ],
  ];

  it.each(cases)(
    "refuses %s with one line naming the newest backup, exit 1, file untouched",
    async (_, damage, problem) => {
      const dir = tempDir("svc-faults-");
      const { file, backup } = await databaseWithBackup(dir);
      damage(file);
      const before = snapshot(path.dirname(file));
      const child = runNode("src/main.ts", [], { DATABASE_PATH: file, PORT: "0" });
      expect((await child.exited).code).toBe(1);
      const lines = child.stderr().split("\n");
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(problem);
      expect(lines[0]).toContain(`Newest backup: ${backup.path}`);
      expect(child.logs.some((l) => l.msg === "listening")).toBe(false);
      // The file, byte for byte, and nothing created or removed beside it (-wal, -shm, journal).
      expect(snapshot(path.dirname(file))).toEqual(before);
    },
  );

  it("refuses a directory at DATABASE_PATH with the fix, leaving it as it was", async () => {
    const dir = tempDir("svc-faults-");
    const file = path.join(dir, "app.db");
    fs.mkdirSync(file);
    fs.writeFileSync(path.join(file, "keep.txt"), "x");
    const child = runNode("src/main.ts", [], { DATABASE_PATH: file, PORT: "0" });
    expect((await child.exited).code).toBe(1);
    expect(child.stderr()).toBe(
      `startup failed: DATABASE_PATH ${file} is a directory, not a database file. Fix: set DATABASE_PATH to a file inside it, such as ${path.join(file, "app.db")}.\n`,
    );
    expect(fs.readdirSync(file)).toEqual(["keep.txt"]);
  });
});

// Holds the migration transaction open until the test creates the file named by MIGRATION_GATE:
// every other starter then provably waits on the lock rather than arriving after the fact.
const GATED_MIGRATION = `
import fs from "node:fs";
export async function up(db) {
  await db.schema.createTable("gated").addColumn("id", "integer").execute();
  await db.insertInto("gated").values({ id: 1 }).execute();
  while (!fs.existsSync(process.env.MIGRATION_GATE)) await new Promise((resolve) => setTimeout(resolve, 10));
}
export async function down(db) { await db.schema.dropTable("gated").execute(); }
`;

describe("many starters", () => {
  // The fresh database adds the race to create the file and switch it to WAL; npm run test:soak runs it.
  const variants: [string, boolean][] = [["a database holding data", true]];
  if (process.env.SOAK) variants.push(["a database that does not exist yet", false]);
  it.each(variants)(
    "five processes starting at once on %s: one backup at most, one application, all serve",
    async (_, seeded) => {
      const dir = tempDir("svc-faults-");
      const file = path.join(dir, "data", "app.db");
      const backupDir = path.join(dir, "data", "backups");
      const gate = path.join(dir, "gate");
      const migrationsDir = migrationsWith(dir, { "0002_gated.ts": GATED_MIGRATION });
      if (seeded) {
        const db = await openSqliteStorage({ databasePath: file, backupDir, busyTimeoutMs: 1000 });
        await runMigrations({
          storage: db,
          migrationsDir: path.join(ROOT, "migrations"),
          backupDir,
          logger: silentLogger,
        });
        db.sqlite.exec(
          "INSERT INTO notes (title, body, created_at, updated_at) VALUES ('seed', '', 'now', 'now')",
        );
        await db.close();
      }
      const env = {
        DATABASE_PATH: file,
        MIGRATIONS_DIR: migrationsDir,
        MIGRATION_GATE: gate,
        BUSY_TIMEOUT_MS: "100",
        PORT: "0",
        HOST: "127.0.0.1",
        ADMIN_TOKEN,
      };
      const children = Array.from({ length: 5 }, () => track(runNode("src/main.ts", [], env)));
      // One process is inside the migration, the four others wait for its lock: then open the gate.
      const roles = await Promise.all(
        children.map((child) =>
          Promise.race([
            child
              .waitForLog((l) => l.msg === "applying migration" && l.migration === "0002_gated")
              .then(() => "applier"),
            child
              .waitForLog((l) => l.msg === "waiting for another process to finish migrating")
              .then(() => "waiter"),
          ]),
        ),
      );
      expect(roles.sort()).toEqual(["applier", "waiter", "waiter", "waiter", "waiter"]);
      fs.writeFileSync(gate, "");
      const ports = await Promise.all(
        children.map(async (child) => (await child.waitForLog((l) => l.msg === "listening")).port as number),
      );

      expect(listBackups(backupDir)).toHaveLength(seeded ? 1 : 0);
      const appliers = children.filter((c) =>
        c.logs.some((l) => l.msg === "migrations applied" && (l.migrations as string[]).length > 0),
      );
      expect(appliers).toHaveLength(1);
      for (const port of ports) {
        const health = await healthDetails(port);
        expect(health.status).toBe(200);
        expect(health.body.database.migrations).toEqual({ applied: 2, pending: 0, latest: "0002_gated" });
      }
      for (const child of children) child.process.kill("SIGTERM");
      await Promise.all(children.map((c) => c.exited));
      const db = new BetterSqlite3(file, { readonly: true });
      expect(db.prepare("SELECT name FROM schema_migrations ORDER BY name").pluck().all()).toEqual([
        "0001_create_notes",
        "0002_gated",
      ]);
      expect(db.prepare("SELECT count(*) FROM gated").pluck().get()).toBe(1);
      expect(db.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(seeded ? 1 : 0);
      db.close();
    },
  );
});

describe("shutdown under load", () => {
  it("on SIGTERM completes all 50 requests in flight, refuses new connections and exits 0 with no -wal", async () => {
    const dir = tempDir("svc-faults-");
    const file = path.join(dir, "app.db");
    const service = track(await startService({ DATABASE_PATH: file, SHUTDOWN_TIMEOUT_MS: "60000" }));
    const posts = Array.from({ length: 50 }, (_, i) => inFlightPost(service.port, `in flight ${i}`));
    await Promise.all(posts.map((p) => p.accepted));

    service.process.kill("SIGTERM");
    await service.waitForLog((l) => l.msg === "shutting down: draining requests");
    expect(await connect(service.port)).toBe("ECONNREFUSED");
    for (const post of posts) post.finish();

    const responses = await Promise.all(posts.map((p) => p.response));
    responses.forEach((res, i) => {
      expect(res.status).toBe(201);
      expect(res.headers.connection).toBe("close");
      expect(JSON.parse(res.body)).toMatchObject({ title: `in flight ${i}` });
    });
    expect(await service.exited).toEqual({ code: 0, signal: null });
    // Drained, not cut: every request finished before SHUTDOWN_TIMEOUT_MS.
    expect(service.logs.some((l) => l.msg?.startsWith("shutdown timeout reached"))).toBe(false);
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    const db = new BetterSqlite3(file, { readonly: true });
    expect(db.prepare("SELECT count(*) FROM notes WHERE title LIKE 'in flight %'").pluck().get()).toBe(50);
    db.close();
  });

  it("cuts a request slower than SHUTDOWN_TIMEOUT_MS and still exits 0 with the database closed", async () => {
    const dir = tempDir("svc-faults-");
    const file = path.join(dir, "app.db");
    const service = track(await startService({ DATABASE_PATH: file, SHUTDOWN_TIMEOUT_MS: "200" }));
    const done = await callService(service.port, "POST", "/api/notes", { title: "done before" });
    expect(done.status).toBe(201);
    // Its body never comes: the slowest request there is.
    const slow = inFlightPost(service.port, "never finished");
    const outcome = slow.response.then(
      () => "answered",
      (error: NodeJS.ErrnoException) => error.code,
    );
    await slow.accepted;

    service.process.kill("SIGTERM");
    expect(await service.exited).toEqual({ code: 0, signal: null });
    expect(await outcome).toBe("ECONNRESET");
    expect(service.logs.find((l) => l.msg?.startsWith("shutdown timeout reached"))).toMatchObject({ cut: 1 });
    expect(service.logs.some((l) => l.msg === "database closed; bye")).toBe(true);
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    expect(verifyDatabaseFile(file).integrity).toEqual(["ok"]);
  });
});

describe("a data folder the service cannot write", () => {
  /**
   * A node binary uid 1000 can run: process.execPath may sit under /root (mode 0700). A hard link
   * costs nothing; a copy is the fallback across filesystems.
   */
  function nodeForOtherUser(dir: string): string | undefined {
    const bin = path.join(dir, "bin");
    fs.mkdirSync(bin, { mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    const node = path.join(bin, "node");
    try {
      fs.linkSync(process.execPath, node);
    } catch {
      fs.copyFileSync(process.execPath, node);
    }
    fs.chmodSync(node, 0o755);
    const probe = spawnSync(
      node,
      ["-e", `require("fs").accessSync(${JSON.stringify(path.join(ROOT, "src", "main.ts"))})`],
      {
        uid: 1000,
        gid: 1000,
        cwd: ROOT,
        stdio: "ignore",
      },
    );
    return probe.status === 0 ? node : undefined;
  }

  function startAs(node: string, env: Record<string, string>) {
    const child = spawn(node, ["src/main.ts"], {
      cwd: ROOT,
      uid: 1000,
      gid: 1000,
      env: childEnv({ NODE_ENV: "test", LOG_LEVEL: "info", PORT: "0", ...env }),
      stdio: ["ignore", "ignore", "pipe"],
    });
    defer(() => child.kill("SIGKILL"));
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    return new Promise<{ code: number | null; stderr: string }>((resolve) =>
      child.once("exit", (code) => resolve({ code, stderr })),
    );
  }

  it("names the owner, the process's uid and the fix when the folder belongs to another uid", async (ctx) => {
    if (!isRoot) ctx.skip("needs root to run the service as another uid (uid 1000)");
    const dir = tempDir("svc-faults-");
    const node = nodeForOtherUser(dir);
    if (!node) ctx.skip("uid 1000 cannot read the project files or run node here");
    const cases = [
      // Owned by root, 0755: readable, not writable.
      { setup: (d: string) => fs.mkdirSync(d, { mode: 0o755 }), target: (d: string) => d },
      // Owned by root, 0700: not even readable.
      { setup: (d: string) => fs.mkdirSync(d, { mode: 0o700 }), target: (d: string) => d },
      // Writable folder, but the database file belongs to root.
      {
        setup: (d: string) => {
          fs.mkdirSync(d, { mode: 0o777 });
          fs.chmodSync(d, 0o777);
          fs.writeFileSync(path.join(d, "app.db"), "", { mode: 0o600 });
        },
        target: (d: string) => path.join(d, "app.db"),
      },
    ];
    const results = await Promise.all(
      cases.map(({ setup }, i) => {
        const data = path.join(dir, `data${i}`);
        setup(data);
        return startAs(node!, { DATABASE_PATH: path.join(data, "app.db") });
      }),
    );
    for (const [i, { code, stderr }] of results.entries()) {
      const target = cases[i]!.target(path.join(dir, `data${i}`));
      expect(code, stderr).toBe(1);
      expect(stderr.split("\n")).toHaveLength(2);
      expect(stderr).toContain(
        `${target} is owned by uid 0; this process runs as uid 1000. Fix: make it writable for uid 1000 (chown -R 1000 ${target}`,
      );
    }
  });

  it("says the filesystem is read-only and how to fix it", async (ctx) => {
    const mountpoint = mountTmpfs(ctx, "ro", "size=4m");
    const existing = path.join(mountpoint, "data", "app.db");
    const first = await startService({ DATABASE_PATH: existing });
    first.process.kill("SIGTERM");
    await first.exited;
    expect(tryMount(["-o", "remount,ro", mountpoint])).toBe(true);
    const before = fs.readFileSync(existing);

    for (const [file, expected] of [
      [
        existing,
        `${path.dirname(existing)} is on a read-only filesystem. Fix: mount a writable volume there`,
      ],
      [
        path.join(mountpoint, "new", "app.db"),
        `cannot create the database folder ${path.join(mountpoint, "new")}: the filesystem is read-only. Fix:`,
      ],
    ] as const) {
      const child = runNode("src/main.ts", [], { DATABASE_PATH: file, PORT: "0" });
      expect((await child.exited).code).toBe(1);
      expect(child.stderr().split("\n")).toHaveLength(2);
      expect(child.stderr()).toContain(expected);
    }
    expect(fs.readFileSync(existing).equals(before)).toBe(true);
  });
});
