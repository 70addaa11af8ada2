// One-shot off-site operations, each opening the bucket and closing it again: what the command line
// runs (upload a backup now, list the bucket, fetch a backup back, drill from the bucket) and what a
// scheduled drill in the service calls. Plain inputs in, plain results out; printing is the caller's.
import fs from "node:fs";
import path from "node:path";
import type { OffsiteConfig } from "../../config.ts";
import type { StorageEngine } from "../../db/storage.ts";
import type { Logger } from "../../logger.ts";
import { listBackups } from "../files.ts";
import type { Progress } from "../progress.ts";
import { DrillError, type DrillReport, runRestoreDrill } from "../rehearsal.ts";
import { readIdentityFile } from "./codec.ts";
import { type DownloadResult, downloadBackup } from "./download.ts";
import { listRemoteBackups, pruneRemoteBackups, type RemoteBackup } from "./remote.ts";
import { type Bucket, openBucket } from "./s3.ts";
import { type LocalBackupRef, type UploadResult, uploadBackup } from "./upload.ts";

interface Common {
  offsite: OffsiteConfig;
  signal?: AbortSignal;
  /** A progress display for a transfer of `total` bytes (createProgress in progress.ts). */
  progress?: (label: string, total: number) => Progress;
}

async function withBucket<T>(offsite: OffsiteConfig, work: (bucket: Bucket) => Promise<T>): Promise<T> {
  const bucket = await openBucket(offsite);
  try {
    return await work(bucket);
  } finally {
    bucket.close();
  }
}

/** Uploads one local backup, then applies remote retention (unless left to lifecycle rules). */
export async function uploadNow({
  offsite,
  database,
  backup,
  signal,
  progress,
}: Common & { database: string; backup: LocalBackupRef }): Promise<{
  upload: UploadResult;
  pruned: RemoteBackup[];
}> {
  return withBucket(offsite, async (bucket) => {
    const upload = await uploadBackup({
      bucket,
      backup,
      recipients: offsite.recipients,
      signal,
      progress: progress && ((total) => progress(`upload ${backup.file}`, total)),
    });
    const pruned = offsite.prune
      ? await pruneRemoteBackups(bucket, {
          database,
          keep: offsite.keep,
          protect: [upload.key],
          signal,
        })
      : [];
    return { upload, pruned };
  });
}

/** Every backup of this project's naming in the bucket, newest first (all databases). */
export function listBucket({ offsite, signal }: Common): Promise<RemoteBackup[]> {
  return withBucket(offsite, (bucket) => listRemoteBackups(bucket, { signal }));
}

export interface FetchOptions extends Common {
  /** The database whose newest backup "latest" is (StorageEngine.database). */
  database: string;
  /** "latest" or a backup's name. */
  which: string;
  /** Where the plain backup file lands: BACKUP_DIR. */
  dir: string;
  /** --identity FILE; without it, BACKUP_AGE_IDENTITY_FILE. */
  identityFile?: string;
}

/** Downloads, decodes and checks a remote backup into `dir`: a plain backup file restore takes. */
export function fetchBackup(options: FetchOptions): Promise<DownloadResult> {
  const { offsite, database, which, dir, signal, progress } = options;
  const identity = identitiesFor(offsite, options.identityFile);
  return withBucket(offsite, (bucket) =>
    downloadBackup({
      bucket,
      which,
      database,
      dir,
      identities: identity?.identities ?? null,
      identitySource: identity?.source,
      requireEncrypted: offsite.recipients.length > 0 || identity !== null,
      signal,
      progress: progress && ((total) => progress(`download ${which}`, total)),
    }),
  );
}

export interface RemoteDrillReport {
  download: DownloadResult;
  drill: DrillReport;
}

/**
 * The honest proof that an off-site backup restores: download and decode it into a scratch folder
 * in BACKUP_DIR, then the restore drill (migrate, integrity_check, foreign_key_check, row counts
 * beside the live database's). Nothing live is touched; the scratch folder is removed either way.
 */
export async function drillFromBucket(
  options: Omit<FetchOptions, "dir" | "database"> & {
    engine: StorageEngine;
    backupDir: string;
    migrationsDir: string;
    logger: Logger;
  },
): Promise<RemoteDrillReport> {
  const { engine } = options;
  fs.mkdirSync(options.backupDir, { recursive: true, mode: 0o700 });
  // The leading dot keeps it out of listings, as the local drill's scratch folders.
  const scratch = fs.mkdtempSync(path.join(options.backupDir, ".remote-drill-"));
  try {
    const download = await fetchBackup({ ...options, database: engine.database, dir: scratch });
    const backup = listBackups(scratch).find((b) => b.file === download.file);
    if (!backup) throw new DrillError(`${download.file} is not a backup name this engine can drill`);
    const drill = await runRestoreDrill({
      engine,
      backup,
      backupDir: scratch,
      migrationsDir: options.migrationsDir,
      logger: options.logger,
    });
    return { download, drill };
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** The identities to decrypt with: --identity FILE first, then BACKUP_AGE_IDENTITY_FILE; null: none. */
export function identitiesFor(
  offsite: OffsiteConfig,
  explicitFile?: string,
): { identities: string[]; source: string } | null {
  const file = explicitFile === "-" ? "-" : explicitFile ? path.resolve(explicitFile) : offsite.identityFile;
  if (!file) return null;
  return { identities: readIdentityFile(file), source: file };
}
