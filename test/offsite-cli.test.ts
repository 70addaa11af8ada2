// The off-site commands as real processes against a real S3-compatible server (s3rver, see
// s3-server.ts): backup --upload, list --remote, restore --from-remote onto an empty data folder,
// the drill from the bucket, refusals, SIGTERM during an upload, and nothing S3 loaded when off.
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import path from "node:path";
import { generateX25519Identity, identityToRecipient } from "age-encryption";
import BetterSqlite3 from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import {
  callService,
  childEnv,
  cleanupAfterEach,
  ROOT,
  runNode,
  type ServiceChild,
  startService,
} from "./helpers.ts";
import { pendingUploads, type S3Server, startS3Server } from "./s3-server.ts";

const { tempDir, defer, track, run } = cleanupAfterEach();

async function server(): Promise<S3Server> {
  const started = await startS3Server(tempDir("s3rver-"));
  defer(() => started.kill());
  return started;
}

/** A data folder, a backup folder, an age key pair (identity in a file) and the env for them. */
async function setup(s3: S3Server, { encrypt = true } = {}) {
  const dir = tempDir();
  const identity = await generateX25519Identity();
  const recipient = await identityToRecipient(identity);
  const identityFile = path.join(dir, "keys", "backup-identity.txt");
  fs.mkdirSync(path.dirname(identityFile));
  fs.writeFileSync(identityFile, `# created: by the test\n# public key: ${recipient}\n${identity}\n`);
  const dataDir = path.join(dir, "data");
  const backupDir = path.join(dir, "backups");
  const env = s3.env("app", {
    DATABASE_PATH: path.join(dataDir, "app.db"),
    BACKUP_DIR: backupDir,
    ...(encrypt && { BACKUP_AGE_RECIPIENT: recipient }),
  });
  return { dir, dataDir, backupDir, databasePath: env.DATABASE_PATH, identityFile, recipient, env };
}

const db = (args: string[], env: Record<string, string>) => run("scripts/db.ts", args, env);

async function serve(env: Record<string, string>): Promise<ServiceChild> {
  return track(await startService(env));
}

async function stop(service: ServiceChild) {
  service.process.kill("SIGTERM");
  expect((await service.exited).code).toBe(0);
}

async function titles(service: ServiceChild): Promise<string[]> {
  const res = await callService(service.port, "GET", "/api/notes?limit=100");
  return (res.body.items as { title: string }[]).map((n) => n.title).sort();
}

/** Every file under `dir` and its bytes' hash. */
function tree(dir: string): Record<string, string> {
  if (!fs.existsSync(dir)) return {};
  const entries = fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  return Object.fromEntries(
    entries.map((e) => {
      const full = path.join(e.parentPath, e.name);
      return [
        path.relative(dir, full),
        crypto.createHash("sha256").update(fs.readFileSync(full)).digest("hex"),
      ];
    }),
  );
}

describe("db:backup -- --upload and db:list -- --remote", () => {
  it("upload a backup, wait for it, and list it with its size and encryption; --json too", async () => {
    const s3 = await server();
    const { env, backupDir } = await setup(s3);
    expect((await run("scripts/migrate.ts", ["up"], env)).code).toBe(0);

    const backup = await db(["backup", "--upload"], env);

    expect(backup.code).toBe(0);
    const [local] = listBackups(backupDir);
    expect(backup.out).toEqual([local!.path]);
    expect(backup.stderr).toMatch(
      new RegExp(
        `uploaded to s3://backups/app: app/${local!.file}\\.zst\\.age, .* \\(compressed, encrypted with age\\) in \\d+ ms`,
      ),
    );
    expect(backup.stderr).not.toContain("\r"); // no progress display: stderr is not a terminal

    const list = await db(["list", "--remote"], env);
    expect(list.code).toBe(0);
    expect(list.out[0]).toMatch(/^created\s+kind\s+size\s+encrypted\s+uploaded\s+name$/);
    expect(list.out[1]).toMatch(
      new RegExp(
        `^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+manual\\s+[\\d.]+ (B|KiB)\\s+age\\s+.*${local!.file}$`,
      ),
    );
    expect(list.out[2]).toBe("1 backup(s) in s3://backups/app (BACKUP_S3_KEEP=10)");

    const json = await db(["list", "--remote", "--json"], env);
    expect(json.stdout[0]).toEqual([
      expect.objectContaining({
        key: `app/${local!.file}.zst.age`,
        name: local!.file,
        encrypted: true,
        kind: "manual",
      }),
    ]);
  });

  it("say plainly when off-site backups are not configured", async () => {
    const result = await db(["list", "--remote"], { DATABASE_PATH: path.join(tempDir(), "app.db") });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("db list: off-site backups are not configured: set BACKUP_S3_URL\n");
  });

  it("keep the local backup and exit 1 in one line when the upload fails", async () => {
    const s3 = await server();
    const { env, backupDir } = await setup(s3);
    expect((await run("scripts/migrate.ts", ["up"], env)).code).toBe(0);

    const result = await db(["backup", "--upload"], { ...env, AWS_ACCESS_KEY_ID: "NOBODY" });

    expect(result.code).toBe(1);
    const [local] = listBackups(backupDir);
    expect(result.stderr.trim().split("\n").at(-1)).toBe(
      `db backup: upload of ${local!.file} to s3://backups/app failed: InvalidAccessKeyId (HTTP 403): The AWS Access Key Id you provided does not exist in our records.; the local backup is kept: ${local!.path}`,
    );
  });
});

