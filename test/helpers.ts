// Test fixtures: a fresh temporary database with migrations applied, an app over it, and real
// child processes of the service. Nothing is shared between tests.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Express } from "express";
import { pino } from "pino";
import { afterEach } from "vitest";
import { createApp } from "../src/app.ts";
import { createOnlineRestore, type OnlineRestore } from "../src/backups/online-restore.ts";
import { type Config, loadConfig } from "../src/config.ts";
import { runMigrations } from "../src/db/migrator.ts";
import { createSqliteEngine, type SqliteStorage } from "../src/db/sqlite/engine.ts";
import { createMaintenance } from "../src/http/maintenance.ts";
import { createLogger, type Logger } from "../src/logger.ts";
import { recordResponses } from "./contract.ts";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export function makeTempDir(prefix = "svc-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface Cleanup {
  /** Runs `fn` after the current test, newest first. */
  defer(fn: () => unknown): void;
  /** A fresh temporary folder, removed after the test. */
  tempDir(prefix?: string): string;
  /** A child process, killed (SIGKILL) after the test if it still runs. */
  track<T extends Child>(child: T): T;
  /** Runs a script of this project to its exit: exit code, stdout lines (`out`: the text of each) and stderr. */
  run(script: string, args: string[], env: Record<string, string>): Promise<ScriptResult>;
}

export interface ScriptResult {
  code: number | null;
  out: string[];
  stdout: LogLine[];
  stderr: string;
}

/** Call once at the top of a test file: what each test defers is undone after it. */
export function cleanupAfterEach(): Cleanup {
  const pending: (() => unknown)[] = [];
  afterEach(async () => {
    for (const fn of pending.splice(0).reverse()) await fn();
  });
  const defer = (fn: () => unknown) => {
    pending.push(fn);
  };
  const track = <T extends Child>(child: T): T => {
    defer(() => child.process.kill("SIGKILL"));
    return child;
  };
  return {
    defer,
    track,
    async run(script, args, env) {
      const child = track(runNode(script, args, env));
      const { code } = await child.exited;
      const stdout = child.logs;
      return { code, out: stdout.map((l) => l.msg ?? JSON.stringify(l)), stdout, stderr: child.stderr() };
    },
    tempDir(prefix) {
      const dir = makeTempDir(prefix);
      defer(() => fs.rmSync(dir, { recursive: true, force: true }));
      return dir;
    },
  };
}

export function testConfig(dir: string, env: Record<string, string> = {}): Config {
  return loadConfig(
    { DATABASE_PATH: path.join(dir, "data", "app.db"), LOG_LEVEL: "silent", NODE_ENV: "test", ...env },
    dir,
  );
}

export const silentLogger: Logger = createLogger({ logLevel: "silent" });

/** A SQLite storage over the configuration's database (created if missing), not yet migrated. */
export function openSqliteStorage(
  config: Pick<Config, "databasePath" | "backupDir" | "busyTimeoutMs">,
): Promise<SqliteStorage> {
  return createSqliteEngine(config).open();
}

export interface TestApp {
  app: Express;
  storage: SqliteStorage;
  config: Config;
  dir: string;
  /** The online restore behind POST /admin/restore (mounted when ADMIN_TOKEN is set). */
  restorer: OnlineRestore;
  /** Holds the next restore where it pauses the background jobs, until the returned function is called. */
  holdRestore(): () => void;
  close(): Promise<void>;
}

