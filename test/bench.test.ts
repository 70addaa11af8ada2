// npm run bench is a tool, not a test: this only checks that it runs end to end on tiny settings
// and writes a well-formed result with every row. No figure is asserted.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { TEST_DATABASE_URL } from "./engines.ts";
import { childEnv, makeTempDir, ROOT } from "./helpers.ts";

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["scripts/bench.ts", ...args], {
    cwd: ROOT,
    env: childEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, stdout, stderr })));
}

const number = expect.any(Number);

describe("npm run bench", () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir("bench-test-");
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("runs every measurement on --quick settings and writes each row to the JSON file", async () => {
    const out = path.join(dir, "result.json");
    // With a PostgreSQL server for the tests, the PostgreSQL rows too.
    const postgres = TEST_DATABASE_URL ? ["--engine", "postgres", "--database-url", TEST_DATABASE_URL] : [];
    const { code, stdout, stderr } = await runBench(["--quick", "--out", out, ...postgres]);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain("| target");

    const result = JSON.parse(fs.readFileSync(out, "utf8"));
    expect(result.settings.quick).toBe(true);
    expect(result.machine).toMatchObject({ cpus: number, node: process.version, sqlite: expect.any(String) });
    expect(result.http.map((row: { name: string }) => row.name)).toEqual([
      "bare express",
      "helmet + pino-http",
      "live",
      "health",
      "read note",
      "read note, metrics on",
      "read note, metrics on, scraped",
      "list notes",
      "create note",
      "health, empty db",
      `health, ${result.settings.bigNotes} notes`,
      ...(TEST_DATABASE_URL
        ? ["health, postgres", "read note, postgres", "list notes, postgres", "create note, postgres"]
        : []),
    ]);
    for (const row of result.http) {
      expect(row).toMatchObject({
        reqPerSec: number,
        p50Ms: number,
        p99Ms: number,
        vsBare: number,
        cpuUsPerRequest: number,
        failures: 0,
      });
      expect(row.reqPerSec).toBeGreaterThan(0);
      expect(row.rounds).toHaveLength(result.settings.rounds);
    }
    expect(result.healthBySize).toEqual({
      emptyReqPerSec: number,
      bigReqPerSec: number,
      emptyOverBig: number,
    });
    expect(result.metrics).toMatchObject({
      offReqPerSec: number,
      onReqPerSec: number,
      scrapedReqPerSec: number,
      onOverOff: number,
      scrapedOverOn: number,
      offCpuUs: number,
      onCpuUs: number,
      scrapedCpuUs: number,
      scrapeIntervalMs: 100,
    });
    expect(result.metrics.scrapes).toBeGreaterThanOrEqual(0);
    expect(result.inProcess.map((row: { name: string }) => row.name)).toEqual(["point read", "insert"]);
    for (const row of result.inProcess) {
      expect(row).toMatchObject({ kyselyOpsPerSec: number, rawOpsPerSec: number, timeRatio: number });
    }
    expect(result.backup.length).toBeGreaterThanOrEqual(3);
    for (const row of result.backup) {
      expect(row).toMatchObject({
        name: expect.any(String),
        ms: number,
        vsCopy: number,
        readerWorstMs: number,
      });
      expect(row.bytes).toBeGreaterThan(0);
    }
    expect(result.coldStart).toMatchObject({
      firstHealthyMs: number,
      warmCacheFirstHealthyMs: number,
      listeningMs: number,
      nodeAloneMs: number,
    });
    expect(result.memory.rssMb).toBeGreaterThan(0);
    expect(result.targets.length).toBeGreaterThanOrEqual(9);
    if (TEST_DATABASE_URL) {
      expect(result.machine.postgres).toMatch(/^\d+\.\d+/);
      expect(result.targets.map((t: { name: string }) => t.name)).toContain(
        "GET /api/notes/:id on PostgreSQL vs on SQLite",
      );
    }
    for (const target of result.targets) {
      expect(target).toEqual({
        name: expect.any(String),
        goal: expect.any(String),
        value: number,
        met: expect.any(Boolean),
      });
    }
  }, 180_000);

  it("refuses a bad option with the usage and exit status 2", async () => {
    const { code, stderr } = await runBench(["--rounds", "none"]);
    expect(code).toBe(2);
    expect(stderr).toContain("--rounds expects a positive number");
    const noUrl = await runBench(["--engine", "postgres"]);
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toContain("--engine postgres needs --database-url");
  });
});
