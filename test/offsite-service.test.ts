// The running service and a real S3-compatible server (s3rver, see s3-server.ts): scheduled and
// pre-migration backups uploaded in the background once it listens, encrypted; the bucket down or
// refusing, while the service keeps serving and keeps its local backups, then catches up.
import fs from "node:fs";
import path from "node:path";
import { generateX25519Identity, identityToRecipient } from "age-encryption";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import { callService, cleanupAfterEach, migrationsWith, type ServiceChild, startService } from "./helpers.ts";
import { type S3Server, startS3Server } from "./s3-server.ts";

const { tempDir, defer, track, run } = cleanupAfterEach();

async function server(dir = tempDir("s3rver-"), port?: number): Promise<S3Server> {
  const started = await startS3Server(dir, port === undefined ? {} : { port });
  defer(() => started.kill());
  return started;
}

/** A migrated database with notes, a pending migration, and the env that points at `s3`. */
async function setup(s3: S3Server) {
  const dir = tempDir();
  const identity = await generateX25519Identity();
  const recipient = await identityToRecipient(identity);
  const identityFile = path.join(dir, "backup-identity.txt");
  fs.writeFileSync(identityFile, `${identity}\n`);
  const migrationsDir = migrationsWith(dir, {});
  const base = {
    DATABASE_PATH: path.join(dir, "data", "app.db"),
    BACKUP_DIR: path.join(dir, "backups"),
    MIGRATIONS_DIR: migrationsDir,
  };
  expect((await run("scripts/migrate.ts", ["up"], base)).code).toBe(0);
  fs.writeFileSync(
    path.join(migrationsDir, "0002_add_tags.ts"),
    `export async function up(db) { await db.schema.alterTable("notes").addColumn("tags", "text").execute(); }`,
  );
  const env = s3.env("app", { ...base, BACKUP_AGE_RECIPIENT: recipient, BACKUP_INTERVAL: "1s" });
  return { env, backupDir: base.BACKUP_DIR, identityFile };
}

const uploaded = (service: ServiceChild, kind: string) =>
  service.waitForLog((l) => l.msg === "backup uploaded" && String(l.key).includes(`-${kind}`));

async function stop(service: ServiceChild) {
  service.process.kill("SIGTERM");
  expect((await service.exited).code).toBe(0);
}

describe("off-site backups in the running service", () => {
  it("uploads the pre-migration backup after it listens, then each scheduled backup, encrypted", async () => {
    const s3 = await server();
    const { env } = await setup(s3);
    const service = track(await startService(env));

    const preMigration = await uploaded(service, "pre-migration");
    const scheduled = await uploaded(service, "scheduled");
    const lines = service.logs.map((l) => l.msg);
    expect(lines.indexOf("listening")).toBeLessThan(lines.indexOf("backup uploaded"));
    for (const line of [preMigration, scheduled]) {
      expect(line).toMatchObject({
        encrypted: true,
        key: expect.stringMatching(/^app\/app-\d{8}T\d{9}Z-.+\.db\.zst\.age$/),
      });
    }
    expect((await callService(service.port, "POST", "/api/notes", { title: "still serving" })).status).toBe(
      201,
    );
    await stop(service);
  });

  it("keeps serving and keeps its local backups while the bucket is down, then uploads what it missed", async () => {
    const s3dir = tempDir("s3rver-");
    const first = await server(s3dir);
    const { port } = first;
    const { env, backupDir } = await setup(first);
    await first.kill();
    const service = track(await startService(env));

    const failure = await service.waitForLog((l) => l.msg === "off-site upload failed");
    expect(failure.level).toBe(50);
    await service.waitForLog((l) => l.msg === "scheduled backup taken");
    expect((await callService(service.port, "POST", "/api/notes", { title: "while down" })).status).toBe(201);
    const preMigration = listBackups(backupDir).find((b) => b.kind === "pre-migration");
    expect(preMigration).toBeDefined();

    // Back on the same port: the next scheduled backup's upload carries the missed ones with it.
    await server(s3dir, port);
    expect((await uploaded(service, "pre-migration")).key).toContain(preMigration!.file);
    // A failed upload never removed or renamed the local copy.
    expect(fs.existsSync(preMigration!.path)).toBe(true);
    await stop(service);
  });

  it("drills the newest off-site backup on BACKUP_DRILL_INTERVAL", async () => {
    const s3 = await server();
    const { env, identityFile } = await setup(s3);
    const service = track(
      await startService({ ...env, BACKUP_DRILL_INTERVAL: "2s", BACKUP_AGE_IDENTITY_FILE: identityFile }),
    );
    await uploaded(service, "pre-migration");
    const drill = await service.waitForLog(
      (l) => l.msg === "restore drill passed" || l.msg === "restore drill FAILED",
    );
    expect(drill).toMatchObject({ msg: "restore drill passed", drill: { ok: true, source: "bucket" } });
    expect((await callService(service.port, "GET", "/health")).status).toBe(200);
    await stop(service);
  });

  it("reports an unknown access key and keeps serving", async () => {
    const s3 = await server();
    const { env } = await setup(s3);
    const service = track(await startService({ ...env, AWS_ACCESS_KEY_ID: "NOT-A-KEY" }));
    const failure = await service.waitForLog((l) => l.msg === "off-site upload failed");
    expect(String(failure.err)).toMatch(/InvalidAccessKeyId|access key/i);
    expect((await callService(service.port, "GET", "/api/notes")).status).toBe(200);
    await stop(service);
  });
});
