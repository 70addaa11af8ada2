// The container packaging, checked without a Docker engine: the Dockerfile and Compose files parsed
// and held to their invariants, .dockerignore matched against real paths, the shell scripts run
// through shellcheck when it is installed, and the HEALTHCHECK script against real servers.
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the strings are Compose's ${VAR:-default}
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadConfig } from "../src/config.ts";
import { type Child, cleanupAfterEach, makeTempDir, ROOT, runNode, startService } from "./helpers.ts";

const read = (file: string) => fs.readFileSync(path.join(ROOT, file), "utf8");

// --- Dockerfile -------------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Docker's reading of a Dockerfile: comment lines dropped (even inside a continuation), then `\` joins. */
function parseDockerfile(text: string): Stage[] {
  const logical = text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = "", args = ""] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    if (keyword.toUpperCase() === "FROM") {
      const [image = "", as, name] = args.split(/\s+/);
      stages.push({ image, name: as?.toUpperCase() === "AS" ? name : undefined, instructions: [] });
    } else {
      stages.at(-1)!.instructions.push({ keyword: keyword.toUpperCase(), args: args.replace(/\s+/g, " ") });
    }
  }
  return stages;
}

/** The stage and every stage it is built FROM, base first. */
function lineage(stages: Stage[], stage: Stage): Stage[] {
  const parent = stages.find((s) => s.name === stage.image);
  return parent ? [...lineage(stages, parent), stage] : [stage];
}

const dockerfile = parseDockerfile(read("Dockerfile"));
const runtime = dockerfile.at(-1)!;
const all = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);

