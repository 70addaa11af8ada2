// A remote backup back to a plain local backup file: downloaded into a temporary file in the
// destination folder, decrypted, decompressed and checked against the SHA-256 recorded at upload,
// and only then given its name. Anything wrong is refused in one line, the temporary file removed,
// and nothing else changed; the result is a file restore and drill take like any local backup.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { GetObjectCommandOutput } from "@aws-sdk/client-s3";
import { syncFile } from "../files.ts";
import { counting, noProgress, type Progress } from "../progress.ts";
import { COMPRESSION, decode, ENCRYPTION, sha256Of } from "./codec.ts";
import { describeS3Error, OffsiteError } from "./errors.ts";
import { listRemoteBackups, type RemoteBackup } from "./remote.ts";
import type { Bucket } from "./s3.ts";

export interface DownloadOptions {
  bucket: Bucket;
  /** "latest" (the newest backup of `database`), or a backup's name, with or without its suffix. */
  which: string;
  /** The database whose backups "latest" picks from (the DATABASE_PATH file's name, no extension). */
  database: string;
  /** Where the backup file lands: BACKUP_DIR, or a scratch folder for a drill. */
  dir: string;
  /** age identities (AGE-SECRET-KEY-1...); null: none at hand, so encrypted objects are refused. */
  identities: readonly string[] | null;
  /** Where the identities came from, for messages: "--identity FILE", "BACKUP_AGE_IDENTITY_FILE"... */
  identitySource?: string;
  /**
   * Refuse an unencrypted object: set when backups are encrypted here (a recipient or an identity
   * is configured), so that whoever can write to the bucket cannot plant a plain one to be restored.
   */
  requireEncrypted: boolean;
  signal?: AbortSignal;
  progress?: (total: number) => Progress;
}

export interface DownloadResult {
  remote: RemoteBackup;
  /** The plain backup file in `dir`. */
  path: string;
  file: string;
  sha256: string;
  plainBytes: number;
  /** false: an identical file of that name was there already, and nothing was downloaded. */
  downloaded: boolean;
  ms: number;
}

