// PostgreSQL-only behaviour: the pool (exhaustion, lock waits, retries of serialization failures),
// the process (one-line startup errors, draining on SIGTERM, what it loads when SQLite is in use),
// /health's facts, and backups taken under write load or cut short.
import fs from "node:fs";
import path from "node:path";
import { sql } from "kysely";
import request from "supertest";
import { expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import { classifyDatabaseError } from "../src/db/errors.ts";
import { findTools } from "../src/db/postgres/tools.ts";
import { parseDatabaseUrl } from "../src/db/postgres/url.ts";
import { BackupError, loadEngine } from "../src/db/storage.ts";
import {
  asPostgres,
  createEngineTestApp,
  createTestDatabase,
  describePostgres,
  type EngineTestApp,
  TEST_DATABASE_URL,
  withAdminSession,
} from "./engines.ts";
import { callService, cleanupAfterEach, inFlightPost, runNode, startService } from "./helpers.ts";
import { ADMIN_TOKEN, bearer, healthDetails, TOKENS } from "./ops-helpers.ts";

const { defer, tempDir, track, run } = cleanupAfterEach();

async function app(env: Record<string, string> = {}): Promise<EngineTestApp> {
  const t = await createEngineTestApp("postgres", env);
  defer(() => t.close());
  return t;
}

/** Sessions on the server whose application_name is `name`. */
async function sessionsNamed(name: string): Promise<number> {
  return withAdminSession(async (client) => {
    const { rows } = await client.query<{ n: number }>(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
      [name],
    );
    return rows[0]!.n;
  });
}

describePostgres("the pool", () => {
  it("answers 503 database_unavailable with Retry-After when every connection is taken, and recovers", async () => {
    const t = await app({ DATABASE_POOL_MAX: "1", DATABASE_CONNECT_TIMEOUT_MS: "300" });
    await request(t.app).post("/api/notes").send({ title: "one" }).expect(201);
    const held = await asPostgres(t.storage).pool.connect();
    const started = performance.now();
    const res = await request(t.app).get("/api/notes/1").expect(503);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(res.headers["retry-after"]).toBe("5");
    expect(res.body.error).toMatchObject({ code: "database_unavailable" });
    await request(t.app).get("/health").expect(503);
    held.release();
    await request(t.app).get("/api/notes/1").expect(200);
    await request(t.app).get("/health").expect(200);
  });

  it("answers 503 database_busy with Retry-After when a row lock outlasts DATABASE_LOCK_TIMEOUT_MS", async () => {
    const t = await app({ DATABASE_LOCK_TIMEOUT_MS: "200" });
    await request(t.app).post("/api/notes").send({ title: "locked" }).expect(201);
    const holder = await asPostgres(t.storage).pool.connect();
    defer(() => holder.release(true));
    await holder.query("BEGIN");
    await holder.query("SELECT * FROM notes WHERE id = 1 FOR UPDATE");
    const res = await request(t.app).patch("/api/notes/1").send({ title: "changed" }).expect(503);
    expect(res.headers["retry-after"]).toBe("1");
    expect(res.body.error.code).toBe("database_busy");
    await holder.query("ROLLBACK");
    await request(t.app).patch("/api/notes/1").send({ title: "changed" }).expect(200);
  });

  it("survives a connection that dies while checked out (the server ends it mid-transaction)", async () => {
    const t = await app();
    const failed = await t.storage.kysely
      .transaction()
      .execute(async (tx) => {
        const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(tx);
        await withAdminSession((client) => client.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]));
        // The connection is checked out and idle here when the server's goodbye arrives: pg emits
        // 'error' on it, which without a listener of ours would be an uncaught exception.
        await new Promise((resolve) => setTimeout(resolve, 300));
        return sql`SELECT 1`.execute(tx);
      })
      .catch((e: unknown) => e);
    expect(classifyDatabaseError(failed)).toBe("unavailable");
    await request(t.app).post("/api/notes").send({ title: "after" }).expect(201);
  });

  it("retries a statement the server rolled back for a serialization failure, a bounded number of times, never inside a transaction", async () => {
    const t = await app();
    const db = t.storage.kysely;
    // nextval() is not rolled back with the failed statement: it counts the attempts.
    await sql`CREATE SEQUENCE attempts`.execute(db);
    await sql`CREATE FUNCTION flaky(failures int) RETURNS bigint LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('attempts') <= failures THEN
          RAISE EXCEPTION 'conflict' USING ERRCODE = '40001';
        END IF;
        RETURN currval('attempts');
      END $$`.execute(db);
    const flaky = (failures: number, on = db) =>
      sql<{ n: number }>`SELECT flaky(${failures}) AS n`.execute(on).then((r) => r.rows[0]!.n);
    const attempts = async () =>
      (await sql<{ n: number }>`SELECT last_value AS n FROM attempts`.execute(db)).rows[0]!.n;

    expect(await flaky(2)).toBe(3); // failed twice, the third attempt ran
    await sql`SELECT setval('attempts', 1, false)`.execute(db);
    const exhausted = await flaky(10).catch((e: unknown) => e);
    expect((exhausted as { code?: string }).code).toBe("40001");
    expect(classifyDatabaseError(exhausted)).toBe("busy");
    expect(await attempts()).toBe(3);

    await sql`SELECT setval('attempts', 1, false)`.execute(db);
    const inTransaction = await db
      .transaction()
      .execute((tx) => flaky(1, tx))
      .catch((e: unknown) => e);
    expect((inTransaction as { code?: string }).code).toBe("40001");
    expect(await attempts()).toBe(1);
  });
});

