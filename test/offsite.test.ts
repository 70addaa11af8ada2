// Off-site backups against a real S3-compatible server (s3rver in a child process, see
// s3-server.ts): upload, layout and metadata, multipart, listing, retention, download and its
// refusals, and a stop in the middle of an upload.
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { generateX25519Identity, identityToRecipient } from "age-encryption";
import { describe, expect, it, vi } from "vitest";
import { type BackupKind, backupFileName } from "../src/backups/files.ts";
import { type DownloadOptions, downloadBackup } from "../src/backups/offsite/download.ts";
import { abortStaleUploads, listRemoteBackups, pruneRemoteBackups } from "../src/backups/offsite/remote.ts";
import { type Bucket, isAwsEndpoint, openBucket } from "../src/backups/offsite/s3.ts";
import { uploadBackup } from "../src/backups/offsite/upload.ts";
import { createProgress } from "../src/backups/progress.ts";
import type { OffsiteConfig } from "../src/config.ts";
import { runMigrations } from "../src/db/migrator.ts";
import { createSqliteEngine } from "../src/db/sqlite/engine.ts";
import { cleanupAfterEach, silentLogger, testConfig } from "./helpers.ts";
import { pendingUploads, type S3Server, sdkClient, startS3Server } from "./s3-server.ts";

const { tempDir, defer } = cleanupAfterEach();

async function server(): Promise<S3Server> {
  const started = await startS3Server(tempDir("s3rver-"));
  defer(() => started.kill());
  return started;
}

async function bucketOf(s3: S3Server, overrides: Partial<OffsiteConfig> = {}): Promise<Bucket> {
  const bucket = await openBucket(s3.config(overrides));
  defer(() => bucket.close());
  return bucket;
}

async function ageKeys() {
  const identity = await generateX25519Identity();
  return { identity, recipient: await identityToRecipient(identity) };
}

/** A migrated database holding `notes` notes, and a verified backup of it taken at `at`. */
async function sqliteBackup(
  dir: string,
  { notes = 3, at = new Date(Date.UTC(2026, 0, 1)), kind = "manual" as BackupKind } = {},
) {
  const config = testConfig(dir);
  const engine = createSqliteEngine(config);
  const storage = await engine.open();
  try {
    await runMigrations({
      storage,
      migrationsDir: config.migrationsDir,
      backupDir: config.backupDir,
      logger: silentLogger,
      backupFirst: false,
    });
    const stamp = at.toISOString();
    const rows = Array.from({ length: notes }, (_, i) => ({
      title: `note ${i}`,
      body: "x".repeat(100),
      created_at: stamp,
      updated_at: stamp,
    }));
    if (rows.length > 0) await storage.kysely.insertInto("notes").values(rows).execute();
  } finally {
    await storage.close();
  }
  return engine.backup({ backupDir: config.backupDir, kind, now: at });
}

/** A file under a backup's name: random bytes, which no compression shrinks. */
function randomBackup(
  dir: string,
  bytes: number,
  at = new Date(Date.UTC(2026, 0, 1)),
  kind: BackupKind = "manual",
) {
  fs.mkdirSync(dir, { recursive: true });
  const file = backupFileName({ database: "app", kind, createdAt: at, extension: ".db" });
  fs.writeFileSync(path.join(dir, file), crypto.randomBytes(bytes));
  return { path: path.join(dir, file), file };
}

const sha256 = (file: string) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");

/** Where s3rver keeps an object's bytes. */
const storedObject = (s3: S3Server, key: string) => path.join(s3.dir, s3.bucket, `${key}._S3rver_object`);

/** Every file in `dir` and its bytes' hash: what "nothing was changed" is checked against. */
function contents(dir: string): Record<string, string> {
  if (!fs.existsSync(dir)) return {};
  return Object.fromEntries(fs.readdirSync(dir).map((f) => [f, sha256(path.join(dir, f))]));
}

function download(bucket: Bucket, dir: string, options: Partial<DownloadOptions> = {}) {
  return downloadBackup({
    bucket,
    which: "latest",
    database: "app",
    dir,
    identities: null,
    requireEncrypted: false,
    ...options,
  });
}

