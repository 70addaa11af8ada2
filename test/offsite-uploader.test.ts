// The service's off-site uploader against a real S3-compatible server (s3rver, see s3-server.ts):
// background uploads, failures kept for /health, catch-up of what was missed, retries, stop.
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { HeadObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type BackupKind, backupFileName, listBackups } from "../src/backups/files.ts";
import { createOffsiteUploader, type OffsiteUploaderOptions } from "../src/backups/offsite/uploader.ts";
import type { OffsiteConfig } from "../src/config.ts";
import { cleanupAfterEach, type LogLine } from "./helpers.ts";
import { pendingUploads, type S3Server, s3rverConfig, sdkClient, startS3Server } from "./s3-server.ts";

const { tempDir, defer } = cleanupAfterEach();

async function server(port?: number): Promise<S3Server> {
  const started = await startS3Server(tempDir("s3rver-"), { port });
  defer(() => started.kill());
  return started;
}

/** A port nothing listens on (found free a moment ago): "the server is down". */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** A logger whose lines are kept, with a way to await one. */
function logCapture() {
  const lines: LogLine[] = [];
  const waiters = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  const logger = pino(
    { level: "info" },
    {
      write(text: string) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        for (const waiter of waiters) {
          if (waiter.match(line)) {
            waiters.delete(waiter);
            waiter.resolve(line);
          }
        }
      },
    },
  );
  const waitFor = (match: (l: LogLine) => boolean) =>
    new Promise<LogLine>((resolve) => {
      const seen = lines.find(match);
      if (seen) resolve(seen);
      else waiters.add({ match, resolve });
    });
  return { logger, lines, waitFor };
}

/** A backup of `app` in `dir`, `day` days into 2026: random bytes under a backup's name. */
function localBackup(dir: string, day: number, bytes = 10_000, kind: BackupKind = "scheduled") {
  fs.mkdirSync(dir, { recursive: true });
  const file = backupFileName({
    database: "app",
    kind,
    createdAt: new Date(Date.UTC(2026, 0, day)),
    extension: ".db",
  });
  fs.writeFileSync(path.join(dir, file), crypto.randomBytes(bytes));
  return { path: path.join(dir, file), file };
}

function uploader(config: OffsiteConfig, backupDir: string, options: Partial<OffsiteUploaderOptions> = {}) {
  const logs = logCapture();
  const created = createOffsiteUploader({
    config,
    logger: logs.logger,
    database: "app",
    listLocal: () => listBackups(backupDir),
    retryDelayMs: () => 3_600_000,
    ...options,
  });
  defer(() => created.stop());
  return { uploader: created, ...logs };
}

async function keysIn(s3: S3Server): Promise<string[]> {
  const client = sdkClient(s3);
  try {
    const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
    return (listed.Contents ?? []).map((o) => o.Key!).sort();
  } finally {
    client.destroy();
  }
}

