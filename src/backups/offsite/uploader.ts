// The service's off-site uploader: backups handed to it go to the bucket in the background, one at a
// time, never delaying startup or a request. A failure is logged, counted and kept for /health, and
// retried with backoff together with every recent local backup the bucket lacks; the local copies
// are never touched. The SDK loads on the first upload, not when the uploader is created.
import fs from "node:fs";
import type { OffsiteConfig } from "../../config.ts";
import type { Logger } from "../../logger.ts";
import { OffsiteError } from "./errors.ts";
import { abortStaleUploads, listRemoteBackups, pruneRemoteBackups } from "./remote.ts";
import { type Bucket, openBucket } from "./s3.ts";
import { type LocalBackupRef, type UploadResult, uploadBackup } from "./upload.ts";

export interface OffsiteUploaderOptions {
  config: OffsiteConfig;
  logger: Logger;
  /** The database whose backups are uploaded and pruned: DATABASE_PATH's file name without extension. */
  database: string;
  /**
   * The database's local backups, newest first (listBackups of BACKUP_DIR). How "not yet uploaded"
   * is known: a local backup whose name no object in the bucket carries. Only the newest `keep`
   * are considered: older ones remote retention would delete at once.
   */
  listLocal: () => LocalBackupRef[];
  /** Wait before retry `attempt` (1, 2, ...) after a failed run. Default: 1 min doubling to 1 h. */
  retryDelayMs?: (attempt: number) => number;
  /** Smallest multipart part size (tests make it small). */
  partSize?: number;
  /** After stop(), how long parts in flight may take before the upload is aborted regardless. */
  stopGraceMs?: number;
}

export interface OffsiteStatus {
  /** s3://bucket/prefix */
  target: string;
  encrypted: boolean;
  /** Backups waiting for (or in) an upload. */
  pending: number;
  /** Uploads and failed runs since the process started. */
  uploads: number;
  failures: number;
  /** The last run failed and a retry is due (at `retryAt`). */
  failing: boolean;
  retryAt: Date | null;
  lastSuccess: { file: string; key: string; bytes: number; ms: number; at: Date; ageSeconds: number } | null;
  lastFailure: { message: string; at: Date; ageSeconds: number } | null;
}

export interface OffsiteUploader {
  /** Uploads `backup` soon, with any recent local backup the bucket lacks. Returns at once. */
  enqueue(backup: LocalBackupRef): void;
  /** Uploads every recent local backup the bucket lacks (at startup, after a schedule's tick). */
  catchUp(): void;
  /** Resolves once nothing is queued or running (a failed run counts as done; its retry waits). */
  idle(): Promise<void>;
  status(): OffsiteStatus;
  /** Cancels the retry timer and stops an upload in flight: its multipart upload is aborted. */
  stop(): Promise<void>;
}

const STALE_UPLOAD_MS = 24 * 60 * 60 * 1000;
const defaultRetryDelay = (attempt: number) => Math.min(60_000 * 2 ** (attempt - 1), 3_600_000);