describe("off-site upload", () => {
  it("uploads a verified backup compressed and encrypted, with its SHA-256, format and name in the metadata", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const { recipient } = await ageKeys();
    const backup = await sqliteBackup(tempDir());

    const result = await uploadBackup({ bucket, backup, recipients: [recipient] });

    expect(result).toMatchObject({
      key: `app/${backup.file}.zst.age`,
      plainBytes: backup.sizeBytes,
      sha256: sha256(backup.path),
      encrypted: true,
    });
    const head = await bucket.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: result.key }));
    expect(head.Metadata).toEqual({
      sha256: sha256(backup.path),
      format: "sqlite",
      compression: "zstd",
      encryption: "age",
      "original-name": backup.file,
      size: String(backup.sizeBytes),
    });
    expect(head.ContentLength).toBe(result.objectBytes);
    const stored = fs.readFileSync(storedObject(s3, result.key));
    expect(stored.subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
    expect(stored.includes(Buffer.from("SQLite format 3"))).toBe(false);
  });

  it("without a recipient, compresses only, and the name and metadata say so", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const backup = await sqliteBackup(tempDir(), { notes: 500 });

    const result = await uploadBackup({ bucket, backup, recipients: [] });

    expect(result.key).toBe(`app/${backup.file}.zst`);
    expect(result.objectBytes).toBeLessThan(backup.sizeBytes / 4);
    const head = await bucket.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: result.key }));
    expect(head.Metadata).toMatchObject({ encryption: "none", compression: "zstd" });
    // zstd's frame magic number
    expect(fs.readFileSync(storedObject(s3, result.key)).subarray(0, 4).toString("hex")).toBe("28b52ffd");
  });

  it("uploads a file above the part size in parts, and it downloads byte for byte", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const { identity, recipient } = await ageKeys();
    const backup = randomBackup(tempDir(), 12 * 1024 * 1024);

    const result = await uploadBackup({ bucket, backup, recipients: [recipient], partSize: 5 * 1024 * 1024 });

    const parts = s3.requests.filter((r) => r.method === "PUT" && r.query.partNumber !== undefined);
    expect(parts.map((r) => r.query.partNumber).sort()).toEqual(["1", "2", "3"]);
    expect(s3.requests.some((r) => r.method === "POST" && "uploadId" in r.query)).toBe(true); // completed
    expect(pendingUploads(s3)).toEqual([]);

    const dir = tempDir();
    const fetched = await download(bucket, dir, { identities: [identity], requireEncrypted: true });
    expect(fetched).toMatchObject({ file: backup.file, downloaded: true, sha256: result.sha256 });
    expect(fs.readFileSync(fetched.path).equals(fs.readFileSync(backup.path))).toBe(true);
    expect(fs.statSync(fetched.path).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir)).toEqual([backup.file]);
  });

  it("sends no checksums a non-AWS service may refuse, where the SDK's defaults would", async () => {
    expect(isAwsEndpoint(null)).toBe(true);
    expect(isAwsEndpoint("https://s3.eu-west-1.amazonaws.com")).toBe(true);
    expect(isAwsEndpoint("https://account.r2.cloudflarestorage.com")).toBe(false);
    const s3 = await server();
    const bucket = await bucketOf(s3);
    // A read first: on a skewed host clock (faketime) the SDK corrects its offset from the server's
    // refusal and retries, and only the writes after that are counted below.
    await listRemoteBackups(bucket);
    const dir = tempDir();
    await uploadBackup({ bucket, backup: randomBackup(dir, 100_000), recipients: [] });
    const big = randomBackup(dir, 6 * 1024 * 1024, new Date(Date.UTC(2026, 0, 2)));
    await uploadBackup({ bucket, backup: big, recipients: [], partSize: 5 * 1024 * 1024 });
    const writes = s3.requests.filter((r) => r.method !== "GET" && r.method !== "HEAD");
    expect(writes.map((r) => r.query["x-id"] ?? Object.keys(r.query)[0])).toEqual([
      "PutObject",
      "uploads",
      "UploadPart",
      "UploadPart",
      "uploadId",
    ]);
    expect(writes.map((r) => r.checksumHeaders)).toEqual(writes.map(() => ({})));

    // The SDK's defaults, for comparison: a CRC32 on every write; as a streamed body, an aws-chunked
    // body with a trailer that s3rver stores as the object's bytes.
    const defaults = sdkClient(s3);
    defer(() => defaults.destroy());
    await defaults.send(new ListObjectsV2Command({ Bucket: s3.bucket })); // its clock offset, as above
    const key = "app/streamed-with-defaults";
    await defaults.send(
      new PutObjectCommand({
        Bucket: s3.bucket,
        Key: key,
        Body: fs.createReadStream(big.path),
        ContentLength: fs.statSync(big.path).size,
      }),
    );
    expect(s3.requests.at(-1)!.checksumHeaders).toMatchObject({ "x-amz-trailer": "x-amz-checksum-crc32" });
    expect(fs.statSync(storedObject(s3, key)).size).toBeGreaterThan(fs.statSync(big.path).size);
  });

  it.skipIf(!hasCli("age") || !hasCli("zstd"))(
    "writes objects the standard age and zstd tools decode to the very backup file",
    async () => {
      const s3 = await server();
      const bucket = await bucketOf(s3);
      const dir = tempDir();
      const keygen = spawnSync("age-keygen", ["-o", path.join(dir, "identity.txt")], { encoding: "utf8" });
      expect(keygen.status).toBe(0);
      const recipient = spawnSync("age-keygen", ["-y", path.join(dir, "identity.txt")], {
        encoding: "utf8",
      }).stdout.trim();
      const backup = await sqliteBackup(dir, { notes: 200 });

      const result = await uploadBackup({ bucket, backup, recipients: [recipient] });

      const decrypted = spawnSync("age", [
        "-d",
        "-i",
        path.join(dir, "identity.txt"),
        storedObject(s3, result.key),
      ]);
      expect(decrypted.stderr.toString()).toBe("");
      const plain = spawnSync("zstd", ["-d", "-c"], { input: decrypted.stdout });
      expect(plain.status).toBe(0);
      expect(plain.stdout.equals(fs.readFileSync(backup.path))).toBe(true);
    },
  );
});

