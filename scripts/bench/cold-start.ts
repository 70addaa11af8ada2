// Cold start: from spawning `node src/main.ts` to the first 200 from /health, against spawning a
// Node process that does nothing (the floor no service code can go below).
import { spawn } from "node:child_process";
import http from "node:http";
import { startServer } from "./processes.ts";
import { median, round } from "./stats.ts";

export interface ColdStartRow {
  /** Median ms from spawn to the first 200 on /health. */
  firstHealthyMs: number;
  /** Median ms from spawn to the "listening" log line. */
  listeningMs: number;
  /** Median ms for `node -e 0` to start and exit on this machine. */
  nodeAloneMs: number;
  runs: number[];
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

export async function runColdStarts(env: Record<string, string>, runs: number): Promise<ColdStartRow> {
  const healthy: number[] = [];
  const listening: number[] = [];
  const alone: number[] = [];
  for (let n = 0; n < runs; n++) {
    alone.push(await nodeAlone());
    const started = performance.now();
    const server = await startServer("src/main.ts", [], env);
    try {
      const status = await getStatus(server.port, "/health");
      if (status !== 200) throw new Error(`cold start: /health answered ${status}`);
      healthy.push(performance.now() - started);
      listening.push(server.startMs);
    } finally {
      await server.stop();
    }
  }
  return {
    firstHealthyMs: round(median(healthy)),
    listeningMs: round(median(listening)),
    nodeAloneMs: round(median(alone)),
    runs: healthy.map((ms) => round(ms)),
  };
}
