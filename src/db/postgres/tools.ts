// PostgreSQL's client programs (pg_dump, pg_restore, psql): which ones to run against a server of a
// given major version, and running them with the password in their environment only.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { BackupError } from "../storage.ts";

export interface PgTools {
  /** "15.18" as `pg_dump --version` says, or "15" from a Debian folder name. */
  version: string;
  major: number;
  pgDump: string;
  pgRestore: string;
  psql: string;
}

// Debian and Ubuntu install each major's programs here; /usr/bin/pg_dump is a wrapper that picks
// one by rules of its own. The versioned folder is unambiguous.
const DEBIAN_DIR = "/usr/lib/postgresql";

interface Candidate {
  dir: string;
  version: string;
  major: number;
}

// Looked up once per process (installing a client while the service runs takes a restart); PATH is
// searched, running each `pg_dump --version`, only when Debian's folders hold none fit to use.
let debian: Promise<Candidate[]> | undefined;
let onPath: Promise<Candidate[]> | undefined;

/**
 * The programs for a server of major `serverMajor`: the same major when installed, else the oldest
 * newer one (pg_dump refuses a server newer than itself, and a newer pg_dump may write statements
 * an older server rejects, such as PostgreSQL 17's `SET transaction_timeout`).
 */
export async function findTools(serverMajor: number, serverVersion: string): Promise<PgTools> {
  const pick = (candidates: Candidate[]) =>
    candidates.filter((c) => c.major >= serverMajor).sort((a, b) => a.major - b.major)[0];
  debian ??= listDebianCandidates();
  // PATH as any child process inherits it.
  let chosen = pick(await debian);
  if (!chosen) {
    onPath ??= listPathCandidates(process.env.PATH ?? "");
    chosen = pick(await onPath);
  }
  const fix = `install postgresql-client-${serverMajor} (Debian/Ubuntu: apt-get install postgresql-client-${serverMajor}; the Docker image: build with --build-arg POSTGRES_CLIENT=${serverMajor}) or put its bin folder first on PATH; to skip the pre-migration backup and rely on the platform's snapshots instead, set MIGRATE_BACKUP=off`;
  if (!chosen) {
    const newest = [...(await debian), ...(await onPath!)].sort((a, b) => b.major - a.major)[0];
    throw new BackupError(
      newest
        ? `pg_dump ${newest.version} (${newest.dir}) is older than the server, PostgreSQL ${serverVersion}, and refuses to dump it: ${fix}`
        : `pg_dump is not installed, and backups of PostgreSQL ${serverVersion} need pg_dump ${serverMajor} or newer: ${fix}`,
    );
  }
  const bin = (name: string) => path.join(chosen.dir, name);
  return {
    version: chosen.version,
    major: chosen.major,
    pgDump: bin("pg_dump"),
    pgRestore: bin("pg_restore"),
    psql: bin("psql"),
  };
}

// /usr/lib/postgresql/15/bin: the folder names the major; no program needs to run.
async function listDebianCandidates(): Promise<Candidate[]> {
  let names: string[];
  try {
    names = fs.readdirSync(DEBIAN_DIR);
  } catch {
    return [];
  }
  return names
    .filter((name) => /^\d+$/.test(name))
    .map((name) => ({ dir: path.join(DEBIAN_DIR, name, "bin"), version: name, major: Number(name) }))
    .filter((c) => isExecutable(path.join(c.dir, "pg_dump")) && isExecutable(path.join(c.dir, "pg_restore")));
}

async function listPathCandidates(searchPath: string): Promise<Candidate[]> {
  const candidates: Candidate[] = [];
  for (const dir of new Set(searchPath.split(path.delimiter).filter(Boolean))) {
    const program = path.join(dir, "pg_dump");
    if (!isExecutable(program) || !isExecutable(path.join(dir, "pg_restore"))) continue;
    const { code, stdout } = await runTool(program, ["--version"], {});
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    const match = /\(PostgreSQL\) (\d+)(\.\d+)?/.exec(stdout);
    if (code === 0 && match) {
      candidates.push({ dir, version: `${match[1]}${match[2] ?? ""}`, major: Number(match[1]) });
    }
  }
  return candidates;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  /** The end of stderr, at most 4 KB. */
  stderr: string;
}

/**
 * Runs a program to its end. `env` is added to this process's environment (libpq reads PGHOST,
 * PGSSLMODE, ... from there as node-postgres does); `stdin` is a file to feed it.
 */
export function runTool(
  program: string,
  args: string[],
  env: Record<string, string>,
  { signal, stdout: output }: { signal?: AbortSignal | undefined; stdout?: NodeJS.WritableStream } = {},
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      // Inherited as any child's environment would be, plus the password for this connection.
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
      signal,
      killSignal: "SIGTERM",
    });
    let stdout = "";
    let stderr = "";
    if (output) child.stdout.pipe(output);
    else child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-4096);
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr: stderr.trim() }));
  });
}

/** The first line of a tool's complaint, for a one-line message. */
export function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .map((line) => line.trim())
      .find((line) => line.length > 0) ?? "no message"
  );
}
