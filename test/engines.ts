// Both engines in tests: SQLite always, PostgreSQL when TEST_DATABASE_URL names a server and a role
// that may CREATE DATABASE. Every PostgreSQL test gets a database of its own, created from that URL
// and dropped afterwards: nothing is shared between tests, as with SQLite's temporary files.
import fs from "node:fs";
import path from "node:path";
import type { Express } from "express";
import { describe, onTestFinished } from "vitest";
import { createApp } from "../src/app.ts";
import type { Config } from "../src/config.ts";
import { runMigrations } from "../src/db/migrator.ts";
import type { PostgresStorage } from "../src/db/postgres/engine.ts";
import { createDatabase, dropDatabase, withSession } from "../src/db/postgres/session.ts";
import { formatDatabaseUrl, parseDatabaseUrl } from "../src/db/postgres/url.ts";
import type { SqliteStorage } from "../src/db/sqlite/engine.ts";
import { type EngineName, loadEngine, type Storage } from "../src/db/storage.ts";
import { recordResponses } from "./contract.ts";
import { makeTempDir, silentLogger, testConfig } from "./helpers.ts";

/** The admin URL: a database to connect to (postgres) as a role that may create databases. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL || undefined;

/** The engines this run covers. */
export const ENGINES: EngineName[] = TEST_DATABASE_URL ? ["sqlite", "postgres"] : ["sqlite"];

/** `describe` once per engine, the engine's name in the title. */
export function describeEngines(title: string, body: (engine: EngineName) => void): void {
  describe.each(ENGINES)(`${title} (%s)`, body);
}

/** `describe` for PostgreSQL-only behaviour: skipped (test/global-setup.ts says so once) without a server. */
export const describePostgres = TEST_DATABASE_URL ? describe : describe.skip;

function adminUrl() {
  if (!TEST_DATABASE_URL) throw new Error("TEST_DATABASE_URL is not set");
  const parsed = parseDatabaseUrl(TEST_DATABASE_URL);
  if (typeof parsed === "string") throw new Error(`TEST_DATABASE_URL ${parsed}`);
  return parsed;
}

const ADMIN_SESSION = {
  statementTimeoutMs: 0,
  lockTimeoutMs: 0,
  idleInTransactionTimeoutMs: 0,
  applicationName: "tests:admin",
};

/** Runs `work` on a session to the admin database (or to `database`). */
export function withAdminSession<T>(
  work: Parameters<typeof withSession<T>>[1],
  database?: string,
): Promise<T> {
  return withSession({ url: adminUrl(), session: ADMIN_SESSION, connectTimeoutMs: 5_000 }, work, database);
}

let counter = 0;

export interface TestDatabase {
  name: string;
  /** The admin URL pointed at this database. */
  url: string;
  drop(): Promise<void>;
}

/** A new, empty database on the test server. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `test_${process.pid}_${++counter}_${Math.random().toString(36).slice(2, 8)}`;
  await withAdminSession((client) => createDatabase(client, name));
  return {
    name,
    url: formatDatabaseUrl(adminUrl(), { database: name }),
    drop: () => withAdminSession((client) => dropDatabase(client, name)),
  };
}

/**
 * The environment that points the service and its scripts at a fresh database of `engine`: a file
 * in `dir`, or a new PostgreSQL database (dropped after the test). Backups go to dir/backups.
 */
export async function engineEnv(engine: EngineName, dir: string): Promise<Record<string, string>> {
  const backupDir = path.join(dir, "backups");
  if (engine === "sqlite") return { DATABASE_PATH: path.join(dir, "data", "app.db"), BACKUP_DIR: backupDir };
  const database = await createTestDatabase();
  onTestFinished(() => database.drop());
  return { DATABASE_URL: database.url, BACKUP_DIR: backupDir };
}

export interface EngineTestApp {
  engineName: EngineName;
  app: Express;
  storage: Storage;
  config: Config;
  dir: string;
  close(): Promise<void>;
}

/** A Storage over a fresh database of `engine`, not yet migrated; `close` drops what it made. */
export async function openTestStorage(
  engine: EngineName,
  env: Record<string, string> = {},
): Promise<{ storage: Storage; config: Config; dir: string; close(): Promise<void> }> {
  const dir = makeTempDir();
  const database = engine === "postgres" ? await createTestDatabase() : undefined;
  const config = testConfig(dir, { ...(database && { DATABASE_URL: database.url }), ...env });
  const storage = await (await loadEngine(config, silentLogger)).open();
  return {
    storage,
    config,
    dir,
    async close() {
      await storage.close();
      await database?.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** createTestApp (helpers.ts) on either engine: a migrated database and the app over it. */
export async function createEngineTestApp(
  engine: EngineName,
  env: Record<string, string> = {},
): Promise<EngineTestApp> {
  const { storage, config, dir, close } = await openTestStorage(engine, env);
  await runMigrations({
    storage,
    migrationsDir: config.migrationsDir,
    backupDir: config.backupDir,
    logger: silentLogger,
  });
  // Its responses are checked against its /openapi.json after each test (test/contract-setup.ts).
  const app = recordResponses(createApp({ config, storage, logger: silentLogger }));
  return { engineName: engine, app, storage, config, dir, close };
}

export function asSqlite(storage: Storage): SqliteStorage {
  if (storage.engine.name !== "sqlite") throw new Error(`expected SQLite, got ${storage.engine.name}`);
  return storage as SqliteStorage;
}

export function asPostgres(storage: Storage): PostgresStorage {
  if (storage.engine.name !== "postgres") throw new Error(`expected PostgreSQL, got ${storage.engine.name}`);
  return storage as PostgresStorage;
}
