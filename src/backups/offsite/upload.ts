// One local backup file to the bucket: hashed, then streamed through the codec into a multipart
// upload. The object exists only once the upload completes; a failed or stopped upload is aborted on
// the server (its parts deleted), so nothing half-written ever looks like a backup.
import fs from "node:fs/promises";
import { pipeline, type Readable } from "node:stream";
import { counting, noProgress, type Progress } from "../progress.ts";
import { COMPRESSION, ENCRYPTION, encode, sha256Of } from "./codec.ts";
import { describeS3Error, OffsiteError } from "./errors.ts";
import { objectKey, parseBackupName } from "./keys.ts";
import type { Bucket } from "./s3.ts";

/** A backup file in BACKUP_DIR: where it is and its name (which becomes the object's). */
export interface LocalBackupRef {
  path: string;
  file: string;
}

export interface UploadResult {
  key: string;
  file: string;
  /** Size of the backup file, and of the object it became (compressed, maybe encrypted). */
  plainBytes: number;
  objectBytes: number;
  sha256: string;
  encrypted: boolean;
  ms: number;
}

export interface UploadOptions {
  bucket: Bucket;
  backup: LocalBackupRef;
  /** age X25519 public keys; empty: compressed, not encrypted. */
  recipients: readonly string[];
  /** Stops the upload: the multipart upload is aborted on the server before the promise settles. */
  signal?: AbortSignal;
  /** A progress display for a transfer of `total` plain bytes (progress.ts). */
  progress?: (total: number) => Progress;
  /** Smallest part size; larger files get larger parts (S3 allows 10,000 parts). */
  partSize?: number;
  /** After a stop, how long parts in flight may take before the upload is aborted regardless. */
  stopGraceMs?: number;
}

/** The metadata every object carries (x-amz-meta-*): what a restore checks, and what a human reads. */
export interface ObjectMetadata {
  sha256: string;
  format: string;
  compression: string;
  encryption: string;
  "original-name": string;
  size: string;
}

const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
/** Parts uploaded at once: memory use is about this many times the part size. */
const QUEUE_SIZE = 2;

export async function uploadBackup({
  bucket,
  backup,
  recipients,
  signal,
  progress = () => noProgress,
  partSize = DEFAULT_PART_SIZE,
  stopGraceMs = 5_000,
}: UploadOptions): Promise<UploadResult> {
  signal?.throwIfAborted();
  const name = parseBackupName(backup.file);
  if (!name) throw new OffsiteError(`${backup.file} is not a backup name this project writes; not uploaded`);
  const started = performance.now();
  const encrypted = recipients.length > 0;
  const key = objectKey(bucket.prefix, backup.file, encrypted);
  // One open file for both passes: retention may delete the backup meanwhile, the inode stays.
  const handle = await fs.open(backup.path, "r");
  let body: Readable | undefined;
  let upload: InstanceType<Bucket["Upload"]> | undefined;
  let forceTimer: NodeJS.Timeout | undefined;
  let forced: ((error: Error) => void) | undefined;
  // A stop destroys the body rather than calling upload.abort(): abort() settles at once while the
  // parts in flight go on, and the server's upload is aborted later, or never if the process exits
  // first. A failed body makes done() wait for the parts in flight, abort the multipart upload, and
  // only then reject. A part stuck on a hung server would hold that up: after `stopGraceMs` the
  // multipart upload is aborted from here and the promise settles without waiting for it.
  const stop = () => {
    body?.destroy(new OffsiteError(`upload of ${backup.file} stopped`));
    forceTimer = setTimeout(() => {
      const uploadId = upload?.uploadId;
      const abortCall = uploadId
        ? bucket.client.send(
            new bucket.sdk.AbortMultipartUploadCommand({ Bucket: bucket.name, Key: key, UploadId: uploadId }),
            {
              abortSignal: AbortSignal.timeout(stopGraceMs),
            },
          )
        : Promise.resolve();
      void abortCall.then(
        () => forced?.(new OffsiteError(`upload of ${backup.file} stopped before it completed`)),
        (error: unknown) =>
          forced?.(
            new OffsiteError(
              `upload of ${backup.file} stopped; aborting its multipart upload failed: ${describeS3Error(error)}`,
            ),
          ),
      );
    }, stopGraceMs);
  };
  signal?.addEventListener("abort", stop, { once: true });
  try {
    const { size } = await handle.stat();
    // The hash goes into the object's metadata, which S3 takes before the first byte: a pass of its
    // own over the file. The ETag is no substitute (multipart and SSE give other values).
    const sha256 = await sha256Of(handle.createReadStream({ start: 0, autoClose: false }));
    signal?.throwIfAborted();
    const meter = progress(size);
    let objectBytes = 0;
    const plain = pipeline(handle.createReadStream({ start: 0, autoClose: false }), counting(meter), noop);
    body = pipeline(
      await encode(plain, recipients),
      counting(noProgress, (n) => {
        objectBytes += n;
      }),
      noop,
    );
    signal?.throwIfAborted();
    const metadata: ObjectMetadata = {
      sha256,
      format: name.format,
      compression: COMPRESSION,
      encryption: encrypted ? ENCRYPTION : "none",
      "original-name": backup.file,
      size: String(size),
    };
    upload = new bucket.Upload({
      client: bucket.client,
      params: {
        Bucket: bucket.name,
        Key: key,
        Body: body,
        ContentType: "application/octet-stream",
        Metadata: { ...metadata },
      },
      // The encoded size is unknown until the end, so parts are sized from the plain file: zstd and
      // age add at most a few bytes per 64 KiB to incompressible data.
      partSize: Math.max(partSize, Math.ceil((size * 1.01 + 1024 * 1024) / 9_000)),
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    const done = upload.done();
    done.catch(noop); // when a forced stop settles first
    try {
      await Promise.race([
        done,
        new Promise<never>((_, reject) => {
          forced = reject;
        }),
      ]);
    } catch (error) {
      if (error instanceof OffsiteError && signal?.aborted) throw error;
      if (signal?.aborted) throw new OffsiteError(`upload of ${backup.file} stopped before it completed`);
      throw new OffsiteError(`upload of ${backup.file} to ${bucket.url} failed: ${describeS3Error(error)}`, {
        cause: error,
      });
    }
    meter.finish();
    return {
      key,
      file: backup.file,
      plainBytes: size,
      objectBytes,
      sha256,
      encrypted,
      ms: Math.round(performance.now() - started),
    };
  } finally {
    clearTimeout(forceTimer);
    signal?.removeEventListener("abort", stop);
    body?.destroy();
    await handle.close();
  }
}

function noop() {}