describe("db:restore -- --from-remote", () => {
  it("brings every note back onto an empty data folder: the machine is gone", async () => {
    const s3 = await server();
    const { env, dataDir, backupDir, identityFile, databasePath } = await setup(s3);
    const service = await serve(env);
    const written = ["first", "second", "third"];
    for (const title of written) {
      expect((await callService(service.port, "POST", "/api/notes", { title })).status).toBe(201);
    }
    expect((await db(["backup", "--upload"], env)).code).toBe(0); // while the service runs
    await stop(service);
    fs.rmSync(dataDir, { recursive: true });
    fs.rmSync(backupDir, { recursive: true });

    const restore = await db(["restore", "--from-remote", "latest", "--identity", identityFile], env);

    expect(restore.stderr).toBe("");
    expect(restore.code).toBe(0);
    const [fetched] = listBackups(backupDir);
    expect(restore.out).toEqual([
      expect.stringMatching(
        new RegExp(
          `^fetched   app/${fetched!.file}\\.zst\\.age \\(.*\\): decrypted \\(age\\), decompressed, SHA-256 matches, .* in \\d+ ms$`,
        ),
      ),
      `verified  ${fetched!.path} (integrity_check, foreign_key_check)`,
      `restored  ${databasePath} from ${fetched!.file}`,
    ]);
    const back = await serve(env);
    expect(await titles(back)).toEqual([...written].sort());
    await stop(back);
  });

  it("reads the identity from standard input with --identity -, for a one-off container", async () => {
    const s3 = await server();
    const { env, dataDir, backupDir, identityFile } = await setup(s3);
    expect((await run("scripts/migrate.ts", ["up"], env)).code).toBe(0);
    expect((await db(["backup", "--upload"], env)).code).toBe(0);
    fs.rmSync(dataDir, { recursive: true });
    fs.rmSync(backupDir, { recursive: true });

    const child = spawn(
      process.execPath,
      ["scripts/db.ts", "restore", "--from-remote", "latest", "--identity", "-"],
      {
        cwd: ROOT,
        env: childEnv(env),
        stdio: [fs.openSync(identityFile, "r"), "pipe", "pipe"],
      },
    );
    defer(() => child.kill("SIGKILL"));
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    const [code] = (await once(child, "exit")) as [number];
    expect(code).toBe(0);
    expect(out).toMatch(/^fetched .* decrypted \(age\)/m);
    expect(fs.existsSync(env.DATABASE_PATH!)).toBe(true);
  });

  it("the drill: downloads, migrates and counts in a scratch copy, touching nothing live", async () => {
    const s3 = await server();
    const { env, dataDir, backupDir, identityFile } = await setup(s3);
    const service = await serve(env);
    await callService(service.port, "POST", "/api/notes", { title: "drilled" });
    expect((await db(["backup", "--upload"], env)).code).toBe(0);
    await stop(service);
    const before = { data: tree(dataDir), backups: tree(backupDir) };

    const drill = await db(["restore", "--drill", "--from-remote", "latest", "--json"], {
      ...env,
      BACKUP_AGE_IDENTITY_FILE: identityFile,
    });

    expect(drill.code).toBe(0);
    const report = drill.stdout[0] as any;
    expect(report.download).toMatchObject({ downloaded: true, remote: { encrypted: true } });
    expect(report.drill.verdict.ok).toBe(true);
    expect(report.drill.tables.notes).toEqual({ restored: 1, live: 1 });
    expect({ data: tree(dataDir), backups: tree(backupDir) }).toEqual(before);
  });

  it("refuses a tampered object in one line, exit 1, and changes nothing", async () => {
    const s3 = await server();
    const { env, dataDir, backupDir, identityFile } = await setup(s3);
    expect((await run("scripts/migrate.ts", ["up"], env)).code).toBe(0);
    expect((await db(["backup", "--upload"], env)).code).toBe(0);
    const [local] = listBackups(backupDir);
    const stored = path.join(s3.dir, s3.bucket, "app", `${local!.file}.zst.age._S3rver_object`);
    const bytes = fs.readFileSync(stored);
    bytes[bytes.length - 20]! ^= 0x01;
    fs.writeFileSync(stored, bytes);
    fs.rmSync(local!.path);
    const before = { data: tree(dataDir), backups: tree(backupDir) };

    const restore = await db(["restore", "--from-remote", local!.file, "--identity", identityFile], env);

    expect(restore.code).toBe(1);
    expect(restore.stderr).toBe(
      `db restore: app/${local!.file}.zst.age failed age's authentication (invalid tag): truncated, damaged or altered; refused, nothing was changed\n`,
    );
    expect({ data: tree(dataDir), backups: tree(backupDir) }).toEqual(before);
  });

  it("refuses an unencrypted object when backups here are encrypted", async () => {
    const s3 = await server();
    const plain = await setup(s3, { encrypt: false });
    expect((await run("scripts/migrate.ts", ["up"], plain.env)).code).toBe(0);
    expect((await db(["backup", "--upload"], plain.env)).code).toBe(0);
    const [local] = listBackups(plain.backupDir);
    fs.rmSync(local!.path);

    const restore = await db(["restore", "--from-remote", "latest"], {
      ...plain.env,
      BACKUP_AGE_RECIPIENT: plain.recipient,
    });

    expect(restore.code).toBe(1);
    expect(restore.stderr).toMatch(
      /^db restore: app\/.*\.zst is not encrypted, but backups here are .*: refused, as anyone who can write to the bucket could have put it there\n$/,
    );
    expect(listBackups(plain.backupDir)).toEqual([]);
  });
});