describe("the off-site uploader", () => {
  it("uploads what it is given in the background, and its status says so", async () => {
    const s3 = await server();
    const backupDir = tempDir();
    const { uploader: up, lines } = uploader(s3.config(), backupDir);
    expect(lines[0]).toMatchObject({ level: 40, msg: expect.stringContaining("NOT encrypted") });
    const backup = localBackup(backupDir, 1);

    up.enqueue(backup);
    expect(up.status().pending).toBe(1); // returned at once
    await up.idle();

    expect(await keysIn(s3)).toEqual([`app/${backup.file}.zst`]);
    const status = up.status();
    expect(status).toMatchObject({
      target: "s3://backups/app",
      encrypted: false,
      pending: 0,
      uploads: 1,
      failures: 0,
      failing: false,
      lastFailure: null,
      lastSuccess: { file: backup.file, key: `app/${backup.file}.zst` },
    });
    expect(status.lastSuccess!.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(lines.find((l) => l.msg === "backup uploaded")).toMatchObject({ key: `app/${backup.file}.zst` });
  });

  it("when the server is down: logs and keeps the failure, keeps the local backups, and uploads all it missed once the server is back", async () => {
    const port = await freePort();
    const backupDir = tempDir();
    const config = s3rverConfig(`http://127.0.0.1:${port}`);
    const { uploader: up, lines } = uploader(config, backupDir);
    const first = localBackup(backupDir, 1);
    const second = localBackup(backupDir, 2);

    up.enqueue(first);
    await up.idle();
    up.enqueue(second);
    await up.idle();

    const status = up.status();
    expect(status).toMatchObject({ uploads: 0, failures: 2, failing: true, pending: 2 });
    expect(status.lastFailure!.message).toMatch(/^cannot list s3:\/\/backups\/app: ECONNREFUSED/);
    expect(status.lastFailure!.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(status.retryAt).toBeInstanceOf(Date);
    expect(lines.filter((l) => l.msg === "off-site upload failed")).toHaveLength(2);
    expect(fs.readdirSync(backupDir).sort()).toEqual([first.file, second.file]);

    const back = await server(port);
    up.catchUp(); // the next schedule's tick
    await up.idle();

    expect(await keysIn(back)).toEqual([`app/${first.file}.zst`, `app/${second.file}.zst`]);
    expect(up.status()).toMatchObject({ uploads: 2, failing: false, pending: 0, retryAt: null });
    expect(up.status().lastFailure).not.toBeNull(); // kept, with its age, for /health
  });

  it("retries on its own with backoff until the server answers", async () => {
    const port = await freePort();
    const backupDir = tempDir();
    const config = s3rverConfig(`http://127.0.0.1:${port}`);
    const delays: number[] = [];
    const { uploader: up, waitFor } = uploader(config, backupDir, {
      retryDelayMs: (attempt) => {
        delays.push(attempt);
        return 20 * attempt;
      },
    });
    const backup = localBackup(backupDir, 1);
    up.enqueue(backup);
    await waitFor((l) => l.msg === "off-site upload failed" && l.attempt === 2);

    const back = await server(port);
    await waitFor((l) => l.msg === "backup uploaded");

    expect(await keysIn(back)).toEqual([`app/${backup.file}.zst`]);
    expect(delays.slice(0, 2)).toEqual([1, 2]);
  });

  it("records an unknown access key as a failure and keeps the local backup", async () => {
    const s3 = await server();
    const backupDir = tempDir();
    const config = s3.config({ credentials: { accessKeyId: "NOBODY", secretAccessKey: "x" } });
    const { uploader: up, lines } = uploader(config, backupDir);
    const backup = localBackup(backupDir, 1);

    up.enqueue(backup);
    await up.idle();

    expect(up.status().lastFailure!.message).toMatch(/InvalidAccessKeyId \(HTTP 403\)/);
    expect(fs.existsSync(backup.path)).toBe(true);
    expect(await keysIn(s3)).toEqual([]);
    expect(JSON.stringify(lines)).not.toContain('"x"');
  });

  it("uploads only the newest BACKUP_S3_KEEP missing backups, and prunes the bucket to that many", async () => {
    const s3 = await server();
    const backupDir = tempDir();
    const backups = [1, 2, 3, 4].map((day) => localBackup(backupDir, day));
    const { uploader: up } = uploader(s3.config({ keep: 2 }), backupDir);

    up.catchUp();
    await up.idle();

    expect(await keysIn(s3)).toEqual([`app/${backups[2]!.file}.zst`, `app/${backups[3]!.file}.zst`]);
    expect(listBackups(backupDir)).toHaveLength(4); // local copies are not the uploader's to delete
  });

  it("leaves deletion to the bucket's lifecycle rules when pruning is off", async () => {
    const s3 = await server();
    const backupDir = tempDir();
    const { uploader: up } = uploader(s3.config({ keep: 1, prune: false }), backupDir);

    for (const day of [1, 2, 3]) {
      up.enqueue(localBackup(backupDir, day));
      await up.idle();
    }

    expect(await keysIn(s3)).toHaveLength(3);
  });

  it("stop() during an upload: no object, no multipart upload, the local backup kept, and no failure", async () => {
    const s3 = await server();
    const backupDir = tempDir();
    const { uploader: up } = uploader(s3.config(), backupDir, {
      partSize: 5 * 1024 * 1024,
      stopGraceMs: 100,
    });
    const backup = localBackup(backupDir, 1, 12 * 1024 * 1024);
    await s3.stallPart(2);

    up.enqueue(backup);
    await s3.waitForRequest((r) => r.query.partNumber === "2");
    await up.stop();

    expect(await keysIn(s3)).toEqual([]);
    expect(pendingUploads(s3)).toEqual([]);
    expect(fs.existsSync(backup.path)).toBe(true);
    expect(up.status()).toMatchObject({ failures: 0, failing: false });
  });

  it("encrypts when a recipient is set, and says so at creation", async () => {
    const s3 = await server();
    const backupDir = tempDir();
    const recipient = "age12253r7qjeagmsaxgt0adf4fp99tfxgvgk8q7mu3m2ft652dwr4ysdu7n8k";
    const { uploader: up, lines } = uploader(s3.config({ recipients: [recipient] }), backupDir);
    expect(lines[0]).toMatchObject({
      level: 30,
      msg: "off-site backups on, encrypted with age",
      recipients: 1,
    });
    const backup = localBackup(backupDir, 1);

    up.enqueue(backup);
    await up.idle();

    const client = sdkClient(s3);
    defer(() => client.destroy());
    const head = await client.send(
      new HeadObjectCommand({ Bucket: s3.bucket, Key: `app/${backup.file}.zst.age` }),
    );
    expect(head.Metadata?.encryption).toBe("age");
    expect(up.status().encrypted).toBe(true);
  });
});
