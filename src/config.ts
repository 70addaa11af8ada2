// The environment, read once: validated with zod into a typed, frozen Config. The only reader of
// process.env; everything else receives the Config it needs.
import { isIP } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import packageJson from "../package.json" with { type: "json" };
import { isAgeX25519Recipient } from "./backups/offsite/age-recipient.ts";
import { parseDatabaseUrl } from "./db/postgres/url.ts";

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
const NODE_ENVS = ["development", "production", "test"] as const;
const TRUST_PROXY_NAMES = new Set(["loopback", "linklocal", "uniquelocal"]);

const booleanString = z
  .enum(["true", "false", "1", "0", "yes", "no"], { error: "expected true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

const onOff = z.enum(["on", "off"], { error: "expected on or off" }).transform((v) => v === "on");

// Checked here so a bad URL stops the service before anything loads; the message never holds the
// value (a password is likely in it).
const databaseUrl = z.string().superRefine((value, ctx) => {
  const parsed = parseDatabaseUrl(value);
  if (typeof parsed === "string") ctx.addIssue({ code: "custom", message: parsed });
});

const integerString = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, { error: `expected a whole number from ${min} to ${max}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .min(min, { error: `expected at least ${min}` })
        .max(max, { error: `expected at most ${max}` }),
    );

const DURATION_UNITS_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

// "30s", "15m", "6h", "1d"; "off" (or unset) disables. Whole units only: what an operator writes.
const interval = z
  .string()
  .regex(/^(off|\d+[smhd])$/, { error: "expected a duration such as 30s, 15m, 6h or 1d, or off" })
  .transform((v) =>
    v === "off"
      ? null
      : Number(v.slice(0, -1)) * DURATION_UNITS_MS[v.at(-1) as keyof typeof DURATION_UNITS_MS],
  )
  .pipe(
    z
      .number()
      .min(1_000, { error: "expected at least 1s" })
      .max(365 * 86_400_000, { error: "expected at most 365d" })
      .nullable(),
  );

// Express's `trust proxy`: false (default), true, a hop count, or addresses/subnets/names.
const trustProxy = z.string().transform((value, ctx): boolean | number | string => {
  const v = value.trim();
  if (v === "" || v === "false") return false;
  if (v === "true") return true;
  if (/^\d+$/.test(v)) return Number(v);
  const bad = v
    .split(",")
    .map((part) => part.trim())
    .find((part) => !TRUST_PROXY_NAMES.has(part) && isIP(part.split("/")[0] ?? "") === 0);
  if (bad !== undefined) {
    ctx.addIssue({
      code: "custom",
      message: `"${bad}" is not an IP address, subnet, or one of loopback, linklocal, uniquelocal; use true, false, a hop count or a comma-separated list of those`,
    });
    return z.NEVER;
  }
  return v;
});

// s3://bucket/prefix: the bucket as S3 names them (3-63 lowercase letters, digits, dots, hyphens),
// the prefix without slashes at its ends.
const s3Url = z.string().transform((value, ctx) => {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(value);
  const prefix = (m?.[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (!m || prefix.split("/").some((part) => part === "." || part === ".." || (prefix && part === ""))) {
    ctx.addIssue({
      code: "custom",
      message:
        "expected s3://bucket/prefix (a bucket name of 3-63 lowercase letters, digits, dots or hyphens; no empty, . or .. segments in the prefix)",
    });
    return z.NEVER;
  }
  return { bucket: m[1]!, prefix };
});

const endpointUrl = z.string().refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), {
  error: "expected an http:// or https:// URL",
});

// One or more age X25519 public keys, separated by commas or whitespace.
const ageRecipients = z.string().transform((value, ctx) => {
  const keys = value.split(/[\s,]+/).filter(Boolean);
  const bad = keys.find((key) => !isAgeX25519Recipient(key));
  if (bad !== undefined || keys.length === 0) {
    ctx.addIssue({
      code: "custom",
      message: `${bad === undefined ? "no key" : `"${bad}" is not an age X25519 public key`}: expected age1 followed by 58 characters, as age-keygen prints (age-keygen -y identity.txt)`,
    });
    return z.NEVER;
  }
  return keys;
});

// Bearer tokens for the operations routes. 32 characters of `openssl rand -hex 32` carry 128 bits
// at least; a shorter value is most likely a placeholder or a password, not a generated secret.
const TOKEN_HINT =
  "generate one with: openssl rand -hex 32 (or node -e \"console.log(crypto.randomBytes(32).toString('hex'))\")";
const token = z
  .string()
  .min(32, { error: `expected at least 32 characters; ${TOKEN_HINT}` })
  .regex(/^[\x21-\x7e]+$/, { error: `expected printable ASCII without spaces; ${TOKEN_HINT}` });

const envSchema = z.object({
  NODE_ENV: z.enum(NODE_ENVS).default("development"),
  PORT: integerString(0, 65535).default(3000),
  HOST: z.string().min(1).default("0.0.0.0"),
  DATABASE_PATH: z.string().min(1).default("./data/app.db"),
  DATABASE_URL: databaseUrl.optional(),
  DATABASE_POOL_MAX: integerString(1, 10_000).default(10),
  DATABASE_CONNECT_TIMEOUT_MS: integerString(100, 600_000).default(5_000),
  DATABASE_STATEMENT_TIMEOUT_MS: integerString(0, 86_400_000).default(15_000),
  DATABASE_LOCK_TIMEOUT_MS: integerString(0, 86_400_000).default(2_000),
  DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: integerString(0, 86_400_000).default(60_000),
  DATABASE_APPLICATION_NAME: z
    .string()
    .regex(/^[\x20-\x7e]{1,63}$/, { error: "expected 1 to 63 printable ASCII characters" })
    .default(packageJson.name),
  MIGRATE_BACKUP: onOff.default(true),
  BACKUP_DIR: z.string().min(1).optional(),
  BACKUP_INTERVAL: interval.default(null),
  BACKUP_KEEP: integerString(1, 100_000).default(10),
  BACKUP_MAX_AGE_DAYS: integerString(1, 36_500).optional(),
  MIGRATIONS_DIR: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS).default("info"),
  MIGRATE_ON_START: booleanString.default(true),
  SHUTDOWN_TIMEOUT_MS: integerString(0, 600_000).default(10_000),
  BUSY_TIMEOUT_MS: integerString(0, 60_000).default(2_000),
  BODY_LIMIT: z
    .string()
    .regex(/^\d+(\.\d+)?\s*(b|kb|mb)?$/i, { error: "expected a size such as 100kb, 1mb or 5000 (bytes)" })
    .default("100kb"),
  TRUST_PROXY: trustProxy.default(false),
  API_DOCS: onOff.optional(),
  BACKUP_S3_URL: s3Url.optional(),
  AWS_ACCESS_KEY_ID: z.string().optional(),
  AWS_SECRET_ACCESS_KEY: z.string().optional(),
  AWS_SESSION_TOKEN: z.string().optional(),
  AWS_REGION: z
    .string()
    .regex(/^[a-z0-9-]+$/, { error: "expected a region name such as eu-west-1 or auto" })
    .optional(),
  AWS_ENDPOINT_URL_S3: endpointUrl.optional(),
  AWS_ENDPOINT_URL: endpointUrl.optional(),
  BACKUP_S3_FORCE_PATH_STYLE: booleanString.default(false),
  BACKUP_AGE_RECIPIENT: ageRecipients.optional(),
  BACKUP_AGE_IDENTITY_FILE: z.string().optional(),
  BACKUP_S3_KEEP: integerString(1, 100_000).optional(),
  BACKUP_S3_PRUNE: onOff.default(true),
  BACKUP_DRILL_INTERVAL: interval.default(null),
  ADMIN_TOKEN: token.optional(),
  METRICS_TOKEN: token.optional(),
});

/** Every variable the service reads: a test holds .env.example and the README's table to it. */
export const ENVIRONMENT_VARIABLES: readonly string[] = Object.keys(envSchema.shape);

// Never printed, not even in a configuration error.
const SECRET_VARIABLES = new Set([
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "ADMIN_TOKEN",
  "METRICS_TOKEN",
  "DATABASE_URL",
]);

export type LogLevel = (typeof LOG_LEVELS)[number];

/** The PostgreSQL connection pool's settings (used when DATABASE_URL is set). */
export interface PostgresSettings {
  /** Connections this process may open; size it across every instance against max_connections. */
  readonly poolMax: number;
  /** Opening a connection, or waiting for a free one in a full pool, fails after this (503). */
  readonly connectTimeoutMs: number;
  /** statement_timeout for the service's queries (not for migrations); 0 = none. */
  readonly statementTimeoutMs: number;
  /** lock_timeout: how long a statement waits for a row or table lock before a 503; 0 = forever. */
  readonly lockTimeoutMs: number;
  /** idle_in_transaction_session_timeout: ends a session left idle inside a transaction; 0 = never. */
  readonly idleInTransactionTimeoutMs: number;
  /** application_name, as pg_stat_activity shows the service's sessions. */
  readonly applicationName: string;
}

export interface Config {
  readonly nodeEnv: (typeof NODE_ENVS)[number];
  readonly port: number;
  readonly host: string;
  /** Absolute path of the SQLite file (unused when databaseUrl is set). */
  readonly databasePath: string;
  /** DATABASE_URL: a PostgreSQL URL selects PostgreSQL; null: SQLite at databasePath. Holds a secret. */
  readonly databaseUrl: string | null;
  readonly postgres: PostgresSettings;
  /** Back the database up before applying migrations (MIGRATE_BACKUP; off: rely on the platform's). */
  readonly migrateBackup: boolean;
  /** Absolute path of the folder that holds backups. */
  readonly backupDir: string;
  /** How often the service takes a backup of its own; null: never. */
  readonly backupIntervalMs: number | null;
  /** Retention: the newest N backups are kept... */
  readonly backupKeep: number;
  /** ...and of those only the ones younger than this many days; null: no age limit. */
  readonly backupMaxAgeDays: number | null;
  /** Absolute path of the folder that holds the migration modules. */
  readonly migrationsDir: string;
  readonly logLevel: LogLevel;
  readonly migrateOnStart: boolean;
  readonly shutdownTimeoutMs: number;
  readonly busyTimeoutMs: number;
  readonly bodyLimit: string;
  readonly trustProxy: boolean | number | string;
  /** GET /openapi.json and GET /docs; off by default in production. */
  readonly apiDocs: boolean;
  /** Off-site copies of every backup in S3-compatible storage; null: BACKUP_S3_URL is unset. */
  readonly offsite: OffsiteConfig | null;
  /** How often a restore drill runs (from the bucket when off-site backups are on); null: never. */
  readonly backupDrillIntervalMs: number | null;
  /** Bearer token for /health/details and the operations API; null: those routes answer 404. */
  readonly adminToken: string | null;
  /** Bearer token for GET /metrics only (the admin token works there too); null: admin only. */
  readonly metricsToken: string | null;
}

export interface OffsiteConfig {
  /** `s3://bucket/prefix`, normalised: what logs and messages name. */
  readonly url: string;
  readonly bucket: string;
  /** Key prefix without slashes at its ends; "" for the bucket's root. */
  readonly prefix: string;
  readonly region: string;
  /** AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (MinIO, R2, Backblaze...); null: AWS itself. */
  readonly endpoint: string | null;
  readonly forcePathStyle: boolean;
  /** null: the SDK's own chain (shared config files, instance or task role). */
  readonly credentials: S3Credentials | null;
  /** age X25519 public keys every object is encrypted to; empty: objects are not encrypted. */
  readonly recipients: readonly string[];
  /** Absolute path of the age identity file restores and drills decrypt with; null: none given. */
  readonly identityFile: string | null;
  /** Remote retention: the newest N backups of the database are kept in the bucket. */
  readonly keep: number;
  /** false: remote copies are never deleted here, the bucket's lifecycle rules do it. */
  readonly prune: boolean;
}

/** The secret parts are not enumerable: JSON.stringify, pino and util.inspect leave them out. */
export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** A bad environment: its message is the one line the process prints before it exits. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  // An empty variable (`PORT=` in a .env file) means "not set", as most tools treat it.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const result = envSchema.safeParse(present);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const name = String(issue.path[0]);
    const shown = SECRET_VARIABLES.has(name) ? " (value hidden)" : `=${JSON.stringify(env[name])}`;
    throw new ConfigError(`invalid ${name}${shown}: ${issue.message}`);
  }
  const e = result.data;
  if (e.METRICS_TOKEN !== undefined && e.METRICS_TOKEN === e.ADMIN_TOKEN) {
    throw new ConfigError(
      `invalid METRICS_TOKEN: it equals ADMIN_TOKEN, so whoever scrapes could also operate; ${TOKEN_HINT}`,
    );
  }
  const offsite = e.BACKUP_S3_URL ? offsiteConfig(e, e.BACKUP_S3_URL, cwd) : null;
  if (e.BACKUP_DRILL_INTERVAL !== null && offsite && offsite.recipients.length > 0 && !offsite.identityFile) {
    throw new ConfigError(
      "invalid BACKUP_DRILL_INTERVAL: a drill of encrypted off-site backups needs BACKUP_AGE_IDENTITY_FILE (or run db:restore -- --drill --from-remote latest from a host that holds the identity)",
    );
  }
  const databasePath = path.resolve(cwd, e.DATABASE_PATH);
  return Object.freeze({
    nodeEnv: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    databasePath,
    databaseUrl: e.DATABASE_URL ?? null,
    postgres: Object.freeze({
      poolMax: e.DATABASE_POOL_MAX,
      connectTimeoutMs: e.DATABASE_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS,
      lockTimeoutMs: e.DATABASE_LOCK_TIMEOUT_MS,
      idleInTransactionTimeoutMs: e.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
      applicationName: e.DATABASE_APPLICATION_NAME,
    }),
    migrateBackup: e.MIGRATE_BACKUP,
    backupDir: path.resolve(cwd, e.BACKUP_DIR ?? path.join(path.dirname(databasePath), "backups")),
    backupIntervalMs: e.BACKUP_INTERVAL,
    backupKeep: e.BACKUP_KEEP,
    backupMaxAgeDays: e.BACKUP_MAX_AGE_DAYS ?? null,
    migrationsDir: e.MIGRATIONS_DIR
      ? path.resolve(cwd, e.MIGRATIONS_DIR)
      : path.join(projectRoot, "migrations"),
    logLevel: e.LOG_LEVEL,
    migrateOnStart: e.MIGRATE_ON_START,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    busyTimeoutMs: e.BUSY_TIMEOUT_MS,
    bodyLimit: e.BODY_LIMIT,
    trustProxy: e.TRUST_PROXY,
    // Off in production unless asked for: no generator or docs assets loaded, nothing more exposed.
    apiDocs: e.API_DOCS ?? e.NODE_ENV !== "production",
    offsite,
    backupDrillIntervalMs: e.BACKUP_DRILL_INTERVAL,
    adminToken: e.ADMIN_TOKEN ?? null,
    metricsToken: e.METRICS_TOKEN ?? null,
  });
}

