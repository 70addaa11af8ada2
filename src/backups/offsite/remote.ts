// What is in the bucket, and remote retention: only keys that parse as this project's backups are
// listed or ever deleted; whatever else shares the bucket or prefix is left alone.
import { describeS3Error, OffsiteError } from "./errors.ts";
import { keyPrefix, parseObjectKey, type RemoteObjectName } from "./keys.ts";
import type { Bucket } from "./s3.ts";

export interface RemoteBackup extends RemoteObjectName {
  /** Size of the object (compressed, maybe encrypted). */
  sizeBytes: number;
  /** When the bucket received it. */
  uploadedAt: Date;
}

/** This project's objects under the prefix, newest first; with `database`, only that database's. */
export async function listRemoteBackups(
  bucket: Bucket,
  { database, signal, pageSize }: { database?: string; signal?: AbortSignal; pageSize?: number } = {},
): Promise<RemoteBackup[]> {
  const found: RemoteBackup[] = [];
  let token: string | undefined;
  try {
    do {
      const page = await bucket.client.send(
        new bucket.sdk.ListObjectsV2Command({
          Bucket: bucket.name,
          Prefix: keyPrefix(bucket.prefix),
          // Objects in "folders" below the prefix are not ours: not listed, never pruned.
          Delimiter: "/",
          ContinuationToken: token,
          MaxKeys: pageSize,
        }),
        { abortSignal: signal },
      );
      for (const object of page.Contents ?? []) {
        const parsed = object.Key === undefined ? undefined : parseObjectKey(bucket.prefix, object.Key);
        if (!parsed || (database !== undefined && parsed.database !== database)) continue;
        found.push({
          ...parsed,
          sizeBytes: object.Size ?? 0,
          uploadedAt: object.LastModified ?? new Date(0),
        });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  } catch (error) {
    if (error instanceof OffsiteError) throw error;
    throw new OffsiteError(`cannot list ${bucket.url}: ${describeS3Error(error)}`, { cause: error });
  }
  return found.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || b.key.localeCompare(a.key));
}

export interface RemotePruneOptions {
  database: string;
  /** The newest `keep` backups stay. */
  keep: number;
  /** Keys that stay whatever their age: the backup just uploaded, the one a drill last restored. */
  protect?: readonly string[];
  signal?: AbortSignal;
}

/**
 * Remote retention, as local retention does it: the newest `keep` backups of the database stay,
 * and so do the newest pre-migration backup (the way back from the last schema change) and the
 * protected keys. The newest backup always stays (keep is at least 1). Returns what was deleted.
 */
export async function pruneRemoteBackups(
  bucket: Bucket,
  { database, keep, protect = [], signal }: RemotePruneOptions,
): Promise<RemoteBackup[]> {
  const mine = await listRemoteBackups(bucket, { database, signal });
  // By backup name, not by key: a backup uploaded once plain and once encrypted is one backup.
  const names = [...new Set(mine.map((b) => b.name))];
  const kept = new Set(names.slice(0, Math.max(1, keep)));
  const newestPreMigration = mine.find((b) => b.kind === "pre-migration");
  if (newestPreMigration) kept.add(newestPreMigration.name);
  const doomed = mine.filter((b) => !kept.has(b.name) && !protect.includes(b.key));
  for (const backup of doomed) {
    try {
      await bucket.client.send(new bucket.sdk.DeleteObjectCommand({ Bucket: bucket.name, Key: backup.key }), {
        abortSignal: signal,
      });
    } catch (error) {
      throw new OffsiteError(`cannot delete ${backup.key} from ${bucket.url}: ${describeS3Error(error)}`, {
        cause: error,
      });
    }
  }
  return doomed;
}

/**
 * Aborts multipart uploads of ours that were started more than `olderThanMs` ago: what a process
 * killed mid-upload (SIGKILL, power loss) leaves behind, invisible as an object but billed as
 * storage. Old enough to belong to no upload still running elsewhere. Returns their keys. A bucket
 * lifecycle rule (AbortIncompleteMultipartUpload) does the same on the server's side.
 */
export async function abortStaleUploads(
  bucket: Bucket,
  { olderThanMs, now, signal }: { olderThanMs: number; now?: Date; signal?: AbortSignal },
): Promise<string[]> {
  const aborted: string[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  do {
    const command = new bucket.sdk.ListMultipartUploadsCommand({
      Bucket: bucket.name,
      Prefix: keyPrefix(bucket.prefix),
      KeyMarker: keyMarker,
      UploadIdMarker: uploadIdMarker,
    });
    // Ages on the server's clock, which stamped `Initiated`: a host clock a day off would otherwise
    // abort uploads still running (its own included) or never see dead ones as old.
    let serverNow: Date | undefined;
    command.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        const date = (result.response as { headers?: Record<string, string> }).headers?.date;
        const parsed = date ? new Date(date) : undefined;
        if (parsed && !Number.isNaN(parsed.getTime())) serverNow = parsed;
        return result;
      },
      { step: "deserialize", name: "serverDateOfUploadListing" },
    );
    const page = await bucket.client.send(command, { abortSignal: signal });
    const current = (now ?? serverNow ?? new Date()).getTime();
    for (const upload of page.Uploads ?? []) {
      if (!upload.Key || !upload.UploadId || !parseObjectKey(bucket.prefix, upload.Key)) continue;
      if (current - (upload.Initiated?.getTime() ?? current) < olderThanMs) continue;
      await bucket.client.send(
        new bucket.sdk.AbortMultipartUploadCommand({
          Bucket: bucket.name,
          Key: upload.Key,
          UploadId: upload.UploadId,
        }),
        { abortSignal: signal },
      );
      aborted.push(upload.Key);
    }
    keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
    uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
  } while (keyMarker);
  return aborted;
}