export async function downloadBackup(options: DownloadOptions): Promise<DownloadResult> {
  const { bucket, dir, identities, signal } = options;
  const started = performance.now();
  const remote = await findRemoteBackup(options);
  if (remote.encrypted && !identities) {
    throw new OffsiteError(
      `${remote.key} is encrypted: give its age identity with --identity FILE or BACKUP_AGE_IDENTITY_FILE`,
    );
  }
  if (!remote.encrypted && options.requireEncrypted) {
    throw new OffsiteError(
      `${remote.key} is not encrypted, but backups here are (a recipient or identity is configured): refused, as anyone who can write to the bucket could have put it there`,
    );
  }
  let response: GetObjectCommandOutput;
  try {
    response = await bucket.client.send(
      new bucket.sdk.GetObjectCommand({ Bucket: bucket.name, Key: remote.key }),
      { abortSignal: signal },
    );
  } catch (error) {
    throw new OffsiteError(`cannot download ${remote.key} from ${bucket.url}: ${describeS3Error(error)}`, {
      cause: error,
    });
  }
  const body = response.Body as Readable;
  try {
    const expected = checkMetadata(remote, response.Metadata ?? {});
    const target = path.join(dir, remote.name);
    if (fs.existsSync(target)) {
      if ((await sha256Of(fs.createReadStream(target))) !== expected.sha256) {
        throw new OffsiteError(
          `${target} exists and differs from ${remote.key}: move it away first; nothing was changed`,
        );
      }
      return {
        remote,
        path: target,
        file: remote.name,
        ...expected,
        downloaded: false,
        ms: elapsed(started),
      };
    }
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    // A leading dot and a .tmp suffix, like the local backups' temporaries: no listing, restore or
    // retention takes it for a backup, and local retention removes one a crash left behind.
    const tmp = path.join(dir, `.${remote.name}.${process.pid}.download.tmp`);
    try {
      const sha256 = await decodeInto(tmp, body, remote, options);
      const size = fs.statSync(tmp).size;
      if (size !== expected.plainBytes || sha256 !== expected.sha256) {
        throw new OffsiteError(
          `${remote.key} decoded to ${size} bytes with SHA-256 ${sha256.slice(0, 12)}…, not the ${expected.plainBytes} bytes and ${expected.sha256.slice(0, 12)}… recorded at upload: it was altered or damaged; refused, nothing was changed`,
        );
      }
      syncFile(tmp);
      // link, not rename: it fails rather than replace a file of that name that appeared meanwhile.
      fs.linkSync(tmp, target);
      syncFile(dir);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    return { remote, path: target, file: remote.name, ...expected, downloaded: true, ms: elapsed(started) };
  } finally {
    body.destroy();
  }
}

/** The backup `which` names in the bucket, or a one-line refusal saying what is there instead. */
export async function findRemoteBackup({
  bucket,
  which,
  database,
  signal,
}: Pick<DownloadOptions, "bucket" | "which" | "database" | "signal">): Promise<RemoteBackup> {
  const all = await listRemoteBackups(bucket, { signal });
  if (which === "latest") {
    const newest = all.find((b) => b.database === database);
    if (newest) return newest;
    const others = [...new Set(all.map((b) => b.database))];
    throw new OffsiteError(
      `no backup of ${database} in ${bucket.url}${others.length ? ` (there are backups of ${others.join(", ")})` : ""}`,
    );
  }
  const found = all.find((b) => b.name === which || b.key.endsWith(`/${which}`) || b.key === which);
  if (!found)
    throw new OffsiteError(`no backup named ${which} in ${bucket.url} (db:list -- --remote lists them)`);
  return found;
}

/** The metadata written at upload, checked against what the key says; refuses anything else. */
function checkMetadata(remote: RemoteBackup, metadata: Record<string, string>) {
  const sha256 = metadata.sha256 ?? "";
  const plainBytes = Number(metadata.size);
  if (!/^[0-9a-f]{64}$/.test(sha256) || !Number.isSafeInteger(plainBytes)) {
    throw new OffsiteError(
      `${remote.key} has no SHA-256 and size in its metadata, so it cannot be checked: not an upload of this project's; refused`,
    );
  }
  const says = {
    encryption: remote.encrypted ? ENCRYPTION : "none",
    compression: COMPRESSION,
    format: remote.format,
  };
  for (const [name, value] of Object.entries(says)) {
    if (metadata[name] !== value) {
      throw new OffsiteError(
        `${remote.key}: its metadata says ${name}=${metadata[name]}, its name says ${value}; refused`,
      );
    }
  }
  return { sha256, plainBytes };
}

async function decodeInto(
  tmp: string,
  body: Readable,
  remote: RemoteBackup,
  { identities, identitySource = "the identity file", progress = () => noProgress, signal }: DownloadOptions,
): Promise<string> {
  const meter = progress(remote.sizeBytes);
  let received = 0;
  const hash = crypto.createHash("sha256");
  // Created now, not when a write stream gets round to opening it: a failure in the first
  // milliseconds must not let the file appear after the caller has removed it.
  const out = fs.createWriteStream(tmp, { fd: fs.openSync(tmp, "wx", 0o600) });
  try {
    const counted = body.pipe(
      counting(meter, (n) => {
        received += n;
      }),
    );
    body.once("error", (error) => counted.destroy(error));
    const plain = await decode(counted, remote.encrypted ? identities : null);
    await pipeline(
      plain,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          hash.update(chunk);
          yield chunk;
        }
      },
      out,
      { signal },
    );
  } catch (error) {
    out.destroy();
    throw new OffsiteError(explainDecodeFailure(error, remote, received, identitySource), { cause: error });
  }
  meter.finish();
  return hash.digest("hex");
}

// Which stage failed, from the error's shape: zlib's errors carry a code (Z_BUF_ERROR: the input
// ended early; ZSTD_error_*: bad data), network errors a system code, age's errors only a message.
function explainDecodeFailure(
  error: unknown,
  remote: RemoteBackup,
  received: number,
  identitySource: string,
) {
  const e = error as { code?: string; message?: string; name?: string };
  const refused = "refused, nothing was changed";
  if (e instanceof OffsiteError) return e.message;
  if (e.name === "AbortError") return `download of ${remote.key} stopped; nothing was changed`;
  if (received < remote.sizeBytes) {
    return `download of ${remote.key} was cut off after ${received} of ${remote.sizeBytes} bytes (${describeS3Error(error)}); nothing was changed`;
  }
  if (e.message === "no identity matched any of the file's recipients") {
    return `cannot decrypt ${remote.key}: the identity in ${identitySource} is not one of its recipients; ${refused}`;
  }
  if (e.code === "Z_BUF_ERROR") return `${remote.key} ends early (truncated): ${e.message}; ${refused}`;
  if (e.code?.startsWith("ZSTD_"))
    return `${remote.key} does not decompress (${e.message}): damaged; ${refused}`;
  if (remote.encrypted && !e.code) {
    return `${remote.key} failed age's authentication (${e.message}): truncated, damaged or altered; ${refused}`;
  }
  return `download of ${remote.key} failed: ${describeS3Error(error)}; nothing was changed`;
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started);
}
