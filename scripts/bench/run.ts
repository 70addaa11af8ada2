// One run of the benchmark: fixtures, servers, the load generator, then each measurement in turn.
// Everything the targets compare is measured here, in the same run, on the same machine.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { type BackupRow, runBackups } from "./backup.ts";
import { type ColdStartRow, runColdStarts } from "./cold-start.ts";
import { buildFixture, cachedFixture } from "./fixtures.ts";
import { type HttpCase, type HttpRow, runHttpCases } from "./http.ts";
import { type InProcessRow, runInProcess } from "./in-process.ts";
import { ROOT, type ServerProcess, startLoader, startServer } from "./processes.ts";
import { startScraper } from "./scrape.ts";
import { median, round } from "./stats.ts";

export interface BenchSettings {
  quick: boolean;
  /** Notes in the database the service answers from. */
  notes: number;
  /** Notes in the large database: /health's "1M" case and the backup. */
  bigNotes: number;
  bigBodyBytes: number;
  rounds: number;
  warmupSeconds: number;
  durationSeconds: number;
  requestsPerRound: number | undefined;
  connections: number;
  coldStarts: number;
  inProcessRoundMs: number;
  backupRounds: number;
  /** Pause between two scrapes of /metrics in the "scraped" case: 150 times Prometheus' usual 15 s. */
  scrapeIntervalMs: number;
  cacheDir: string;
  /** "postgres": the service's HTTP cases again on PostgreSQL, beside SQLite's. */
  engine: "sqlite" | "postgres";
  /** With engine postgres: a server and role that may create the bench's own database. */
  databaseUrl: string | undefined;
}

export function defaultSettings(quick: boolean): BenchSettings {
  const cacheDir = path.join(os.tmpdir(), "express-sqlite-template-bench");
  return quick
    ? {
        quick,
        notes: 1_000,
        bigNotes: 5_000,
        bigBodyBytes: 740,
        rounds: 2,
        warmupSeconds: 1,
        durationSeconds: 1,
        requestsPerRound: 200,
        connections: 10,
        coldStarts: 1,
        inProcessRoundMs: 50,
        backupRounds: 2,
        scrapeIntervalMs: 100,
        cacheDir,
        engine: "sqlite",
        databaseUrl: undefined,
      }
    : {
        quick,
        notes: 100_000,
        // ~1 GB: four notes of 740-byte bodies fill a 4 KiB page.
        bigNotes: 1_000_000,
        bigBodyBytes: 740,
        rounds: 5,
        warmupSeconds: 2,
        durationSeconds: 3,
        requestsPerRound: undefined,
        connections: 10,
        coldStarts: 7,
        inProcessRoundMs: 500,
        backupRounds: 3,
        scrapeIntervalMs: 100,
        cacheDir,
        engine: "sqlite",
        databaseUrl: undefined,
      };
}

export interface BenchResult {
  startedAt: string;
  machine: {
    cpus: number;
    cpuModel: string;
    memoryBytes: number;
    node: string;
    sqlite: string;
    /** With --engine postgres: the server's version. */
    postgres?: string;
    platform: string;
    loadAverageBefore: number[];
    loadAverageAfter: number[];
  };
  settings: BenchSettings;
  fixtures: { notesFile: string; bigFile: string; bigBytes: number; bigBuiltMs: number };
  http: (HttpRow & { vsBare: number; vsMiddleware: number; p99VsBare: number })[];
  healthBySize: { emptyReqPerSec: number; bigReqPerSec: number; emptyOverBig: number };
  /** GET /api/notes/:id without metrics, with them, and with them while /metrics is scraped. */
  metrics: {
    offReqPerSec: number;
    onReqPerSec: number;
    scrapedReqPerSec: number;
    onOverOff: number;
    scrapedOverOn: number;
    /** The server's CPU time per request (µs) in the three cases. */
    offCpuUs: number;
    onCpuUs: number;
    scrapedCpuUs: number;
    scrapeIntervalMs: number;
    scrapes: number;
    scrapeMedianMs: number;
    scrapeMaxMs: number;
  };
  inProcess: InProcessRow[];
  backup: BackupRow[];
  coldStart: ColdStartRow;
  /** The service's resident memory after the last round of POSTs: all, own (anonymous), mapped files. */
  memory: {
    rssMb: number | undefined;
    anonMb: number | undefined;
    fileMb: number | undefined;
    /** The bare Express baseline's, after its last round: the floor for a Node HTTP server here. */
    bareRssMb: number | undefined;
    /** With --engine postgres: the service on PostgreSQL, after its round of POSTs. */
    postgresRssMb?: number | undefined;
  };
  targets: Target[];
}

