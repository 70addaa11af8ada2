// The operations API under /admin, for ADMIN_TOKEN holders (404 without one): list, take, download
// and verify backups, and restore one inside the running service. Backups are named as the listing
// names them, and only a name found there is ever turned into a path.
import fs from "node:fs";
import { pipeline } from "node:stream/promises";
import type { RequestHandler, Response } from "express";
import { z } from "zod";
import { type BackupFile, listBackups } from "../backups/files.ts";
import type { RemoteBackup } from "../backups/offsite/remote.ts";
import { type OnlineRestore, OnlineRestoreError } from "../backups/online-restore.ts";
import { pruneBackups } from "../backups/retention.ts";
import type { Config } from "../config.ts";
import type { StorageEngine } from "../db/storage.ts";
import { type MetricsRecorder, noMetrics } from "../metrics/recorder.ts";
import { type ApiOperation, type ApiRouter, apiRouter, errorResponse } from "./api-router.ts";
import { HttpError } from "./errors.ts";

/** A backup as the API shows it: by name, never by path. */
const backupDto = z
  .strictObject({
    file: z.string().meta({ example: "app-20261202T101500123Z-manual.db" }),
    kind: z.enum(["manual", "scheduled", "pre-migration", "pre-rollback", "pre-restore"]),
    label: z.string().nullable().meta({ description: "The migration a pre-migration backup was taken for" }),
    createdAt: z.iso.datetime(),
    sizeBytes: z.number().int().nonnegative(),
  })
  .meta({ id: "Backup" });

const remoteBackupDto = z
  .strictObject({
    name: z.string().meta({ description: "The local backup's name the object holds" }),
    key: z.string(),
    kind: backupDto.shape.kind,
    createdAt: z.iso.datetime(),
    uploadedAt: z.iso.datetime(),
    sizeBytes: z
      .number()
      .int()
      .nonnegative()
      .meta({ description: "The object's size: compressed, maybe encrypted" }),
    encrypted: z.boolean(),
  })
  .meta({ id: "RemoteBackup" });

const backupList = z
  .strictObject({
    local: z.array(backupDto).meta({ description: "In BACKUP_DIR, newest first" }),
    remote: z.array(remoteBackupDto).nullable().meta({
      description: "In the bucket, newest first; null when off-site backups are off or unreachable",
    }),
    remoteError: z.string().optional().meta({ description: "Why the bucket could not be listed" }),
  })
  .meta({ id: "BackupList" });

const verdictDto = z
  .strictObject({
    backup: backupDto,
    ok: z.boolean(),
    checks: z.array(z.strictObject({ name: z.string(), findings: z.array(z.string()) })),
  })
  .meta({ id: "BackupVerdict" });

const restoreBody = z
  .strictObject({
    backup: z
      .string()
      .min(1)
      .max(255)
      .meta({ description: 'A backup\'s name from GET /admin/backups, or "latest"', example: "latest" }),
  })
  .meta({ id: "RestoreRequest" });

const restoreResult = z
  .strictObject({
    restored: backupDto,
    previous: backupDto
      .nullable()
      .meta({ description: "The database as it was, kept as a pre-restore backup" }),
    migrated: z
      .array(z.string())
      .meta({ description: "Migrations the backup lacked, applied after the swap" }),
    unfinished: z.number().int().meta({ description: "Requests still running when the wait for them ended" }),
    ms: z.number().int(),
  })
  .meta({ id: "RestoreResult" });

// Any name up to a file name's length is looked up in the listing: one that is not there, a
// traversal attempt included, is 404 like any other.
const nameParams = z.object({
  name: z.string().max(255).meta({ description: "A backup's name, as listed" }),
});

