// The environment, read once: validated with zod into a typed, frozen Config. The only reader of
// process.env; everything else receives the Config it needs.
import { isIP } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
const NODE_ENVS = ["development", "production", "test"] as const;
const TRUST_PROXY_NAMES = new Set(["loopback", "linklocal", "uniquelocal"]);

const booleanString = z
  .enum(["true", "false", "1", "0", "yes", "no"], { error: "expected true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

const onOff = z.enum(["on", "off"], { error: "expected on or off" }).transform((v) => v === "on");

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

const envSchema = z.object({
  NODE_ENV: z.enum(NODE_ENVS).default("development"),
  PORT: integerString(0, 65535).default(3000),
  HOST: z.string().min(1).default("0.0.0.0"),
  DATABASE_PATH: z.string().min(1).default("./data/app.db"),
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
});

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  readonly nodeEnv: (typeof NODE_ENVS)[number];
  readonly port: number;
  readonly host: string;
  /** Absolute path of the SQLite file. */
  readonly databasePath: string;
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
    throw new ConfigError(`invalid ${name}=${JSON.stringify(env[name])}: ${issue.message}`);
  }
  const e = result.data;
  const databasePath = path.resolve(cwd, e.DATABASE_PATH);
  return Object.freeze({
    nodeEnv: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    databasePath,
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
  });
}