export interface Target {
  name: string;
  goal: string;
  value: number;
  met: boolean;
}

const NOTE_BODY = JSON.stringify({ title: "a note from the bench", body: "x".repeat(200) });
const METRICS_TOKEN = "bench-metrics-token-0123456789abcdef";

export async function runBench(
  settings: BenchSettings,
  progress: (message: string) => void,
): Promise<BenchResult> {
  const startedAt = new Date().toISOString();
  const loadAverageBefore = os.loadavg();
  const migrationsDir = path.join(ROOT, "migrations");
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-run-"));
  const servers: ServerProcess[] = [];
  const loader = startLoader();
  let postgres: import("./postgres.ts").PostgresFixture | undefined;
  try {
    progress(`building a database of ${settings.notes} notes`);
    const notesFile = path.join(workDir, "notes", "app.db");
    await buildFixture({ file: notesFile, notes: settings.notes, bodyBytes: 200, migrationsDir });
    const emptyFile = path.join(workDir, "empty", "app.db");
    await buildFixture({ file: emptyFile, notes: 0, bodyBytes: 0, migrationsDir });
    progress(`building or reusing a database of ${settings.bigNotes} notes`);
    const big = settings.quick
      ? await (async () => {
          const file = path.join(workDir, "big", "app.db");
          const started = performance.now();
          await buildFixture({
            file,
            notes: settings.bigNotes,
            bodyBytes: settings.bigBodyBytes,
            migrationsDir,
          });
          return { file, built: true, ms: performance.now() - started };
        })()
      : await cachedFixture(settings.cacheDir, {
          notes: settings.bigNotes,
          bodyBytes: settings.bigBodyBytes,
          migrationsDir,
        });

    if (settings.engine === "postgres") {
      if (!settings.databaseUrl) throw new Error("--engine postgres needs --database-url");
      progress(`building a PostgreSQL database of ${settings.notes} notes`);
      const { buildPostgresFixture } = await import("./postgres.ts");
      postgres = await buildPostgresFixture({
        adminUrl: settings.databaseUrl,
        notes: settings.notes,
        bodyBytes: 200,
        migrationsDir,
        backupDir: path.join(workDir, "backups"),
      });
    }

    const serviceEnv = (file: string) => ({
      DATABASE_PATH: file,
      BACKUP_DIR: path.join(workDir, "backups"),
      PORT: "0",
      HOST: "127.0.0.1",
      NODE_ENV: "production",
      LOG_LEVEL: "info",
    });
    const start = async (script: string, args: string[], env: Record<string, string>) => {
      const server = await startServer(script, args, env);
      servers.push(server);
      return server;
    };
    // The same notes, for a service with metrics on (METRICS_TOKEN set).
    const metricsFile = path.join(workDir, "metrics", "app.db");
    fs.mkdirSync(path.dirname(metricsFile));
    fs.copyFileSync(notesFile, metricsFile);
    progress("starting servers");
    const [bare, middleware, service, serviceEmpty, serviceBig, serviceMetrics] = await Promise.all([
      start("scripts/bench/baseline-server.ts", [], {}),
      start("scripts/bench/baseline-server.ts", ["--middleware"], {}),
      start("src/main.ts", [], serviceEnv(notesFile)),
      start("src/main.ts", [], serviceEnv(emptyFile)),
      start("src/main.ts", [], serviceEnv(big.file)),
      start("src/main.ts", [], { ...serviceEnv(metricsFile), METRICS_TOKEN }),
    ]);
    const scrapes: Awaited<ReturnType<ReturnType<typeof startScraper>["stop"]>>[] = [];
    const servicePostgres = postgres
      ? await start("src/main.ts", [], { ...serviceEnv(notesFile), DATABASE_URL: postgres.url })
      : undefined;

    let memoryAfterWrites: ReturnType<ServerProcess["memory"]>;
    let memoryPostgres: ReturnType<ServerProcess["memory"]>;
    let bareMemory: ReturnType<ServerProcess["memory"]>;
    // The same service and requests over a PostgreSQL server on this machine's loopback.
    const postgresCases: HttpCase[] = servicePostgres
      ? [
          { name: "health, postgres", server: servicePostgres, job: { method: "GET", path: "/health" } },
          {
            name: "read note, postgres",
            server: servicePostgres,
            job: { method: "GET", path: "/api/notes/:id", randomIdMax: settings.notes },
          },
          {
            name: "list notes, postgres",
            server: servicePostgres,
            job: { method: "GET", path: "/api/notes?limit=20" },
          },
          {
            name: "create note, postgres",
            server: servicePostgres,
            job: { method: "POST", path: "/api/notes", body: NOTE_BODY },
            afterRound: () => {
              memoryPostgres = servicePostgres.memory();
            },
          },
        ]
      : [];
    const cases: HttpCase[] = [
      {
        name: "bare express",
        server: bare,
        job: { method: "GET", path: "/" },
        afterRound: () => {
          bareMemory = bare.memory();
        },
      },
      { name: "helmet + pino-http", server: middleware, job: { method: "GET", path: "/" } },
      { name: "live", server: service, job: { method: "GET", path: "/health/live" } },
      { name: "health", server: service, job: { method: "GET", path: "/health" } },
      {
        name: "read note",
        server: service,
        job: { method: "GET", path: "/api/notes/:id", randomIdMax: settings.notes },
      },
      // Right after "read note": the three compare best measured as close together as possible.
      {
        name: "read note, metrics on",
        server: serviceMetrics,
        job: { method: "GET", path: "/api/notes/:id", randomIdMax: settings.notes },
      },
      {
        name: "read note, metrics on, scraped",
        server: serviceMetrics,
        job: { method: "GET", path: "/api/notes/:id", randomIdMax: settings.notes },
        beside: () => {
          const scraper = startScraper({
            port: serviceMetrics.port,
            token: METRICS_TOKEN,
            intervalMs: settings.scrapeIntervalMs,
          });
          return { stop: async () => scrapes.push(await scraper.stop()) };
        },
      },
      { name: "list notes", server: service, job: { method: "GET", path: "/api/notes?limit=20" } },
      {
        name: "create note",
        server: service,
        job: { method: "POST", path: "/api/notes", body: NOTE_BODY },
        afterRound: () => {
          memoryAfterWrites = service.memory();
        },
      },
      { name: "health, empty db", server: serviceEmpty, job: { method: "GET", path: "/health" } },
      {
        name: `health, ${settings.bigNotes} notes`,
        server: serviceBig,
        job: { method: "GET", path: "/health" },
      },
      ...postgresCases,
    ];
    const rows = await runHttpCases(loader, cases, settings, progress);
    for (const server of servers.splice(0)) await server.stop();
    await loader.stop();

    const [bareRow, middlewareRow] = rows;
    const http = rows.map((row) => ({
      ...row,
      vsBare: round(row.reqPerSec / bareRow!.reqPerSec),
      vsMiddleware: round(row.reqPerSec / middlewareRow!.reqPerSec),
      p99VsBare: round(row.p99Ms / bareRow!.p99Ms),
    }));
    const byName = (name: string) => http.find((row) => row.name === name)!;
    const healthBySize = {
      emptyReqPerSec: byName("health, empty db").reqPerSec,
      bigReqPerSec: byName(`health, ${settings.bigNotes} notes`).reqPerSec,
      emptyOverBig: round(
        byName("health, empty db").reqPerSec / byName(`health, ${settings.bigNotes} notes`).reqPerSec,
      ),
    };

    // Warm-up rounds are left out of the scrape figures.
    const measured = scrapes.slice(1);
    const metrics = {
      offReqPerSec: byName("read note").reqPerSec,
      onReqPerSec: byName("read note, metrics on").reqPerSec,
      scrapedReqPerSec: byName("read note, metrics on, scraped").reqPerSec,
      onOverOff: round(byName("read note, metrics on").reqPerSec / byName("read note").reqPerSec),
      scrapedOverOn: round(
        byName("read note, metrics on, scraped").reqPerSec / byName("read note, metrics on").reqPerSec,
      ),
      offCpuUs: byName("read note").cpuUsPerRequest,
      onCpuUs: byName("read note, metrics on").cpuUsPerRequest,
      scrapedCpuUs: byName("read note, metrics on, scraped").cpuUsPerRequest,
      scrapeIntervalMs: settings.scrapeIntervalMs,
      scrapes: measured.reduce((sum, r) => sum + r.scrapes, 0),
      scrapeMedianMs: round(median(measured.map((r) => r.medianMs).filter(Number.isFinite))),
      scrapeMaxMs: round(Math.max(0, ...measured.map((r) => r.maxMs))),
    };

    progress("in process: Kysely against raw statements");
    const inProcessFile = path.join(workDir, "in-process", "app.db");
    fs.mkdirSync(path.dirname(inProcessFile));
    fs.copyFileSync(notesFile, inProcessFile);
    const inProcess = await runInProcess({
      file: inProcessFile,
      notes: settings.notes,
      rounds: settings.rounds,
      roundMs: settings.inProcessRoundMs,
    });

    progress(`backups of ${(fs.statSync(big.file).size / 2 ** 20).toFixed(0)} MiB`);
    const backup = await runBackups({
      file: big.file,
      notes: settings.bigNotes,
      workDir,
      rounds: settings.backupRounds,
    });

    progress("cold starts");
    const coldStart = await runColdStarts(
      serviceEnv(notesFile),
      settings.coldStarts,
      path.join(workDir, "compile-cache"),
    );

    const point = inProcess.find((row) => row.name === "point read")!;
    const backupRow = (prefix: string) => backup.find((row) => row.name.startsWith(prefix))!;
    const mb = (bytes: number | undefined) => (bytes === undefined ? undefined : round(bytes / 2 ** 20));
    const memory = {
      rssMb: mb(memoryAfterWrites?.rssBytes),
      anonMb: mb(memoryAfterWrites?.anonBytes),
      fileMb: mb(memoryAfterWrites?.fileBytes),
      bareRssMb: mb(bareMemory?.rssBytes),
      ...(postgres && { postgresRssMb: mb(memoryPostgres?.rssBytes) }),
    };
    const targets: Target[] = [
      target("GET /api/notes/:id vs bare Express", ">= 0.85", byName("read note").vsBare, (v) => v >= 0.85),
      target("POST /api/notes vs bare Express", ">= 0.65", byName("create note").vsBare, (v) => v >= 0.65),
      target("GET /health vs bare Express", ">= 0.85", byName("health").vsBare, (v) => v >= 0.85),
      target("GET /api/notes/:id, metrics on vs off", ">= 0.9", metrics.onOverOff, (v) => v >= 0.9),
      target(
        `GET /api/notes/:id, /metrics scraped every ${settings.scrapeIntervalMs} ms vs not`,
        ">= 0.95",
        metrics.scrapedOverOn,
        (v) => v >= 0.95,
      ),
      target(
        "GET /health: empty db over big db (req/s)",
        "<= 1.2",
        healthBySize.emptyOverBig,
        (v) => v <= 1.2,
      ),
      target("Kysely point read time vs raw statement", "<= 1.3", point.timeRatio, (v) => v <= 1.3),
      target("online backup API copy time vs file copy", "<= 2", backupRow("online").vsCopy, (v) => v <= 2),
      target("VACUUM INTO copy time vs file copy", "<= 2", backupRow("VACUUM").vsCopy, (v) => v <= 2),
      target(
        "takeOnlineBackup (copy, verify, fsync) vs file copy",
        "<= 2",
        backupRow("takeOnline").vsCopy,
        (v) => v <= 2,
      ),
      target(
        "cold start to first 200 on /health, as the Docker image starts (ms)",
        "< 300",
        coldStart.warmCacheFirstHealthyMs,
        (v) => v < 300,
      ),
      target("RSS after the write load (MB)", "< 120", memory.rssMb ?? Number.NaN, (v) => v < 120),
      ...(postgres
        ? [
            target(
              "GET /api/notes/:id on PostgreSQL vs on SQLite",
              ">= 0.6",
              round(byName("read note, postgres").reqPerSec / byName("read note").reqPerSec),
              (v) => v >= 0.6,
            ),
          ]
        : []),
    ];

    const probe = new BetterSqlite3(":memory:");
    const sqlite = probe.prepare("SELECT sqlite_version()").pluck().get() as string;
    probe.close();
    return {
      startedAt,
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? "unknown",
        memoryBytes: os.totalmem(),
        node: process.version,
        sqlite,
        ...(postgres && { postgres: postgres.serverVersion }),
        platform: `${os.platform()} ${os.release()} ${os.arch()}`,
        loadAverageBefore: loadAverageBefore.map((v) => round(v)),
        loadAverageAfter: os.loadavg().map((v) => round(v)),
      },
      settings,
      fixtures: {
        notesFile,
        bigFile: big.file,
        bigBytes: fs.statSync(big.file).size,
        bigBuiltMs: round(big.ms),
      },
      http,
      healthBySize,
      metrics,
      inProcess,
      backup,
      coldStart,
      memory,
      targets,
    };
  } finally {
    for (const server of servers) await server.stop();
    await loader.stop();
    await postgres?.drop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

function target(name: string, goal: string, value: number, ok: (v: number) => boolean): Target {
  return { name, goal, value, met: ok(value) };
}