describe("Dockerfile", () => {
  it("builds every stage on node:24-bookworm-slim or an earlier stage", () => {
    const names = new Set<string>();
    for (const stage of dockerfile) {
      expect(stage.image === "node:24-bookworm-slim" || names.has(stage.image), stage.image).toBe(true);
      if (stage.name) names.add(stage.name);
    }
    expect([...names]).toEqual(expect.arrayContaining(["dev", "runtime"]));
  });

  it("ends with a runtime stage that copies prod dependencies, sources, migrations, scripts and package files only", () => {
    expect(runtime.name).toBe("runtime");
    const copies = lineage(dockerfile, runtime).flatMap((stage) => all(stage, "COPY").map((i) => i.args));
    expect(copies).toEqual([
      "package.json package-lock.json ./",
      "--from=prod-deps /app/node_modules ./node_modules",
      "migrations ./migrations",
      "scripts ./scripts",
      "src ./src",
    ]);
    const prodDeps = dockerfile.find((s) => s.name === "prod-deps")!;
    const installs = lineage(dockerfile, prodDeps).flatMap((s) => all(s, "RUN").map((i) => i.args));
    expect(installs.filter((run) => run.includes("npm ci"))).toEqual([expect.stringContaining("--omit=dev")]);
    expect(all(runtime, "ADD")).toEqual([]);
  });

  it("installs packages before copying any source, so a source change reuses the npm ci layer", () => {
    for (const stage of dockerfile) {
      const chain = lineage(dockerfile, stage).flatMap((s) => s.instructions);
      const install = chain.findIndex((i) => i.keyword === "RUN" && i.args.includes("npm ci"));
      const firstSource = chain.findIndex(
        (i) => i.keyword === "COPY" && /(^|\s)(\.|src|migrations|scripts)(\s|$)/.test(i.args.split(" ")[0]!),
      );
      if (install >= 0 && firstSource >= 0) expect(install, stage.name).toBeLessThan(firstSource);
    }
  });

  it("runs as node (uid 1000) with its data and backup folders owned by it", () => {
    const users = all(runtime, "USER").map((i) => i.args);
    expect(users.at(-1)).toBe("node");
    const lastUser = runtime.instructions.findLastIndex((i) => i.keyword === "USER");
    expect(runtime.instructions.slice(lastUser).some((i) => i.keyword === "RUN")).toBe(false);
    const runs = all(runtime, "RUN").map((i) => i.args);
    expect(runs).toContainEqual(expect.stringMatching(/mkdir -p \/app\/data \/app\/backups/));
    expect(runs).toContainEqual(expect.stringMatching(/chown node:node \/app\/data \/app\/backups/));
    // The code stays root's: nothing is copied with --chown.
    expect(all(runtime, "COPY").some((i) => i.args.includes("--chown"))).toBe(false);
  });

  it("fills Node's compile cache at build time as node, and leaves it to root, read-only", () => {
    const env = all(runtime, "ENV").map((i) => i.args);
    expect(env).toContain("NODE_COMPILE_CACHE=/app/.compile-cache");
    const warm = all(runtime, "RUN").find((i) => i.args.includes("scripts/warm-compile-cache.ts"))!.args;
    // Node keeps one cache per uid: filled as any other user, the service would never read it.
    expect(warm).toMatch(
      /setpriv --reuid=node --regid=node --init-groups node scripts\/warm-compile-cache\.ts/,
    );
    expect(warm).toMatch(
      /chown -R root:root "\$NODE_COMPILE_CACHE" && chmod -R a\+rX,go-w "\$NODE_COMPILE_CACHE"$/,
    );
    const index = (i: Instruction) => runtime.instructions.indexOf(i);
    const sources = all(runtime, "COPY").filter((i) => /^(src|migrations)\s/.test(i.args));
    const warmRun = all(runtime, "RUN").find((i) => i.args === warm)!;
    for (const copy of sources) expect(index(copy)).toBeLessThan(index(warmRun));
  });

  it("sets production, the database and backup paths, the port and OCI labels", () => {
    const env = all(runtime, "ENV")
      .map((i) => i.args)
      .join(" ");
    expect(env).toContain("NODE_ENV=production");
    expect(env).toContain("DATABASE_PATH=/app/data/app.db");
    expect(env).toContain("BACKUP_DIR=/app/backups");
    expect(all(runtime, "EXPOSE").map((i) => i.args)).toEqual(["3000"]);
    const labels = all(runtime, "LABEL")
      .map((i) => i.args)
      .join(" ");
    expect(labels).toMatch(/org\.opencontainers\.image\.title=/);
    expect(labels).toMatch(/org\.opencontainers\.image\.licenses=/);
  });

  it("runs node itself in exec form, never npm, and checks /health with a timeout", () => {
    expect(all(runtime, "CMD").map((i) => JSON.parse(i.args))).toEqual([["node", "src/main.ts"]]);
    expect(all(runtime, "ENTRYPOINT")).toEqual([]);
    const [healthcheck] = all(runtime, "HEALTHCHECK");
    expect(healthcheck?.args).toMatch(/--timeout=\d+s/);
    const command = /CMD (\[.*\])$/.exec(healthcheck!.args)?.[1];
    expect(JSON.parse(command!)).toEqual(["node", "scripts/healthcheck.ts"]);
  });

  it("follows hadolint's rules for apt-get, tags and paths", () => {
    for (const stage of dockerfile) {
      expect(stage.image).not.toMatch(/:latest$/);
      for (const { keyword, args } of stage.instructions) {
        if (keyword === "WORKDIR") expect(args).toMatch(/^\//); // DL3000
        if (keyword === "RUN" && args.includes("apt-get install")) {
          expect(args).toContain("--no-install-recommends"); // DL3015
          expect(args).toMatch(/apt-get install -y/); // DL3014
          expect(args).toContain("rm -rf /var/lib/apt/lists/*"); // DL3009
        }
        if (keyword === "RUN") expect(args).not.toMatch(/(^|\s)(cd|sudo|apt) /); // DL3003, DL3004, DL3027
      }
    }
  });
});

// --- Compose ------------------------------------------------------------------------------------

// `!override` and `!reset` are Compose's merge tags: keep the value, as Compose does.
const composeTags = ["!override", "!reset"].flatMap((tag) =>
  (["seq", "map"] as const).map((collection) => ({ tag, collection, resolve: (value: unknown) => value })),
);
type Service = Record<string, any>;
const compose = (file: string): { services: Record<string, Service>; [key: string]: unknown } =>
  parse(read(file), { customTags: composeTags });
const base = compose("docker-compose.yml");
const dev = compose("docker-compose.dev.yml");
const prod = compose("docker-compose.prod.yml");

/** Compose durations: 1m30s, 15s, 500ms. */
function durationMs(value: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001 };
  const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(ms|us|h|m|s)/g)];
  expect(parts.map((p) => p[0]).join(""), `duration ${value}`).toBe(value);
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * units[unit!]!, 0);
}