describe("SIGTERM during db:backup -- --upload", () => {
  it("exits cleanly, leaving no object and no multipart upload in the bucket, and the local backup in place", async () => {
    const s3 = await server();
    const { env, databasePath, backupDir } = await setup(s3, { encrypt: false });
    expect((await run("scripts/migrate.ts", ["up"], env)).code).toBe(0);
    // About 24 MB that zstd cannot shrink much: three 8 MiB parts.
    const raw = new BetterSqlite3(databasePath);
    const insert = raw.prepare(
      "INSERT INTO notes (title, body, created_at, updated_at) VALUES ('n', ?, '', '')",
    );
    raw.transaction(() => {
      for (let i = 0; i < 24; i++) insert.run(crypto.randomBytes(1024 * 1024).toString("latin1"));
    })();
    raw.close();
    await s3.stallPart(2);

    const child = track(runNode("scripts/db.ts", ["backup", "--upload"], env));
    await s3.waitForRequest((r) => r.query.partNumber === "2");
    child.process.kill("SIGTERM");
    const { code } = await child.exited;

    const [local] = listBackups(backupDir);
    expect(code).toBe(1);
    expect(child.stderr()).toContain("SIGTERM: stopping\n");
    expect(child.stderr().trim().split("\n").at(-1)).toBe(
      `db backup: upload of ${local!.file} stopped before it completed; the local backup is kept: ${local!.path}`,
    );
    expect(pendingUploads(s3)).toEqual([]);
    expect(fs.readdirSync(path.join(s3.dir, s3.bucket)).filter((f) => !f.startsWith("._S3rver"))).toEqual([]);
    expect(local!.sizeBytes).toBeGreaterThan(24 * 1024 * 1024);
  });
});

describe("without BACKUP_S3_URL", () => {
  // Records every module URL the process loads (import and require alike), written when it exits.
  const HOOK = `
import fs from "node:fs";
import module from "node:module";
const loaded = new Set();
module.registerHooks({
  load(url, context, next) {
    loaded.add(url);
    return next(url, context);
  },
});
process.on("exit", () => fs.writeFileSync(process.env.LOADED_MODULES_FILE, JSON.stringify([...loaded])));
`;
  const OPTIONAL = /node_modules\/(@aws-sdk|@smithy|age-encryption|@noble)\//;

  function hooked(dir: string) {
    const hook = path.join(dir, "hook.mjs");
    fs.writeFileSync(hook, HOOK);
    const file = path.join(dir, "loaded.json");
    return {
      env: { NODE_OPTIONS: `--import=${hook}`, LOADED_MODULES_FILE: file },
      optional: () =>
        (JSON.parse(fs.readFileSync(file, "utf8")) as string[]).filter((url) => OPTIONAL.test(url)),
    };
  }

  it("loads none of the S3 or age packages: not the service, not db:list; db:list -- --remote with it does", async () => {
    const dir = tempDir();
    const base = { DATABASE_PATH: path.join(dir, "data", "app.db"), BACKUP_DIR: path.join(dir, "backups") };
    const probe = hooked(dir);

    const service = await serve({ ...base, ...probe.env });
    expect((await callService(service.port, "GET", "/health")).status).toBe(200);
    await stop(service);
    expect(probe.optional()).toEqual([]);

    expect((await db(["list"], { ...base, ...probe.env })).code).toBe(0);
    expect(probe.optional()).toEqual([]);

    // The same probe sees them when off-site backups are on: it can fail.
    const s3 = await server();
    expect((await db(["list", "--remote"], { ...s3.env(), ...base, ...probe.env })).code).toBe(0);
    expect(probe.optional().some((url) => url.includes("/@aws-sdk/client-s3/"))).toBe(true);
  });
});
