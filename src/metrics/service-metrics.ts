// This service's metrics over its Storage: what each scrape reads (cheap reads only: the engine's
// health facts, the applied migrations, the backup folder's listing) and the facts that do not
// change. A PostgreSQL Storage adds its pool counts to readHealth's facts as `pool`.
import packageJson from "../../package.json" with { type: "json" };
import { listBackups } from "../backups/files.ts";
import type { OffsiteUploader } from "../backups/offsite/uploader.ts";
import type { Config } from "../config.ts";
import { findMigrations, readMigrationStatus } from "../db/migrator.ts";
import type { Storage } from "../db/storage.ts";
import {
  type BackupSnapshot,
  createMetrics,
  type DatabaseSnapshot,
  type ServiceMetrics,
} from "./prometheus.ts";

export interface ServiceMetricsOptions {
  storage: Storage;
  /** The off-site uploader, when BACKUP_S3_URL is set. */
  offsite?: Pick<OffsiteUploader, "status"> | undefined;
  config: Pick<Config, "backupDir" | "migrationsDir" | "backupIntervalMs">;
  processMetrics?: boolean;
}

export function createServiceMetrics({
  storage,
  offsite,
  config,
  processMetrics,
}: ServiceMetricsOptions): ServiceMetrics {
  const migrations = findMigrations(config.migrationsDir);
  const { engine } = storage;
  return createMetrics({
    version: packageJson.version,
    engine: engine.name,
    processMetrics,
    backupIntervalSeconds: config.backupIntervalMs === null ? null : config.backupIntervalMs / 1000,
    readOffsite:
      offsite &&
      (() => {
        const { uploads, failures, pending, lastSuccess, lastFailure } = offsite.status();
        return {
          uploads,
          failures,
          pending,
          lastSuccessAt: lastSuccess?.at ?? null,
          lastFailureAt: lastFailure?.at ?? null,
        };
      }),
    async readDatabaseStats() {
      const { facts, availableBytes } = await storage.readHealth();
      const { pending } = await readMigrationStatus(storage, migrations);
      return {
        sizeBytes: number(facts.sizeBytes),
        walSizeBytes: number(facts.walSizeBytes),
        availableBytes: availableBytes ?? undefined,
        migrationsPending: pending.length,
        pool: facts.pool as DatabaseSnapshot["pool"],
      };
    },
    // One readdir and a stat per file: retention (BACKUP_KEEP) keeps the folder small.
    readBackups() {
      const newest = new Map<string, BackupSnapshot>();
      // Newest first; a shared folder may also hold other databases' backups.
      for (const { database, kind, createdAt, sizeBytes } of listBackups(config.backupDir)) {
        if (database === engine.database && !newest.has(kind))
          newest.set(kind, { kind, createdAt, sizeBytes });
      }
      return [...newest.values()];
    },
  });
}

const number = (value: unknown): number | undefined => (typeof value === "number" ? value : undefined);