const listOperation: ApiOperation = {
  operationId: "listBackups",
  summary: "The backups, local and off-site",
  auth: "bearer",
  responses: { 200: { description: "Newest first", body: backupList } },
};
const noSuchBackup = errorResponse("No backup of that name (not_found)", "not_found");
const createOperation: ApiOperation = {
  operationId: "createBackup",
  summary: "Take a verified backup now (then retention, and the off-site upload when configured)",
  auth: "bearer",
  responses: {
    201: { description: "The backup taken", body: backupDto },
    409: errorResponse("A restore is running (operation_in_progress)", "operation_in_progress"),
  },
};
const downloadOperation: ApiOperation = {
  operationId: "downloadBackup",
  summary: "Download a backup file",
  auth: "bearer",
  params: nameParams,
  responses: {
    200: {
      description: "The backup's bytes, streamed",
      contentType: "application/octet-stream",
      body: z.string().meta({ format: "binary" }),
    },
    404: noSuchBackup,
  },
};
const verifyOperation: ApiOperation = {
  operationId: "verifyBackup",
  summary: "Verify a backup (every page or entry read)",
  auth: "bearer",
  params: nameParams,
  responses: {
    200: { description: "What the checks found; ok is false when any found something", body: verdictDto },
    404: noSuchBackup,
  },
};
const restoreOperation: ApiOperation = {
  operationId: "restoreBackup",
  summary: "Restore a backup inside the running service (SQLite)",
  description:
    "The backup is verified first; the API then answers 503 maintenance while in-flight requests finish, the database is swapped (the current one kept as a pre-restore backup) and migrated. Any failure after the swap puts the previous database back.",
  auth: "bearer",
  body: restoreBody,
  responses: {
    200: { description: "Restored", body: restoreResult },
    404: noSuchBackup,
    409: errorResponse(
      "Another operation is running (operation_in_progress), the engine shares its database with other instances, or another process holds the database (restore_refused); nothing changed",
      "restore_refused",
    ),
    422: errorResponse("The backup failed verification (backup_unsound); nothing changed", "backup_unsound"),
  },
};

export interface AdminOptions {
  engine: StorageEngine;
  config: Pick<Config, "backupDir" | "backupKeep" | "backupMaxAgeDays">;
  restorer: OnlineRestore;
  requireAdmin: RequestHandler;
  /** The bucket's listing, when off-site backups are on. */
  listRemote?: (() => Promise<RemoteBackup[]>) | undefined;
  /** Hands a new backup to the off-site uploader. */
  onBackup?: ((backup: BackupFile) => void) | undefined;
  recorder?: MetricsRecorder | undefined;
}