describe("off-site listing and retention", () => {
  /** Uploads backups of `app` at consecutive days (kinds in order), plus things that are not ours. */
  async function stocked(kinds: BackupKind[]) {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const dir = tempDir();
    const uploaded: string[] = [];
    for (const [i, kind] of kinds.entries()) {
      const backup = randomBackup(dir, 1000, new Date(Date.UTC(2026, 0, 1 + i)), kind);
      uploaded.push((await uploadBackup({ bucket, backup, recipients: [] })).key);
    }
    const foreign = [
      "app/notes.txt",
      "app/app.db.zst",
      "app/older/app-20250101T000000000Z-manual.db.zst",
      "elsewhere/app-20250101T000000000Z-manual.db.zst",
      `app/other-20250101T000000000Z-manual.db.zst`,
    ];
    for (const key of foreign) {
      await bucket.client.send(
        new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: "not a backup of ours" }),
      );
    }
    return { s3, bucket, uploaded, foreign };
  }

  it("lists only its own keys, newest first, page after page", async () => {
    const { s3, bucket, uploaded } = await stocked(["manual", "scheduled", "pre-migration"]);

    const all = await listRemoteBackups(bucket, { pageSize: 2 });
    const mine = await listRemoteBackups(bucket, { database: "app" });

    expect(all.map((b) => b.key)).toEqual([
      ...uploaded.reverse(),
      "app/other-20250101T000000000Z-manual.db.zst",
    ]);
    expect(mine.map((b) => b.kind)).toEqual(["pre-migration", "scheduled", "manual"]);
    expect(mine[0]).toMatchObject({ database: "app", format: "sqlite", encrypted: false });
    expect(mine[0]!.sizeBytes).toBeGreaterThan(1000);
    const pages = s3.requests.filter(
      (r) => r.method === "GET" && r.query["list-type"] === "2" && r.query["max-keys"] === "2",
    );
    expect(pages.length).toBeGreaterThan(1);
    expect(pages.slice(1).every((r) => r.query["continuation-token"])).toBe(true);
  });

  it("keeps the newest N and the newest pre-migration backup, and deletes nothing that is not its own", async () => {
    const { bucket, uploaded, foreign } = await stocked([
      "manual",
      "pre-migration",
      "scheduled",
      "scheduled",
      "manual",
    ]);

    const pruned = await pruneRemoteBackups(bucket, { database: "app", keep: 2 });

    expect(pruned.map((b) => b.key).sort()).toEqual([uploaded[0], uploaded[2]].sort());
    const left = await listRemoteBackups(bucket, { database: "app" });
    expect(left.map((b) => b.key)).toEqual([uploaded[4], uploaded[3], uploaded[1]]);
    for (const key of foreign) {
      await expect(
        bucket.client.send(new HeadObjectCommand({ Bucket: bucket.name, Key: key })),
      ).resolves.toBeDefined();
    }
  });

  it("never deletes the newest backup or a protected one, whatever keep says", async () => {
    const { bucket, uploaded } = await stocked(["manual", "manual", "manual"]);

    await pruneRemoteBackups(bucket, { database: "app", keep: 0, protect: [uploaded[0]!] });

    const left = await listRemoteBackups(bucket, { database: "app" });
    expect(left.map((b) => b.key)).toEqual([uploaded[2], uploaded[0]]);
  });

  it("aborts multipart uploads of its own left behind, and no one else's", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const ours = "app/app-20260101T000000000Z-manual.db.zst.age";
    for (const key of [ours, "app/someone-elses.bin"]) {
      await bucket.client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: key }));
    }
    expect(await abortStaleUploads(bucket, { olderThanMs: 60_000 })).toEqual([]); // too young
    // Ages are read on the server's clock (its Date header), so a host clock a year ahead aborts nothing.
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 365 * 24 * 3600 * 1000 });
    try {
      expect(await abortStaleUploads(bucket, { olderThanMs: 60_000 })).toEqual([]);
    } finally {
      vi.useRealTimers();
    }

    expect(await abortStaleUploads(bucket, { olderThanMs: 0, now: new Date(Date.now() + 1000) })).toEqual([
      ours,
    ]);

    const left = await bucket.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    expect(left.Uploads?.map((u) => u.Key)).toEqual(["app/someone-elses.bin"]);
  });
});

