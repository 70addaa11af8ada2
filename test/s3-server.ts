// A real S3-compatible server for the tests: s3rver (an S3 REST server over HTTP, storing objects
// as files in a folder) in a child process of its own on 127.0.0.1 and a random port, so that
// "the server is down" is a killed process and its CPU is not the test's.
// Its limits, known and accepted: it does not check SigV4 signatures (any secret works; only an
// unknown access key id is refused, 403 InvalidAccessKeyId), nor x-amz-checksum-* or Content-MD5
// (and with the SDK's default checksums it would store the aws-chunked framing as the object).
// It lacks AbortMultipartUpload and ListMultipartUploads, and takes parts for an upload that no
// longer exists; the handlers below add the first two over its own files and answer the third
// NoSuchUpload as S3 does, so that the tests can see an aborted upload leave nothing behind.
// The server also reports each request as it arrives (a JSON line on stdout) and, on request,
// holds one part number's uploads without answering: a hung server, awaited rather than timed.
// Run directly (node test/s3-server.ts DIR BUCKET [PORT]) it serves until killed.
import { type ChildProcess, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { S3Client } from "@aws-sdk/client-s3";
import type { OffsiteConfig } from "../src/config.ts";

/** s3rver's one account. */
export const S3RVER_KEY = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export interface S3Server {
  endpoint: string;
  port: number;
  bucket: string;
  /** The folder s3rver keeps the bucket in: `<dir>/<bucket>/<key>._S3rver_object`. */
  dir: string;
  process: ChildProcess;
  /** Requests received so far, in order of arrival. */
  requests: S3Request[];
  /** Resolves with the first request (received or to come) that matches. */
  waitForRequest(match: (request: S3Request) => boolean): Promise<S3Request>;
  /** From now on, UploadPart requests for part `part` are held unanswered. */
  stallPart(part: number): Promise<void>;
  /** The variables that point the service or a script at this server. */
  env(prefix?: string, extra?: Record<string, string>): Record<string, string>;
  /** The Config part those variables give (for tests that call src/ directly). */
  config(overrides?: Partial<OffsiteConfig>): OffsiteConfig;
  /** Kills the server (SIGKILL) and waits for it to exit: "the server is down". */
  kill(): Promise<void>;
}

export interface S3Request {
  method: string;
  path: string;
  query: Record<string, string>;
  /** The request's checksum headers (x-amz-checksum-*, x-amz-sdk-checksum-*, x-amz-trailer) and content-encoding. */
  checksumHeaders: Record<string, string>;
}

/** Starts s3rver on 127.0.0.1 (a random port unless given) with `bucket` created, its files in `dir`. */
export async function startS3Server(
  dir: string,
  { bucket = "backups", port: wanted = 0 } = {},
): Promise<S3Server> {
  // The server keeps the real clock under faketime, as a remote one would: s3rver dates uploads by
  // their files' mtimes, which the kernel writes on the real clock, and its Date header by the
  // process's, so a shifted s3rver would contradict itself.
  const { LD_PRELOAD: _preload, FAKETIME: _faketime, ...env } = process.env;
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), dir, bucket, String(wanted)], {
    stdio: ["ignore", "pipe", "inherit"],
    env,
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const requests: S3Request[] = [];
  const waiters = new Set<{ match: (r: S3Request) => boolean; resolve: (r: S3Request) => void }>();
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const message = JSON.parse(line) as { port?: number; request?: S3Request };
      if (message.port !== undefined) resolve(message.port);
      if (!message.request) return;
      requests.push(message.request);
      for (const waiter of waiters) {
        if (waiter.match(message.request)) {
          waiters.delete(waiter);
          waiter.resolve(message.request);
        }
      }
    });
    child.once("exit", (code) => reject(new Error(`s3rver exited with code ${code} before listening`)));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    bucket,
    dir,
    process: child,
    requests,
    waitForRequest(match) {
      const seen = requests.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.add({ match, resolve }));
    },
    async stallPart(part) {
      const res = await fetch(`${endpoint}/_control/stall?part=${part}`, { method: "POST" });
      if (res.status !== 204) throw new Error(`s3rver: stall answered ${res.status}`);
    },
    env: (prefix = "app", extra = {}) => ({
      BACKUP_S3_URL: `s3://${bucket}/${prefix}`,
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: S3RVER_KEY.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3RVER_KEY.secretAccessKey,
      AWS_REGION: "us-east-1",
      BACKUP_S3_FORCE_PATH_STYLE: "true",
      ...extra,
    }),
    config: (overrides = {}) => s3rverConfig(endpoint, { bucket, ...overrides }),
    async kill() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** A client of `server` with the SDK's defaults (checksums included), for looking at the bucket. */
export function sdkClient(server: Pick<S3Server, "endpoint">): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: S3RVER_KEY,
  });
}

