// A PostgreSQL cluster of the test's own (initdb + pg_ctl in a temporary folder), for tests that
// stop and restart the server under a running service. The server refuses to run as root: as root,
// its programs run as the `postgres` user.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

export interface Cluster {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust authentication, loopback only). */
  url: string;
  port: number;
  start(): Promise<void>;
  /** pg_ctl stop -m fast: sessions are ended, committed work is kept. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** Stops the server and removes its folder. */
  destroy(): Promise<void>;
}

/** Why this machine cannot run a cluster of the test's own; undefined when it can. */
export function clusterUnavailable(): string | undefined {
  if (!findBinDir()) return "initdb and pg_ctl are not installed (Debian: apt-get install postgresql)";
  if (process.getuid?.() === 0 && postgresUser() === undefined)
    return "running as root without a postgres user";
  return undefined;
}

function findBinDir(): string | undefined {
  const base = "/usr/lib/postgresql";
  let majors: string[] = [];
  try {
    majors = fs.readdirSync(base).filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  return majors
    .sort((a, b) => Number(b) - Number(a))
    .map((major) => path.join(base, major, "bin"))
    .find((dir) => fs.existsSync(path.join(dir, "initdb")) && fs.existsSync(path.join(dir, "pg_ctl")));
}

function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    return undefined;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function runAs(
  user: { uid: number; gid: number } | undefined,
  program: string,
  args: string[],
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ["ignore", "ignore", "pipe"], ...(user ?? {}) });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.once("error", reject);
    child.once("close", (code) =>
      code === 0
        ? resolve()
        : reject(new Error(`${path.basename(program)} ${args[0]} exited ${code}: ${stderr}`)),
    );
  });
}

export async function createCluster(dir: string): Promise<Cluster> {
  const bin = findBinDir();
  if (!bin) throw new Error("initdb not found");
  const user = process.getuid?.() === 0 ? postgresUser() : undefined;
  if (user) fs.chownSync(dir, user.uid, user.gid);
  const data = path.join(dir, "data");
  const log = path.join(dir, "server.log");
  await runAs(user, path.join(bin, "initdb"), [
    "-D",
    data,
    "-U",
    "postgres",
    "-A",
    "trust",
    "--no-sync",
    "-E",
    "UTF8",
  ]);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`;
  const pgCtl = (...args: string[]) =>
    runAs(user, path.join(bin, "pg_ctl"), ["-D", data, "-w", "-t", "60", ...args]);
  const cluster: Cluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    start: () => pgCtl("start", "-o", options, "-l", log),
    stop: () => pgCtl("stop", "-m", "fast"),
    restart: () => pgCtl("restart", "-m", "fast", "-o", options, "-l", log),
    async destroy() {
      await pgCtl("stop", "-m", "immediate").catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.start();
  return cluster;
}