describe("docker-compose.yml", () => {
  const app = base.services.app!;

  it("is a Compose spec file that builds the runtime image and maps ${PORT:-3000}", () => {
    expect(base).not.toHaveProperty("version");
    expect(Object.keys(base.services)).toEqual(["app"]);
    expect(app.build).toEqual({ context: ".", target: "runtime" });
    expect(app.ports).toEqual(["${PORT:-3000}:3000"]);
  });

  it("keeps the database and backups in named volumes", () => {
    expect(app.volumes).toEqual(["data:/app/data", "backups:/app/backups"]);
    expect(Object.keys(base.volumes as object)).toEqual(["data", "backups"]);
  });

  it("runs under an init, restarts unless stopped, and checks health like the image does", () => {
    expect(app.init).toBe(true);
    expect(app.restart).toBe("unless-stopped");
    expect(app.healthcheck.test).toEqual(["CMD", "node", "scripts/healthcheck.ts"]);
    expect(durationMs(app.healthcheck.timeout)).toBeGreaterThan(3000); // the script's own timeout
    expect(app.command).toBeUndefined(); // the image's CMD: node, not npm
  });

  it("gives the graceful shutdown more time than SHUTDOWN_TIMEOUT_MS before SIGKILL", () => {
    const shutdownMs = loadConfig({
      SHUTDOWN_TIMEOUT_MS: app.environment.SHUTDOWN_TIMEOUT_MS,
    }).shutdownTimeoutMs;
    expect(durationMs(app.stop_grace_period)).toBeGreaterThan(shutdownMs);
  });
});

describe("docker-compose.dev.yml", () => {
  const app = dev.services.app!;

  it("runs the dev target as the developer's uid, with sources and ./data bind-mounted", () => {
    expect(app.build).toEqual({ target: "dev" });
    expect(app.image).not.toBe(base.services.app!.image);
    expect(app.user).toBe("${UID:-1000}:${GID:-1000}");
    expect(app.volumes).toEqual(
      expect.arrayContaining(["./src:/app/src", "./migrations:/app/migrations", "./data:/app/data"]),
    );
    expect(app.environment).toMatchObject({ NODE_ENV: "development", LOG_LEVEL: "${LOG_LEVEL:-debug}" });
  });

  it("watches src/ and migrations/ and keeps node the process that gets SIGTERM", () => {
    const devStage = dockerfile.find((s) => s.name === "dev")!;
    const [cmd] = all(devStage, "CMD").map((i) => JSON.parse(i.args) as string[]);
    expect(cmd?.at(-1)).toMatch(/^exec node --watch-path=src --watch-path=migrations src\/main\.ts /);
    expect(cmd?.at(-1)).toContain("pino-pretty");
  });
});

describe("docker-compose.prod.yml", () => {
  const app = prod.services.app!;

  it("hardens the container: read-only root, tmpfs /tmp, no capabilities, no new privileges", () => {
    expect(app.read_only).toBe(true);
    expect(app.tmpfs).toEqual([expect.stringMatching(/^\/tmp(:|$)/)]);
    expect(app.cap_drop).toEqual(["ALL"]);
    expect(app.security_opt).toEqual(["no-new-privileges:true"]);
  });

  it("limits memory, CPU and processes in one form, and rotates logs", () => {
    const limits = app.deploy.resources.limits;
    expect(limits).toMatchObject({ cpus: expect.any(String), memory: expect.any(String) });
    expect(limits.pids).toBeGreaterThan(0);
    expect(app).not.toHaveProperty("pids_limit"); // Compose refuses both forms together
    expect(app).not.toHaveProperty("mem_limit");
    expect(app.logging).toEqual({ driver: "json-file", options: { "max-size": "10m", "max-file": "5" } });
  });

  it("takes scheduled backups", () => {
    expect(app.environment.BACKUP_INTERVAL).toBe("${BACKUP_INTERVAL:-6h}");
    expect(loadConfig({ BACKUP_INTERVAL: "6h" }).backupIntervalMs).toBe(6 * 3_600_000);
  });

  it("restarts always and publishes the port on 127.0.0.1 unless told otherwise", () => {
    expect(app.restart).toBe("always");
    expect(app.ports).toEqual(["${BIND_ADDRESS:-127.0.0.1}:${PORT:-3000}:3000"]);
    expect(read("docker-compose.prod.yml")).toMatch(/ports: !override/);
  });
});