export function createOffsiteUploader({
  config,
  logger,
  database,
  listLocal,
  retryDelayMs = defaultRetryDelay,
  partSize,
  stopGraceMs,
}: OffsiteUploaderOptions): OffsiteUploader {
  const encrypted = config.recipients.length > 0;
  const abort = new AbortController();
  const queue = new Map<string, LocalBackupRef>();
  let bucket: Promise<Bucket> | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryAt: Date | null = null;
  let attempt = 0;
  let uploads = 0;
  let failures = 0;
  let lastStaleCheck = 0;
  let lastSuccess: (UploadResult & { at: Date }) | null = null;
  let lastFailure: { message: string; at: Date } | null = null;

  const described = {
    target: config.url,
    endpoint: config.endpoint ?? "AWS",
    encrypted,
    recipients: config.recipients.length,
    keep: config.prune ? config.keep : "bucket lifecycle rules",
  };
  if (encrypted) logger.info(described, "off-site backups on, encrypted with age");
  else logger.warn(described, "off-site backups on, NOT encrypted: set BACKUP_AGE_RECIPIENT to encrypt them");

  const kick = () => {
    if (abort.signal.aborted) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(retryTimer);
    retryAt = null;
    running = run().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        kick();
      }
    });
  };

  const run = async () => {
    try {
      bucket ??= openBucket(config);
      const target = await bucket;
      const remote = new Set(
        (await listRemoteBackups(target, { database, signal: abort.signal })).map((b) => b.name),
      );
      for (const local of listLocal().slice(0, config.keep)) {
        if (!remote.has(local.file)) queue.set(local.file, local);
      }
      // Newest first: when time or retries run short, the most recent backup is the one that matters.
      for (const backup of [...queue.values()].sort((a, b) => b.file.localeCompare(a.file))) {
        if (remote.has(backup.file) || !fs.existsSync(backup.path)) {
          queue.delete(backup.file); // uploaded already, or removed by local retention meanwhile
          continue;
        }
        const result = await uploadBackup({
          bucket: target,
          backup,
          recipients: config.recipients,
          signal: abort.signal,
          partSize,
          stopGraceMs,
        });
        queue.delete(backup.file);
        remote.add(backup.file);
        uploads++;
        lastSuccess = { ...result, at: new Date() };
        const pruned = config.prune
          ? await pruneRemoteBackups(target, {
              database,
              keep: config.keep,
              protect: [result.key],
              signal: abort.signal,
            })
          : [];
        logger.info(
          {
            key: result.key,
            bytes: result.plainBytes,
            objectBytes: result.objectBytes,
            encrypted: result.encrypted,
            ms: result.ms,
            pruned: pruned.map((b) => b.key),
          },
          "backup uploaded",
        );
      }
      attempt = 0;
      await cleanStaleUploads(target);
    } catch (error) {
      if (abort.signal.aborted) return;
      failures++;
      attempt++;
      const message =
        error instanceof OffsiteError ? error.message : `off-site upload failed: ${(error as Error).message}`;
      lastFailure = { message, at: new Date() };
      const delay = retryDelayMs(attempt);
      retryAt = new Date(Date.now() + delay);
      logger.error(
        { err: message, attempt, retryInMs: delay, pending: queue.size },
        "off-site upload failed",
      );
      // unref'd: a pending retry alone never keeps the process alive.
      retryTimer = setTimeout(kick, delay);
      retryTimer.unref();
    }
  };

  // Best effort, once a day: a failure here is logged and waits for the next day.
  const cleanStaleUploads = async (target: Bucket) => {
    if (Date.now() - lastStaleCheck < STALE_UPLOAD_MS) return;
    lastStaleCheck = Date.now();
    try {
      const aborted = await abortStaleUploads(target, { olderThanMs: STALE_UPLOAD_MS, signal: abort.signal });
      if (aborted.length > 0)
        logger.warn({ keys: aborted }, "aborted multipart uploads left by an earlier process");
    } catch (error) {
      logger.warn({ err: (error as Error).message }, "could not look for abandoned multipart uploads");
    }
  };

  const age = (at: Date) => Math.round((Date.now() - at.getTime()) / 1000);

  return {
    enqueue(backup) {
      queue.set(backup.file, backup);
      kick();
    },
    catchUp: kick,
    async idle() {
      while (running) await running;
    },
    status() {
      return {
        target: config.url,
        encrypted,
        pending: queue.size,
        uploads,
        failures,
        failing: retryAt !== null,
        retryAt,
        lastSuccess: lastSuccess && {
          file: lastSuccess.file,
          key: lastSuccess.key,
          bytes: lastSuccess.objectBytes,
          ms: lastSuccess.ms,
          at: lastSuccess.at,
          ageSeconds: age(lastSuccess.at),
        },
        lastFailure: lastFailure && { ...lastFailure, ageSeconds: age(lastFailure.at) },
      };
    },
    async stop() {
      abort.abort();
      clearTimeout(retryTimer);
      retryAt = null;
      await running;
      if (bucket) (await bucket.catch(() => undefined))?.close();
    },
  };
}
