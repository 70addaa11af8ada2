// Child processes of the bench: servers (the service or a baseline) that log their port on
// stdout, and the load generator, driven over IPC.
import { type ChildProcess, fork, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { LoadJob, LoadResult } from "./load.ts";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface ServerProcess {
  port: number;
  pid: number;
  /** Milliseconds from spawn to the "listening" log line. */
  startMs: number;
  /** Resident memory now, from /proc (Linux): all of it, and the part that is the process's own
   * (heap, stacks) rather than mapped files such as the database under mmap; undefined elsewhere. */
  memory(): { rssBytes: number; anonBytes: number; fileBytes: number } | undefined;
  /** CPU time (user + system) used so far, in ms, from /proc (Linux); undefined elsewhere. */
  cpuMs(): number | undefined;
  stop(): Promise<void>;
}

// Servers still running when the bench exits for any reason but SIGKILL (an error, a signal, the
// test runner that started it going away and closing its stderr) are stopped with it, not orphaned.
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGTERM");
});
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, () => process.exit(130));
process.stderr.on("error", () => process.exit(1));

/** Starts `node <script>`, and resolves once it has logged {"msg":"listening","port":N}. */
export function startServer(
  script: string,
  args: string[],
  env: Record<string, string>,
): Promise<ServerProcess> {
  const started = performance.now();
  const child = spawn(process.execPath, [script, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return new Promise((resolve, reject) => {
    let pending = "";
    const onData = (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      for (let end = pending.indexOf("\n"); end >= 0; end = pending.indexOf("\n")) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        if (!line.includes('"listening"')) continue;
        const { port } = JSON.parse(line) as { port: number };
        // From here on the log is only drained, as a log shipper would: never parsed.
        child.stdout!.off("data", onData).on("data", () => {});
        resolve({
          port,
          pid: child.pid!,
          startMs: performance.now() - started,
          memory: () => readMemory(child.pid!),
          cpuMs: () => readCpuMs(child.pid!),
          stop: () => stopChild(child, exited),
        });
        return;
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) =>
      reject(new Error(`${script} exited (code ${code}) before listening: ${stderr.trim()}`)),
    );
  });
}

function readMemory(pid: number): { rssBytes: number; anonBytes: number; fileBytes: number } | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const field = (name: string) =>
    Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN) * 1024;
  return {
    rssBytes: field("VmRSS"),
    anonBytes: field("RssAnon"),
    fileBytes: field("RssFile") + field("RssShmem"),
  };
}

// utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second on Linux).
// CPU time per request holds up on a busy machine far better than requests per second do.
function readCpuMs(pid: number): number | undefined {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  await exited;
}

export interface Loader {
  run(job: LoadJob): Promise<LoadResult>;
  stop(): Promise<void>;
}

/** The autocannon process; jobs run one at a time. */
export function startLoader(): Loader {
  const child = fork(path.join(ROOT, "scripts/bench/load.ts"), [], { cwd: ROOT, stdio: "inherit" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let next = 0;
  const waiting = new Map<number, { resolve: (r: LoadResult) => void; reject: (e: Error) => void }>();
  child.on("message", (message: { id: number; result?: LoadResult; error?: string }) => {
    const waiter = waiting.get(message.id);
    waiting.delete(message.id);
    if (message.error !== undefined) waiter?.reject(new Error(`load generator: ${message.error}`));
    else waiter?.resolve(message.result!);
  });
  child.once("exit", (code) => {
    for (const waiter of waiting.values()) waiter.reject(new Error(`load generator exited (code ${code})`));
  });
  return {
    run: (job) =>
      new Promise((resolve, reject) => {
        const id = next++;
        waiting.set(id, { resolve, reject });
        child.send({ id, job });
      }),
    stop: async () => {
      if (child.connected) child.disconnect();
      await exited;
    },
  };
}