describe("off-site download", () => {
  /** An uploaded backup, and a BACKUP_DIR that already holds another backup: the "nothing changed" witness. */
  async function uploaded({ encrypt = true } = {}) {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const keys = await ageKeys();
    const backup = await sqliteBackup(tempDir(), { notes: 300 });
    const result = await uploadBackup({ bucket, backup, recipients: encrypt ? [keys.recipient] : [] });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, "app-20250101T000000000Z-manual.db"), "an older backup");
    return { s3, bucket, keys, backup, result, dir, before: contents(dir) };
  }

  it("fetches the latest backup into BACKUP_DIR as the plain file that was uploaded", async () => {
    const { bucket, keys, backup, dir, before } = await uploaded();

    const fetched = await download(bucket, dir, { identities: [keys.identity], requireEncrypted: true });

    expect(fetched.path).toBe(path.join(dir, backup.file));
    expect(contents(dir)).toEqual({ ...before, [backup.file]: sha256(backup.path) });
    // Asked again, the identical file already there is used as it is.
    const again = await download(bucket, dir, { identities: [keys.identity], requireEncrypted: true });
    expect(again.downloaded).toBe(false);
  });

  it.each([
    [
      "a tampered object",
      (file: string) => {
        const bytes = fs.readFileSync(file);
        bytes[bytes.length - 20]! ^= 0x01; // inside the last chunk
        fs.writeFileSync(file, bytes);
      },
      /failed age's authentication \(invalid tag\): truncated, damaged or altered; refused, nothing was changed$/,
    ],
    [
      "a truncated object",
      (file: string) => fs.truncateSync(file, fs.statSync(file).size - 100),
      /failed age's authentication .*refused, nothing was changed$/,
    ],
  ])("refuses %s with one line, and changes nothing", async (_what, damage, message) => {
    const { s3, bucket, keys, result, dir, before } = await uploaded();
    damage(storedObject(s3, result.key));

    const error = await download(bucket, dir, { identities: [keys.identity], requireEncrypted: true }).catch(
      (e: Error) => e,
    );

    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain("\n");
    expect(contents(dir)).toEqual(before); // no temporary file left either
  });

  it("refuses an identity that is not a recipient, before writing a byte", async () => {
    const { bucket, result, dir, before } = await uploaded();
    const stranger = await ageKeys();

    await expect(
      download(bucket, dir, {
        identities: [stranger.identity],
        requireEncrypted: true,
        identitySource: "/keys/other.txt",
      }),
    ).rejects.toThrow(
      `cannot decrypt ${result.key}: the identity in /keys/other.txt is not one of its recipients; refused, nothing was changed`,
    );
    expect(contents(dir)).toEqual(before);
  });

  it("refuses an unencrypted object where backups are encrypted, and an encrypted one without an identity", async () => {
    const plain = await uploaded({ encrypt: false });
    await expect(
      download(plain.bucket, plain.dir, { identities: [plain.keys.identity], requireEncrypted: true }),
    ).rejects.toThrow(/is not encrypted, but backups here are .*: refused/);
    expect(contents(plain.dir)).toEqual(plain.before);

    const sealed = await uploaded();
    await expect(download(sealed.bucket, sealed.dir)).rejects.toThrow(
      `${sealed.result.key} is encrypted: give its age identity with --identity FILE or BACKUP_AGE_IDENTITY_FILE`,
    );
    expect(contents(sealed.dir)).toEqual(sealed.before);
  });

  it("refuses a plain object that decodes cleanly to other bytes: only the SHA-256 catches that", async () => {
    const { s3, bucket, result, dir, before } = await uploaded({ encrypt: false });
    const zstd = await import("node:zlib");
    fs.writeFileSync(
      storedObject(s3, result.key),
      zstd.zstdCompressSync(Buffer.from("SQLite format 3\0 and other things")),
    );

    await expect(download(bucket, dir)).rejects.toThrow(
      /decoded to 33 bytes with SHA-256 .*, not the \d+ bytes and .* recorded at upload: it was altered or damaged; refused, nothing was changed/,
    );
    expect(contents(dir)).toEqual(before);
  });

  it("refuses an object without this project's metadata", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const key = "app/app-20260101T000000000Z-manual.db.zst";
    const zlib = await import("node:zlib");
    await bucket.client.send(
      new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: zlib.zstdCompressSync(Buffer.from("x")) }),
    );
    const dir = tempDir();

    await expect(download(bucket, dir)).rejects.toThrow(`${key} has no SHA-256 and size in its metadata`);
    expect(contents(dir)).toEqual({});
  });

  it("names what is there when there is no backup of this database, or none of that name", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const backup = randomBackup(tempDir(), 100);
    await uploadBackup({ bucket, backup, recipients: [] });

    await expect(download(bucket, tempDir(), { database: "notes" })).rejects.toThrow(
      "no backup of notes in s3://backups/app (there are backups of app)",
    );
    await expect(download(bucket, tempDir(), { which: "app-20990101T000000000Z-manual.db" })).rejects.toThrow(
      "no backup named app-20990101T000000000Z-manual.db in s3://backups/app",
    );
  });
});