const dockerCompose = spawnSync("docker", ["compose", "version"], { encoding: "utf8" });

describe.skipIf(dockerCompose.status !== 0)("docker compose config (the Compose CLI is installed)", () => {
  it.each([
    [["-f", "docker-compose.yml"]],
    [["-f", "docker-compose.yml", "-f", "docker-compose.dev.yml"]],
    [["-f", "docker-compose.yml", "-f", "docker-compose.prod.yml"]],
  ])("accepts %j", (files) => {
    const result = spawnSync("docker", ["compose", ...files, "config", "--quiet"], {
      cwd: ROOT,
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "" },
    });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
  });
});

describe("npm scripts", () => {
  it("spell out the Compose file combinations", () => {
    const { scripts } = JSON.parse(read("package.json")) as { scripts: Record<string, string> };
    expect(scripts["docker:up"]).toBe("docker compose up --build");
    expect(scripts["docker:dev"]).toBe(
      "docker compose -f docker-compose.yml -f docker-compose.dev.yml up --build",
    );
    expect(scripts["docker:prod"]).toBe(
      "docker compose -f docker-compose.yml -f docker-compose.prod.yml up -d --build",
    );
  });
});

// --- .dockerignore ------------------------------------------------------------------------------

/** Docker's .dockerignore rules: last match wins, `!` re-includes, a matched folder takes its contents. */
function dockerIgnored(patterns: string[], file: string): boolean {
  const rules = patterns.map((raw) => {
    const negate = raw.startsWith("!");
    const glob = path.posix.normalize((negate ? raw.slice(1) : raw).replace(/^\/+/, "")).replace(/\/$/, "");
    const source = glob
      .split(/(\*\*\/|\*\*|\*|\?)/)
      .map((part) => {
        if (part === "**/") return "(?:.*/)?";
        if (part === "**") return ".*";
        if (part === "*") return "[^/]*";
        if (part === "?") return "[^/]";
        return part.replace(/[.+^${}()|[\]\\]/g, "\\$&");
      })
      .join("");
    return { negate, regex: new RegExp(`^${source}$`) };
  });
  const prefixes = file.split("/").map((_, i, parts) => parts.slice(0, i + 1).join("/"));
  let ignored = false;
  for (const { negate, regex } of rules) {
    if (prefixes.some((p) => regex.test(p))) ignored = !negate;
  }
  return ignored;
}

describe(".dockerignore", () => {
  const patterns = read(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));

  it.each([
    "data/app.db",
    "data/backups/app-20261125T000000000Z.db",
    "backups/app-20261125T000000000Z.db",
    ".env",
    ".env.production",
    "app.db",
    "app.db-wal",
    "src/db/stray.db",
    "node_modules/better-sqlite3/build/Release/better_sqlite3.node",
    "test/node_modules/x/index.js",
    ".git/HEAD",
  ])("keeps %s out of the build context", (file) => {
    expect(dockerIgnored(patterns, file)).toBe(true);
  });

  it.each([
    "package.json",
    "package-lock.json",
    "src/main.ts",
    "src/db/storage.ts",
    "migrations/0001_create_notes.ts",
    "scripts/healthcheck.ts",
    "scripts/fix-permissions.sh",
  ])("sends %s to the builder", (file) => {
    expect(dockerIgnored(patterns, file)).toBe(false);
  });
});

// --- scripts ------------------------------------------------------------------------------------

const shellScripts = fs
  .readdirSync(path.join(ROOT, "scripts"))
  .filter((f) => f.endsWith(".sh"))
  .map((f) => path.join("scripts", f));
const shellcheck = spawnSync("shellcheck", ["--version"]);

