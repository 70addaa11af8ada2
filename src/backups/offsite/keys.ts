// Object keys: `<prefix>/<backup file name>.zst` or `.zst.age`. The local backup's own name leads,
// so a bucket listing shows the names BACKUP_DIR shows, and for one database key order is time
// order (names carry a UTC stamp); the suffix says how to decode an object without asking for it.
import { type BackupExtension, type BackupKind, parseBackupFileName } from "../files.ts";

/** What a backup file holds, by its extension; stored in each object's metadata. */
export const BACKUP_FORMATS: Record<BackupExtension, string> = { ".db": "sqlite", ".dump": "pg_dump-custom" };

export const COMPRESSED_SUFFIX = ".zst";
export const ENCRYPTED_SUFFIX = ".zst.age";

export interface BackupName {
  /** The local file name: app-20261125T142549123Z-manual.db */
  name: string;
  database: string;
  kind: BackupKind;
  label: string | undefined;
  createdAt: Date;
  format: string;
}

export interface RemoteObjectName extends BackupName {
  key: string;
  encrypted: boolean;
}

/** The parts of a backup file name (files.ts's naming); undefined for any other name. */
export function parseBackupName(name: string): BackupName | undefined {
  // A key's "folders" are not part of a name: app/older/app-...db.zst is no backup of ours.
  const parsed = name.includes("/") ? undefined : parseBackupFileName(name);
  if (!parsed) return undefined;
  const { database, kind, label, createdAt, extension } = parsed;
  return { name, database, kind, label, createdAt, format: BACKUP_FORMATS[extension] };
}

/** "prefix/" (or "" at the bucket's root): what every key of ours starts with. */
export function keyPrefix(prefix: string): string {
  return prefix ? `${prefix}/` : "";
}

export function objectKey(prefix: string, name: string, encrypted: boolean): string {
  return `${keyPrefix(prefix)}${name}${encrypted ? ENCRYPTED_SUFFIX : COMPRESSED_SUFFIX}`;
}

/** The backup an object key names; undefined for a key that is not one of ours. */
export function parseObjectKey(prefix: string, key: string): RemoteObjectName | undefined {
  const start = keyPrefix(prefix);
  if (!key.startsWith(start)) return undefined;
  const rest = key.slice(start.length);
  const encrypted = rest.endsWith(ENCRYPTED_SUFFIX);
  if (!encrypted && !rest.endsWith(COMPRESSED_SUFFIX)) return undefined;
  const parsed = parseBackupName(rest.slice(0, -(encrypted ? ENCRYPTED_SUFFIX : COMPRESSED_SUFFIX).length));
  return parsed && { ...parsed, key, encrypted };
}