export function adminRouter({
  engine,
  config,
  restorer,
  requireAdmin,
  listRemote,
  onBackup,
  recorder = noMetrics,
}: AdminOptions): ApiRouter {
  const router = apiRouter({
    name: "operations",
    description: "Backups and restore, for ADMIN_TOKEN holders",
  });
  const mine = () => listBackups(config.backupDir).filter((b) => b.database === engine.database);
  const find = (name: string): BackupFile => {
    const backup = mine().find((b) => b.file === name);
    if (!backup) throw new HttpError(404, "not_found", "no backup of that name");
    return backup;
  };
  // One operation that changes things at a time: a backup taken during a restore would copy a
  // database that is being swapped.
  let busy = false;
  const exclusive = async <T>(work: () => Promise<T>): Promise<T> => {
    if (busy || restorer.running) {
      throw new HttpError(
        409,
        "operation_in_progress",
        "another backup or restore is running; try again when it ends",
      );
    }
    busy = true;
    try {
      return await work();
    } finally {
      busy = false;
    }
  };
  const audit = (res: Response, operation: string, fields: Record<string, unknown>) =>
    res.req.log.info({ operation, caller: res.locals.auth, ...fields }, "operations API");

  router.get("/backups", listOperation, requireAdmin, async (_req, res) => {
    const local = mine().map(toBackupDto);
    let remote: z.output<typeof remoteBackupDto>[] | null = null;
    let remoteError: string | undefined;
    if (listRemote) {
      try {
        remote = (await listRemote()).filter((b) => b.database === engine.database).map(toRemoteDto);
      } catch (error) {
        remoteError = (error as Error).message;
      }
    }
    res.json({ local, remote, ...(remoteError !== undefined && { remoteError }) });
  });

  router.post("/backups", createOperation, requireAdmin, async (_req, res) => {
    const started = performance.now();
    const backup = await exclusive(async () => {
      try {
        const taken = await engine.backup({ backupDir: config.backupDir, kind: "manual" });
        recorder.backupFinished({
          kind: "manual",
          outcome: "success",
          seconds: (performance.now() - started) / 1000,
        });
        return taken;
      } catch (error) {
        recorder.backupFinished({
          kind: "manual",
          outcome: "failure",
          seconds: (performance.now() - started) / 1000,
        });
        audit(res, "backup", { outcome: "failure", error: (error as Error).message });
        throw error;
      }
    });
    const pruned = pruneBackups({
      database: engine.database,
      backupDir: config.backupDir,
      keep: config.backupKeep,
      maxAgeDays: config.backupMaxAgeDays,
    });
    onBackup?.(backup);
    audit(res, "backup", { outcome: "success", backup: backup.file, pruned: pruned.map((b) => b.file) });
    res.status(201).json(toBackupDto(backup));
  });

  router.get("/backups/:name", downloadOperation, requireAdmin, async (req, res) => {
    const backup = find(nameParams.parse(req.params).name);
    audit(res, "download", { backup: backup.file });
    res.set({
      "Content-Type": "application/octet-stream",
      "Content-Length": String(backup.sizeBytes),
      "Content-Disposition": `attachment; filename="${backup.file}"`,
      "Cache-Control": "no-store",
    });
    // Streamed: a backup of any size goes out without being held in memory.
    try {
      await pipeline(fs.createReadStream(backup.path), res);
    } catch (error) {
      // The client went away, maybe right after the last byte (it knows the length): nothing to answer.
      if ((error as { code?: string }).code !== "ERR_STREAM_PREMATURE_CLOSE") throw error;
    }
  });

  router.post("/backups/:name/verify", verifyOperation, requireAdmin, async (req, res) => {
    const backup = find(nameParams.parse(req.params).name);
    const verdict = await engine.verify(backup.path);
    audit(res, "verify", { backup: backup.file, ok: verdict.ok });
    res.json({ backup: toBackupDto(backup), ok: verdict.ok, checks: verdict.checks });
  });

  router.post("/restore", restoreOperation, requireAdmin, async (req, res) => {
    const { backup: name } = restoreBody.parse(req.body);
    if (busy)
      throw new HttpError(409, "operation_in_progress", "a backup is being taken; try again when it ends");
    const started = performance.now();
    try {
      const result = await restorer.restore(name);
      recorder.restoreFinished({ outcome: "success", seconds: (performance.now() - started) / 1000 });
      audit(res, "restore", {
        outcome: "success",
        backup: result.backup.file,
        previous: result.previous?.file,
      });
      res.json({
        restored: toBackupDto(result.backup),
        previous: result.previous && toBackupDto(result.previous),
        migrated: result.migrated,
        unfinished: result.unfinished,
        ms: result.ms,
      });
    } catch (error) {
      recorder.restoreFinished({ outcome: "failure", seconds: (performance.now() - started) / 1000 });
      audit(res, "restore", { outcome: "failure", backup: name, error: (error as Error).message });
      throw error instanceof OnlineRestoreError ? toHttpError(error) : error;
    }
  });

  return router;
}

function toBackupDto(backup: BackupFile): z.output<typeof backupDto> {
  return {
    file: backup.file,
    kind: backup.kind,
    label: backup.label ?? null,
    createdAt: backup.createdAt.toISOString(),
    sizeBytes: backup.sizeBytes,
  };
}

function toRemoteDto(backup: RemoteBackup): z.output<typeof remoteBackupDto> {
  return {
    name: backup.name,
    key: backup.key,
    kind: backup.kind,
    createdAt: backup.createdAt.toISOString(),
    uploadedAt: backup.uploadedAt.toISOString(),
    sizeBytes: backup.sizeBytes,
    encrypted: backup.encrypted,
  };
}

const RESTORE_STATUS: Record<OnlineRestoreError["reason"], [number, string]> = {
  busy: [409, "operation_in_progress"],
  unsupported: [409, "restore_refused"],
  refused: [409, "restore_refused"],
  not_found: [404, "not_found"],
  unsound: [422, "backup_unsound"],
  failed: [500, "restore_failed"],
};

function toHttpError(error: OnlineRestoreError): HttpError {
  const [status, code] = RESTORE_STATUS[error.reason];
  return new HttpError(status, code, error.message);
}