/** Off-site settings for s3rver at `endpoint`, prefix "app" (what `env()` gives through loadConfig). */
export function s3rverConfig(endpoint: string, overrides: Partial<OffsiteConfig> = {}): OffsiteConfig {
  const bucket = overrides.bucket ?? "backups";
  return {
    url: `s3://${bucket}/app`,
    bucket,
    prefix: "app",
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: S3RVER_KEY,
    recipients: [],
    identityFile: null,
    keep: 10,
    prune: true,
    ...overrides,
  };
}

/** The multipart uploads s3rver holds (started, neither completed nor aborted). */
export function pendingUploads(server: Pick<S3Server, "dir" | "bucket">): string[] {
  const uploads = path.join(server.dir, server.bucket, "._S3rver_uploads");
  return fs.existsSync(uploads) ? fs.readdirSync(uploads) : [];
}

// --- the server process -------------------------------------------------------------------------

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | undefined>;
  headers: Record<string, string>;
  status: number;
  type: string;
  body: unknown;
}

async function serve(dir: string, bucket: string, port: number): Promise<void> {
  const S3rver = createRequire(import.meta.url)("s3rver");
  const server = new S3rver({
    address: "127.0.0.1",
    port,
    silent: true,
    directory: dir,
    configureBuckets: [{ name: bucket }],
  });
  const uploadsDir = (name: string) => path.join(dir, name, "._S3rver_uploads");
  // s3rver encrypts ListObjectsV2 continuation tokens with DES, which Node 24's OpenSSL 3 no longer
  // has (every second page answered 500): its tokens go in clear instead.
  const clear = () => ({
    update: (data: string | Buffer) => Buffer.from(data),
    final: () => Buffer.alloc(0),
  });
  for (const name of ["createCipheriv", "createDecipheriv"] as const) {
    const real = crypto[name] as (...args: unknown[]) => unknown;
    (crypto as Record<string, unknown>)[name] = (algorithm: string, ...rest: unknown[]) =>
      algorithm === "des" ? clear() : real(algorithm, ...rest);
  }
  let stalledPart: string | undefined;
  // Ahead of s3rver's own router: Koa composes its middleware list when the server starts.
  server.middleware.unshift(async (ctx: KoaContext, next: () => Promise<void>) => {
    const [, name, ...key] = ctx.path.split("/").filter((part, i) => i < 2 || part !== "");
    const query = { ...ctx.query } as Record<string, string>;
    const checksumHeaders = Object.fromEntries(
      Object.entries(ctx.headers).filter(([name]) =>
        /^(x-amz-checksum-|x-amz-sdk-checksum-|x-amz-trailer$|content-encoding$)/.test(name),
      ),
    );
    const request = { method: ctx.method, path: ctx.path, query, checksumHeaders };
    process.stdout.write(`${JSON.stringify({ request })}\n`);
    if (name === "_control") {
      stalledPart = query.part;
      ctx.status = 204;
      return;
    }
    if (
      query.uploadId &&
      ctx.method !== "DELETE" &&
      !fs.existsSync(path.join(uploadsDir(name!), path.basename(query.uploadId)))
    ) {
      ctx.status = 404;
      ctx.type = "application/xml";
      ctx.body = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>`;
      return;
    }
    if (ctx.method === "PUT" && query.partNumber !== undefined && query.partNumber === stalledPart) {
      await new Promise(() => {}); // held until the client gives up or the server is killed
    }
    if (ctx.method === "DELETE" && key.length > 0 && ctx.query.uploadId) {
      // AbortMultipartUpload
      fs.rmSync(path.join(uploadsDir(name!), path.basename(ctx.query.uploadId)), {
        recursive: true,
        force: true,
      });
      ctx.status = 204;
      return;
    }
    if (ctx.method === "GET" && key.length === 0 && "uploads" in ctx.query) {
      // ListMultipartUploads (one page)
      const root = uploadsDir(name!);
      const ids = fs.existsSync(root) ? fs.readdirSync(root) : [];
      const uploads = ids
        .map((id) => ({
          id,
          key: fs.readFileSync(path.join(root, id, "key"), "utf8"),
          initiated: fs.statSync(path.join(root, id)).mtime,
        }))
        .filter((u) => u.key.startsWith(ctx.query.prefix ?? ""));
      ctx.type = "application/xml";
      ctx.body = `<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult><Bucket>${name}</Bucket><IsTruncated>false</IsTruncated>${uploads
        .map(
          (u) =>
            `<Upload><Key>${u.key}</Key><UploadId>${u.id}</UploadId><Initiated>${u.initiated.toISOString()}</Initiated></Upload>`,
        )
        .join("")}</ListMultipartUploadsResult>`;
      return;
    }
    await next();
  });
  const address = await server.run();
  process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);
}

if (import.meta.main) await serve(process.argv[2]!, process.argv[3]!, Number(process.argv[4] ?? 0));