function offsiteConfig(
  e: z.infer<typeof envSchema>,
  { bucket, prefix }: { bucket: string; prefix: string },
  cwd: string,
): OffsiteConfig {
  if (Boolean(e.AWS_ACCESS_KEY_ID) !== Boolean(e.AWS_SECRET_ACCESS_KEY)) {
    const missing = e.AWS_ACCESS_KEY_ID ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID";
    throw new ConfigError(`missing ${missing}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together`);
  }
  let credentials: S3Credentials | null = null;
  if (e.AWS_ACCESS_KEY_ID && e.AWS_SECRET_ACCESS_KEY) {
    credentials = { accessKeyId: e.AWS_ACCESS_KEY_ID } as S3Credentials;
    Object.defineProperty(credentials, "secretAccessKey", {
      value: e.AWS_SECRET_ACCESS_KEY,
      enumerable: false,
    });
    if (e.AWS_SESSION_TOKEN) {
      Object.defineProperty(credentials, "sessionToken", { value: e.AWS_SESSION_TOKEN, enumerable: false });
    }
    Object.freeze(credentials);
  }
  return Object.freeze({
    url: prefix ? `s3://${bucket}/${prefix}` : `s3://${bucket}`,
    bucket,
    prefix,
    region: e.AWS_REGION ?? "us-east-1",
    endpoint: e.AWS_ENDPOINT_URL_S3 ?? e.AWS_ENDPOINT_URL ?? null,
    forcePathStyle: e.BACKUP_S3_FORCE_PATH_STYLE,
    credentials,
    recipients: Object.freeze(e.BACKUP_AGE_RECIPIENT ?? []),
    identityFile: e.BACKUP_AGE_IDENTITY_FILE ? path.resolve(cwd, e.BACKUP_AGE_IDENTITY_FILE) : null,
    keep: e.BACKUP_S3_KEEP ?? e.BACKUP_KEEP,
    prune: e.BACKUP_S3_PRUNE,
  });
}