describe("a stopped upload", () => {
  it("leaves no object and no multipart upload, even with a part stuck on the server", async () => {
    const s3 = await server();
    const bucket = await bucketOf(s3);
    const backup = randomBackup(tempDir(), 12 * 1024 * 1024);
    await s3.stallPart(2);
    const stop = new AbortController();

    const upload = uploadBackup({
      bucket,
      backup,
      recipients: [],
      partSize: 5 * 1024 * 1024,
      signal: stop.signal,
      stopGraceMs: 200,
    });
    await s3.waitForRequest((r) => r.query.partNumber === "2");
    stop.abort();

    await expect(upload).rejects.toThrow(`upload of ${backup.file} stopped before it completed`);
    await expect(
      bucket.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: `app/${backup.file}.zst` })),
    ).rejects.toMatchObject({ name: "NoSuchKey" });
    expect(s3.requests.some((r) => r.method === "DELETE" && r.query.uploadId)).toBe(true);
    expect(pendingUploads(s3)).toEqual([]);
    const listed = await bucket.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    expect(listed.Uploads ?? []).toEqual([]);
    expect(fs.existsSync(backup.path)).toBe(true);
  });
});

describe("progress of a transfer", () => {
  function terminal(isTTY: boolean) {
    const written: string[] = [];
    return { written, stream: { isTTY, write: (text: string) => written.push(text) > 0 } };
  }

  it("draws bytes done, rate and time left in place on a terminal, at most every 250 ms", () => {
    const { written, stream } = terminal(true);
    let now = 0;
    const progress = createProgress({
      label: "upload x.db",
      total: 100 * 1024 * 1024,
      stream,
      now: () => now,
    });
    now = 1000;
    progress.add(10 * 1024 * 1024);
    now = 1100;
    progress.add(10 * 1024 * 1024); // too soon: not drawn
    now = 2000;
    progress.add(20 * 1024 * 1024);
    progress.finish();
    expect(written).toEqual([
      "\rupload x.db  10.0 MiB / 100.0 MiB  10%  10.0 MiB/s  9s left\x1b[K",
      "\rupload x.db  40.0 MiB / 100.0 MiB  40%  20.0 MiB/s  3s left\x1b[K",
      "\rupload x.db  40.0 MiB / 100.0 MiB  40%  20.0 MiB/s  in 2s\x1b[K\n",
    ]);
  });

  it("writes nothing when the stream is not a terminal", () => {
    const { written, stream } = terminal(false);
    const progress = createProgress({ label: "upload x.db", total: 100, stream });
    progress.add(50);
    progress.finish();
    expect(written).toEqual([]);
  });
});

function hasCli(name: string): boolean {
  const found = spawnSync(name, ["--version"]).error === undefined;
  if (!found)
    console.warn(`skipped: the ${name} CLI is not installed (apt-get install age zstd; .ci/run does)`);
  return found;
}