describePostgres("prepared statements", () => {
  it("keeps serving when another instance's migration changes a table a prepared SELECT * reads", async () => {
    // One connection: the second read runs on the connection that prepared the first.
    const t = await app({ DATABASE_POOL_MAX: "1" });
    await request(t.app).post("/api/notes").send({ title: "before" }).expect(201);
    await request(t.app).get("/api/notes/1").expect(200);
    await withAdminSession(
      (client) => client.query("ALTER TABLE notes ADD COLUMN tags text NOT NULL DEFAULT '[]'"),
      (parseDatabaseUrl(t.config.databaseUrl!) as { database: string }).database,
    );
    const res = await request(t.app).get("/api/notes/1").expect(200);
    expect(res.body).toMatchObject({ id: 1, title: "before" });
    await request(t.app).get("/api/notes?limit=5").expect(200);
  });
});

describePostgres("/health on PostgreSQL", () => {
  it("reports the engine's facts to the admin token: server, size, connections, pool, recovery", async () => {
    const t = await app(TOKENS);
    await request(t.app).post("/api/notes").send({ title: "one" }).expect(201);
    await request(t.app).get("/health").expect(200, { status: "ok" });
    const res = await request(t.app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(200);
    const { password } = parseDatabaseUrl(t.config.databaseUrl!) as { password: string };
    expect(res.body.database).toEqual({
      engine: "postgres",
      target: t.storage.engine.target,
      serverVersion: expect.stringMatching(/^\d+\.\d+/),
      sizeBytes: expect.any(Number),
      connections: { used: expect.any(Number), max: expect.any(Number) },
      pool: { total: expect.any(Number), idle: expect.any(Number), waiting: 0, max: 10 },
      inRecovery: false,
      availableBytes: null,
      migrations: { applied: 1, pending: 0, latest: "0001_create_notes" },
      lastBackup: null,
      tables: { notes: 1, schema_migrations: 1 },
    });
    expect(res.body.database.sizeBytes).toBeGreaterThan(1_000_000);
    expect(res.body.database.connections.used).toBeGreaterThan(0);
    expect(res.body.database.pool.total).toBeGreaterThan(0);
    if (password) expect(JSON.stringify(res.body)).not.toContain(password);
  });

  it("answers 503 on a database in read-only mode, naming the cause", async () => {
    const t = await app();
    const { database } = parseDatabaseUrl(t.config.databaseUrl!) as { database: string };
    await withAdminSession((client) =>
      client.query(`ALTER DATABASE "${database}" SET default_transaction_read_only = on`),
    );
    // The setting applies to new sessions: start from a fresh pool.
    const storage = await (await loadEngine(t.config)).open();
    defer(() => storage.close());
    const health = await storage.readHealth();
    expect(health.problem).toMatch(/default_transaction_read_only is on/);
    const now = new Date().toISOString();
    const write = await storage.kysely
      .insertInto("notes")
      .values({ title: "x", body: "", created_at: now, updated_at: now })
      .execute()
      .catch((e: unknown) => e);
    expect(classifyDatabaseError(write)).toBe("readonly");
  });
});

describePostgres("the service on PostgreSQL", () => {
  it("logs the engine and the target without the password when it listens", async () => {
    const database = await createTestDatabase();
    defer(() => database.drop());
    const service = track(
      await startService({ DATABASE_URL: database.url, BACKUP_DIR: tempDir(), ADMIN_TOKEN }),
    );
    const listening = service.logs.find((l) => l.msg === "listening")!;
    expect(listening).toMatchObject({
      engine: "postgres",
      database: expect.stringMatching(/^postgres(ql)?:\/\//),
    });
    const { password } = parseDatabaseUrl(database.url) as { password: string };
    if (password) expect(service.logs.map((l) => JSON.stringify(l)).join("\n")).not.toContain(password);
    const health = await healthDetails(service.port);
    expect(health.body.database.engine).toBe("postgres");
  });

  it("takes a backup over /admin but refuses an online restore, pointing at the command line, and changes nothing", async () => {
    const database = await createTestDatabase();
    defer(() => database.drop());
    const service = track(
      await startService({ DATABASE_URL: database.url, BACKUP_DIR: tempDir(), ADMIN_TOKEN }),
    );
    const admin = async (method: string, url: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${service.port}${url}`, {
        method,
        headers: { ...bearer(ADMIN_TOKEN), "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as any };
    };
    expect((await callService(service.port, "POST", "/api/notes", { title: "in the backup" })).status).toBe(
      201,
    );
    const backup = await admin("POST", "/admin/backups");
    expect(backup.status).toBe(201);
    expect(backup.body.file).toMatch(/-manual\.dump$/);
    expect((await callService(service.port, "POST", "/api/notes", { title: "after it" })).status).toBe(201);

    const refused = await admin("POST", "/admin/restore", { backup: "latest" });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe("restore_refused");
    expect(refused.body.error.message).toContain("npm run db:restore");
    const notes = await callService(service.port, "GET", "/api/notes");
    expect(notes.body.items.map((n: { title: string }) => n.title)).toEqual(["after it", "in the backup"]);
    expect((await callService(service.port, "GET", "/health")).status).toBe(200);
  });

  it("on SIGTERM finishes the request in flight, then ends every connection of its pool", async () => {
    const database = await createTestDatabase();
    defer(() => database.drop());
    const name = `drain-${process.pid}-${Date.now()}`;
    const service = track(
      await startService({
        DATABASE_URL: database.url,
        DATABASE_APPLICATION_NAME: name,
        SHUTDOWN_TIMEOUT_MS: "20000",
      }),
    );
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        callService(service.port, "POST", "/api/notes", { title: `n${i}` }),
      ),
    );
    expect(await sessionsNamed(name)).toBeGreaterThan(0);
    const post = inFlightPost(service.port);
    await post.accepted;
    service.process.kill("SIGTERM");
    await service.waitForLog((l) => l.msg === "shutting down: draining requests");
    post.finish();
    expect((await post.response).status).toBe(201);
    expect(await service.exited).toEqual({ code: 0, signal: null });
    expect(service.logs.some((l) => l.msg === "database closed; bye")).toBe(true);
    // The server notices a closed connection at once; give its bookkeeping a moment.
    let left = await sessionsNamed(name);
    for (let i = 0; i < 50 && left > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      left = await sessionsNamed(name);
    }
    expect(left).toBe(0);
  });

  const startupFailure = async (env: Record<string, string>) => {
    const child = track(runNode("src/main.ts", [], { PORT: "0", ...env }));
    expect((await child.exited).code).toBe(1);
    expect(child.logs.some((l) => l.msg === "listening")).toBe(false);
    const stderr = child.stderr();
    expect(stderr.split("\n")).toHaveLength(2); // one line and its newline
    return stderr;
  };

  it("exits 1 with one line, never the password, for a bad URL, wrong credentials, a missing database or an unreachable server", async () => {
    const admin = parseDatabaseUrl(TEST_DATABASE_URL!) as Exclude<
      ReturnType<typeof parseDatabaseUrl>,
      string
    >;
    const secret = "s3cr3t-Pa55";

    const badUrl = await startupFailure({ DATABASE_URL: `mysql://app:${secret}@localhost/app` });
    expect(badUrl).toMatch(/^startup failed: invalid DATABASE_URL \(value hidden\): expected postgres:\/\//);
    expect(badUrl).not.toContain(secret);

    const user = encodeURIComponent(admin.user || "postgres");
    const wrongPassword = await startupFailure({
      DATABASE_URL: `postgres://${user}:${secret}@${admin.authority}/${admin.database}${admin.params.size ? `?${admin.params}` : ""}`,
    });
    // A server that trusts local connections accepts any password: then there is nothing to refuse.
    if (!/^startup failed: .*refused user/.test(wrongPassword)) {
      expect(wrongPassword).toMatch(/^startup failed: /);
    } else {
      expect(wrongPassword).toMatch(/check the user and password in DATABASE_URL\n$/);
    }
    expect(wrongPassword).not.toContain(secret);

    const missing = await startupFailure({
      DATABASE_URL: TEST_DATABASE_URL!.replace(/\/[^/?]+(\?|$)/, "/no_such_database_here$1"),
    });
    expect(missing).toMatch(
      /^startup failed: database "no_such_database_here" does not exist on the PostgreSQL server at .*\(3D000\): create it/,
    );
    if (admin.password) expect(missing).not.toContain(admin.password);

    const unreachable = await startupFailure({
      DATABASE_URL: `postgres://app:${secret}@127.0.0.1:1/app`,
      DATABASE_CONNECT_TIMEOUT_MS: "2000",
    });
    expect(unreachable).toBe(
      "startup failed: cannot reach PostgreSQL at 127.0.0.1:1 (ECONNREFUSED): is the server running, and are DATABASE_URL's host and port right?\n",
    );
  });

  it("loads pg only when DATABASE_URL selects PostgreSQL", async () => {
    const dir = tempDir();
    const script = path.join(dir, "loaded.ts");
    const root = path.resolve(import.meta.dirname, "..");
    fs.writeFileSync(
      script,
      `import { createRequire } from "node:module";
const { loadConfig } = await import(${JSON.stringify(path.join(root, "src/config.ts"))});
const { loadEngine } = await import(${JSON.stringify(path.join(root, "src/db/storage.ts"))});
const { runMigrations } = await import(${JSON.stringify(path.join(root, "src/db/migrator.ts"))});
const { createApp } = await import(${JSON.stringify(path.join(root, "src/app.ts"))});
const { createLogger } = await import(${JSON.stringify(path.join(root, "src/logger.ts"))});
const config = loadConfig();
const logger = createLogger({ logLevel: "silent" });
const storage = await (await loadEngine(config)).open();
await runMigrations({ storage, migrationsDir: config.migrationsDir, backupDir: config.backupDir, logger });
createApp({ config, storage, logger });
const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes("/node_modules/pg"));
await storage.close();
console.log(JSON.stringify({ pg: loaded.length }));
`,
    );
    const sqliteRun = await run(script, [], { DATABASE_PATH: path.join(dir, "app.db"), LOG_LEVEL: "silent" });
    expect(sqliteRun.code, sqliteRun.stderr).toBe(0);
    expect(sqliteRun.stdout[0]).toEqual({ pg: 0 });
    // The control: the same script on PostgreSQL does load it, so the check can see it.
    const database = await createTestDatabase();
    defer(() => database.drop());
    const pgRun = await run(script, [], { DATABASE_URL: database.url, LOG_LEVEL: "silent" });
    expect(pgRun.code, pgRun.stderr).toBe(0);
    expect((pgRun.stdout[0] as { pg: number }).pg).toBeGreaterThan(0);
  });
});

describePostgres("backups of PostgreSQL", () => {
  it("holds every write acknowledged before pg_dump started, while the service goes on writing", async () => {
    const database = await createTestDatabase();
    defer(() => database.drop());
    const backupDir = tempDir();
    const env = { DATABASE_URL: database.url, BACKUP_DIR: backupDir };
    const service = track(await startService(env));
    const acked: number[] = [];
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const res = await callService(service.port, "POST", "/api/notes", { title: "w" });
        expect(res.status).toBe(201);
        acked.push(res.body.id);
      }
    })();
    while (acked.length < 100) await new Promise((resolve) => setTimeout(resolve, 20));
    const before = Math.max(...acked);
    const backup = await run("scripts/db.ts", ["backup", "--json"], env);
    const during = Math.max(...acked);
    writing = false;
    await writer;
    expect(backup.code, backup.stderr).toBe(0);
    expect(during).toBeGreaterThan(before); // the writes went on during the dump

    const t = await app();
    const [file] = listBackups(backupDir);
    const scratch = await t.storage.engine.openScratch(file!, tempDir());
    defer(() => scratch.dispose());
    const ids = (await scratch.storage.kysely.selectFrom("notes").select("id").orderBy("id").execute()).map(
      (r) => r.id,
    );
    expect(ids.filter((id) => id <= before)).toEqual(Array.from({ length: before }, (_, i) => i + 1));
  });

  it("leaves nothing db:list or restore would take when killed in the middle of a dump", async () => {
    const t = await app();
    // Big enough that the dump takes a while: the kill lands during it.
    await sql`CREATE TABLE filler AS SELECT g AS id, md5(g::text) || repeat('x', 2000) AS b FROM generate_series(1, 60000) g`.execute(
      t.storage.kysely,
    );
    const backupDir = tempDir();
    const env = { DATABASE_URL: t.config.databaseUrl!, BACKUP_DIR: backupDir };
    const child = track(runNode("scripts/db.ts", ["backup"], env));
    const tmp = await new Promise<string>((resolve) => {
      const watcher = fs.watch(backupDir, (_event, name) => {
        if (name?.endsWith(".tmp")) {
          watcher.close();
          resolve(name);
        }
      });
      defer(() => watcher.close());
    });
    child.process.kill("SIGKILL");
    expect(await child.exited).toEqual({ code: null, signal: "SIGKILL" });
    expect(fs.readdirSync(backupDir)).toContain(tmp);
    expect(listBackups(backupDir)).toEqual([]);
    const restore = await run("scripts/db.ts", ["restore", "--latest"], env);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toContain("no backup of");
  });

  it("says in one line how to get a pg_dump when none fits the server", async () => {
    const error = await findTools(99, "99.1").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackupError);
    expect((error as Error).message).toMatch(
      /^pg_dump \S+ \(.*\) is older than the server, PostgreSQL 99\.1, and refuses to dump it: install postgresql-client-99 .*MIGRATE_BACKUP=off$/,
    );
    expect((error as Error).message).not.toContain("\n");
  });
});