describe("shell scripts", () => {
  it.skipIf(shellcheck.error !== undefined)("pass shellcheck", () => {
    expect(shellScripts.length).toBeGreaterThan(0);
    const result = spawnSync("shellcheck", shellScripts, { cwd: ROOT, encoding: "utf8" });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it.each(shellScripts)("%s is executable and strict", (file) => {
    expect(fs.statSync(path.join(ROOT, file)).mode & 0o111).not.toBe(0);
    expect(read(file)).toMatch(/^#!\/usr\/bin\/env bash\n[\s\S]*\nset -euo pipefail\n/);
  });

  it("fix-permissions.sh refuses a uid that is not a number, before calling Docker", () => {
    const result = spawnSync("bash", ["scripts/fix-permissions.sh", "--uid", "node"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('--uid and --gid take numbers, got uid="node"');
  });
});

describe("volume-import.sh", () => {
  it("refuses an archive that is not one backup file, before calling Docker", () => {
    const dir = makeTempDir();
    try {
      fs.mkdirSync(path.join(dir, "data"));
      fs.writeFileSync(path.join(dir, "data", "app.db"), "");
      const archive = path.join(dir, "not-an-export.tar.gz");
      expect(spawnSync("tar", ["-C", dir, "-czf", archive, "data"]).status).toBe(0);
      const result = spawnSync("bash", ["scripts/volume-import.sh", archive], {
        cwd: ROOT,
        encoding: "utf8",
      });
      expect(result.stderr).toContain("is not an archive from volume-export.sh");
      expect(result.status).toBe(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("scripts/warm-compile-cache.ts", () => {
  const { run, tempDir } = cleanupAfterEach();
  const cacheFiles = (dir: string) =>
    fs
      .readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.join(e.parentPath, e.name))
      .sort();

  it("starts and stops the service once, leaving a cache that already holds everything a start loads", async () => {
    const cache = tempDir();
    const first = await run("scripts/warm-compile-cache.ts", [], { NODE_COMPILE_CACHE: cache });
    expect(first.stderr).not.toMatch(/error/i);
    expect(first.code).toBe(0);
    const filled = cacheFiles(cache);
    // Kysely alone is some 250 modules.
    expect(filled.length).toBeGreaterThan(300);
    expect(first.out).toEqual([expect.stringMatching(/^compile cache in .+: \d{3,} files$/)]);
    // A second start compiles nothing new: no module of a start was missing from the cache.
    expect((await run("scripts/warm-compile-cache.ts", [], { NODE_COMPILE_CACHE: cache })).code).toBe(0);
    expect(cacheFiles(cache)).toEqual(filled);
    // The scratch database went with it.
    expect(fs.readdirSync(os.tmpdir()).filter((name) => name.startsWith("warm-compile-cache-"))).toEqual([]);
  });

  it("refuses to run without NODE_COMPILE_CACHE", async () => {
    const { code, stderr } = await run("scripts/warm-compile-cache.ts", [], {});
    expect(code).toBe(2);
    expect(stderr).toContain("set NODE_COMPILE_CACHE");
  });
});

describe("scripts/healthcheck.ts", () => {
  const children: Child[] = [];
  const servers: http.Server[] = [];
  afterEach(async () => {
    for (const child of children.splice(0)) {
      child.process.kill("SIGKILL");
      await child.exited;
    }
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  /** A server that answers every request with `respond`, on a free port. */
  async function serve(respond: http.RequestListener): Promise<number> {
    const server = http.createServer(respond);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  }

  async function check(port: number, args: string[] = []) {
    const child = runNode("scripts/healthcheck.ts", args, { PORT: String(port), HOST: "0.0.0.0" });
    const { code } = await child.exited;
    return { code, output: child.logs.map((l) => l.msg).join("\n") };
  }

  it("exits 0 when the service's /health answers 200", async () => {
    const dir = makeTempDir();
    try {
      const service = await startService({ DATABASE_PATH: path.join(dir, "app.db") });
      children.push(service);
      const { code, output } = await check(service.port);
      expect(output).toMatch(/^200 \{"status":"ok"/);
      expect(code).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("exits 1 when /health answers 503", async () => {
    const port = await serve((_req, res) => res.writeHead(503).end('{"status":"error"}'));
    expect(await check(port)).toEqual({ code: 1, output: '503 {"status":"error"}' });
  });

  it("exits 1 when the server accepts the connection but never answers", async () => {
    const port = await serve(() => {});
    expect(await check(port, ["--timeout-ms", "300"])).toEqual({
      code: 1,
      output: "no answer from /health within 300 ms",
    });
  });

  it("exits 1 when nothing listens", async () => {
    const port = await serve(() => {});
    await new Promise((resolve) => servers.pop()!.close(resolve));
    const { code, output } = await check(port);
    expect(code).toBe(1);
    expect(output).toContain("ECONNREFUSED");
  });
});
