// Cold start: from spawning `node src/main.ts` to the first 200 from /health, against the same
// for the bare Express baseline and a Node process that does nothing (the floor). CPU time to the
// first 200 is reported too: on a shared machine it varies far less than wall time. The service
// starts two ways: as `npm start` does (main.ts turns Node's compile cache on for the modules it
// loads, so main.ts itself is type-stripped every time) and as the Docker image does
// (NODE_COMPILE_CACHE set before Node starts, filled by scripts/warm-compile-cache.ts).
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import { ROOT, startServer } from "./processes.ts";
import { median, round } from "./stats.ts";

export interface ColdStartRow {
  /** Median ms from spawn to the first 200 on /health, started as `npm start` does. */
  firstHealthyMs: number;
  /** The same, started as the Docker image does: NODE_COMPILE_CACHE set, filled beforehand. */
  warmCacheFirstHealthyMs: number;
  warmCacheCpuMs: number;
  /** Median ms from spawn to the "listening" log line. */
  listeningMs: number;
  /** Median CPU ms (user + system) the service used up to its first 200. */
  cpuMs: number;
  /** The same for the bare Express baseline (GET /). */
  bareFirst200Ms: number;
  bareCpuMs: number;
  /** Median ms for `node -e 0` to start and exit on this machine. */
  nodeAloneMs: number;
  runs: number[];
}

// utime + stime from /proc/<pid>/stat, in clock ticks (100 per second on Linux).
function cpuMsOf(pid: number): number {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return Number.NaN;
  }
}

function getStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      })
      .on("error", reject);
  });
}

function nodeAlone(): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    spawn(process.execPath, ["-e", "0"], { stdio: "ignore" })
      .once("exit", () => resolve(performance.now() - started))
      .once("error", reject);
  });
}

async function firstOk(script: string, path: string, env: Record<string, string>) {
  const started = performance.now();
  const server = await startServer(script, [], env);
  try {
    const status = await getStatus(server.port, path);
    if (status !== 200) throw new Error(`cold start: ${script} answered ${status} on ${path}`);
    return { ms: performance.now() - started, listeningMs: server.startMs, cpuMs: cpuMsOf(server.pid) };
  } finally {
    await server.stop();
  }
}

function warmCompileCache(cacheDir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    spawn(process.execPath, ["scripts/warm-compile-cache.ts"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", NODE_COMPILE_CACHE: cacheDir },
      stdio: "ignore",
    })
      .once("exit", (code) =>
        code === 0 ? resolve() : reject(new Error(`warm-compile-cache exited with code ${code}`)),
      )
      .once("error", reject);
  });
}

export async function runColdStarts(
  env: Record<string, string>,
  runs: number,
  cacheDir: string,
): Promise<ColdStartRow> {
  await warmCompileCache(cacheDir);
  const service: Awaited<ReturnType<typeof firstOk>>[] = [];
  const warmCache: Awaited<ReturnType<typeof firstOk>>[] = [];
  const bare: Awaited<ReturnType<typeof firstOk>>[] = [];
  const alone: number[] = [];
  for (let n = 0; n < runs; n++) {
    alone.push(await nodeAlone());
    bare.push(await firstOk("scripts/bench/baseline-server.ts", "/", {}));
    service.push(await firstOk("src/main.ts", "/health", env));
    warmCache.push(await firstOk("src/main.ts", "/health", { ...env, NODE_COMPILE_CACHE: cacheDir }));
  }
  const med = (values: number[]) => round(median(values));
  return {
    firstHealthyMs: med(service.map((r) => r.ms)),
    warmCacheFirstHealthyMs: med(warmCache.map((r) => r.ms)),
    warmCacheCpuMs: med(warmCache.map((r) => r.cpuMs)),
    listeningMs: med(service.map((r) => r.listeningMs)),
    cpuMs: med(service.map((r) => r.cpuMs)),
    bareFirst200Ms: med(bare.map((r) => r.ms)),
    bareCpuMs: med(bare.map((r) => r.cpuMs)),
    nodeAloneMs: med(alone),
    runs: service.map((r) => round(r.ms)),
  };
}
