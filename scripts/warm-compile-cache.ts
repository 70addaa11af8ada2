// Fills Node's compile cache (the folder NODE_COMPILE_CACHE names) by starting the service once on a
// scratch database and stopping it: every module a first start loads, migrations and umzug
// included, is then compiled and type-stripped already. The Docker image runs this at build time,
// so each new container skips that work (docs/performance.md). Node keeps one cache per user id:
// run it as the user that runs the service. Exit 0 once the service started and stopped cleanly.
// usage: NODE_COMPILE_CACHE=<folder> node scripts/warm-compile-cache.ts
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const cacheDir = process.env.NODE_COMPILE_CACHE;
if (!cacheDir) {
  console.error("warm-compile-cache: set NODE_COMPILE_CACHE to the folder to fill");
  process.exit(2);
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "warm-compile-cache-"));
let code: number | null = null;
try {
  const service = spawn(process.execPath, [path.join(root, "src/main.ts")], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_PATH: path.join(scratch, "app.db"),
      BACKUP_DIR: path.join(scratch, "backups"),
      MIGRATIONS_DIR: path.join(root, "migrations"),
      PORT: "0",
      HOST: "127.0.0.1",
      BACKUP_INTERVAL: "off",
      LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => service.once("exit", resolve));
  // Stopped as soon as it listens: the cache is written as the process exits.
  createInterface({ input: service.stdout }).on("line", (line) => {
    if (line.includes('"msg":"listening"')) service.kill("SIGTERM");
  });
  code = await exited;
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}
if (code !== 0) {
  console.error(`warm-compile-cache: the service exited with code ${code} instead of starting and stopping`);
  process.exit(1);
}
const files = fs.readdirSync(cacheDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
console.log(`compile cache in ${cacheDir}: ${files.length} files`);