export async function createTestApp(env: Record<string, string> = {}): Promise<TestApp> {
  const dir = makeTempDir();
  const config = testConfig(dir, env);
  const storage = await openSqliteStorage(config);
  await runMigrations({
    storage,
    migrationsDir: config.migrationsDir,
    backupDir: config.backupDir,
    logger: silentLogger,
  });
  const maintenance = createMaintenance();
  let held: Promise<void> | undefined;
  const jobs = { pause: async () => held, resume: () => {} };
  const restorer = createOnlineRestore({ storage, maintenance, jobs, config, logger: silentLogger });
  // Its responses are checked against its /openapi.json after each test (test/contract-setup.ts).
  const app = recordResponses(
    createApp({ config, storage, logger: silentLogger, maintenance, operations: { restorer } }),
  );
  return {
    app,
    storage,
    config,
    dir,
    restorer,
    holdRestore() {
      let release!: () => void;
      held = new Promise((resolve) => {
        release = resolve;
      });
      return () => {
        held = undefined;
        release();
      };
    },
    async close() {
      await storage.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes a migrations folder holding the project's migrations plus the given extra modules. */
export function migrationsWith(dir: string, extra: Record<string, string>): string {
  const target = path.join(dir, "migrations");
  fs.mkdirSync(target, { recursive: true });
  // Migrations import kysely: let Node's resolution find the project's packages from here.
  if (!fs.existsSync(path.join(dir, "node_modules")))
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  for (const file of fs.readdirSync(path.join(ROOT, "migrations"))) {
    fs.copyFileSync(path.join(ROOT, "migrations", file), path.join(target, file));
  }
  for (const [file, source] of Object.entries(extra)) fs.writeFileSync(path.join(target, file), source);
  return target;
}

export type LogLine = Record<string, unknown> & { msg?: string };

export interface Child {
  process: ChildProcess;
  logs: LogLine[];
  stderr(): string;
  /** Resolves with the first log line that matches; rejects if the process exits first. */
  waitForLog(match: (line: LogLine) => boolean): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

// What a child process inherits from the test runner's environment besides what a test gives it:
// PATH, and libfaketime's variables, so `faketime -f +400d npm test` moves the children's clocks too.
const INHERITED = ["PATH", "LD_PRELOAD", "FAKETIME", "FAKETIME_NO_CACHE", "DONT_FAKE_MONOTONIC"];

/** A clean environment for a child process: the inherited variables above, then `env`. */
export function childEnv(env: Record<string, string> = {}): Record<string, string> {
  const inherited = INHERITED.flatMap((name) => {
    const value = process.env[name];
    return value === undefined ? [] : [[name, value]];
  });
  return { ...Object.fromEntries(inherited), ...env };
}

/** Runs a Node script of this project as a real child process, collecting its JSON log lines. */
export function runNode(
  script: string,
  args: string[],
  env: Record<string, string>,
  options: { uid?: number; gid?: number } = {},
): Child {
  const child = spawn(process.execPath, [script, ...args], {
    cwd: ROOT,
    env: childEnv({ LOG_LEVEL: "info", NODE_ENV: "test", ...env }),
    stdio: ["ignore", "pipe", "pipe"],
    ...options,
  });
  const logs: LogLine[] = [];
  const waiters = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk;
  });
  createInterface({ input: child.stdout! }).on("line", (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text };
    }
    logs.push(line);
    for (const waiter of waiters) {
      if (waiter.match(line)) {
        waiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  return {
    process: child,
    logs,
    stderr: () => err,
    exited,
    waitForLog(match) {
      const seen = logs.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.add({ match, resolve });
        void exited.then(({ code, signal }) =>
          reject(
            new Error(`process exited (code ${code}, signal ${signal}) before the log line; stderr: ${err}`),
          ),
        );
      });
    },
  };
}

export interface ServiceChild extends Child {
  port: number;
}

/** Starts the service (src/main.ts) and resolves once it listens. */
export async function startService(
  env: Record<string, string>,
  options: { uid?: number; gid?: number } = {},
): Promise<ServiceChild> {
  const child = runNode("src/main.ts", [], { PORT: "0", HOST: "127.0.0.1", ...env }, options);
  const listening = await child.waitForLog((l) => l.msg === "listening");
  return Object.assign(child, { port: listening.port as number });
}

/** One HTTP request to a service child on loopback; the body is sent and parsed as JSON. */
export async function callService(port: number, method: string, url: string, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${port}${url}`, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as any) : undefined };
}

/** A logger whose lines are kept in memory, for asserting what was logged. */
export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: "info" },
    { write: (text: string) => lines.push(JSON.parse(text) as LogLine) },
  );
  return { logger, lines };
}

/**
 * Starts a POST whose body is held back until the server has answered `100 Continue`: from then
 * on the request is in flight inside the service. `finish()` sends the body.
 */
export function inFlightPost(port: number, title = "sent during shutdown") {
  const body = JSON.stringify({ title });
  const req = http.request({
    port,
    host: "127.0.0.1",
    method: "POST",
    path: "/api/notes",
    agent: false,
    headers: {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(body),
      Expect: "100-continue",
    },
  });
  const response = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
        res.on("error", reject);
      });
      req.on("error", reject);
    },
  );
  const accepted = new Promise<void>((resolve) => req.on("continue", () => resolve()));
  req.flushHeaders();
  return { accepted, response, finish: () => req.end(body) };
}

/** Opens and closes a TCP connection: "connected", or the error code (ECONNREFUSED, ...). */
export function connect(port: number): Promise<"connected" | string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
  });
}
