// End-to-end proof of the metrics: starts the service with a METRICS_TOKEN and a real Prometheus
// (the Debian package's binary) that scrapes it with that token from a credentials file and loads
// ops/prometheus/alerts.yml, waits for the first scrape, then prints what Prometheus answers.
// usage: node scripts/prometheus-scrape.ts [--timeout-s 30]
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const JOB = "express-sqlite-template";
const QUERIES = [
  `up{job="${JOB}"}`,
  "app_build_info",
  "app_database_up",
  "app_database_size_bytes",
  "app_database_wal_size_bytes",
  `sum by (route, status_code) (http_request_duration_seconds_count{job="${JOB}"})`,
];

const { values } = parseArgs({ options: { "timeout-s": { type: "string", default: "30" } } });
const deadline = Date.now() + Number(values["timeout-s"]) * 1000;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "prometheus-scrape-"));
const children: ChildProcess[] = [];
process.once("exit", () => {
  for (const child of children) child.kill("SIGTERM");
  fs.rmSync(dir, { recursive: true, force: true });
});

try {
  const token = randomBytes(32).toString("hex");
  const service = await startService(token);
  const port = await freePort();
  const tokenFile = path.join(dir, "metrics-token");
  fs.writeFileSync(tokenFile, token, { mode: 0o600 });
  const config = path.join(dir, "prometheus.yml");
  fs.writeFileSync(
    config,
    `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - ${path.join(ROOT, "ops", "prometheus", "alerts.yml")}
scrape_configs:
  - job_name: ${JOB}
    authorization:
      type: Bearer
      credentials_file: ${tokenFile}
    static_configs:
      - targets: ["127.0.0.1:${service.port}"]
`,
  );
  console.log(`# prometheus.yml\n${fs.readFileSync(config, "utf8").replace(tokenFile, "<token file>")}`);
  const prometheus = spawn(
    "prometheus",
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  children.push(prometheus);
  let prometheusLog = "";
  prometheus.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    prometheusLog += chunk;
  });
  prometheus.once("error", (error) => {
    console.error(`cannot run prometheus: ${error.message} (apt-get install prometheus)`);
    process.exit(2);
  });

  // Traffic for the HTTP series, while Prometheus starts.
  const api = `http://127.0.0.1:${service.port}`;
  await fetch(`${api}/api/notes`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ title: "scraped" }),
  });
  await fetch(`${api}/api/notes/1`);
  await fetch(`${api}/api/notes/999`);

  const query = async (q: string) => {
    const url = `http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`;
    return { url, body: (await (await fetch(url)).json()) as { data?: { result?: unknown[] } } };
  };
  let first: Awaited<ReturnType<typeof query>> | undefined;
  while (Date.now() < deadline) {
    first = await query(`up{job="${JOB}"} == 1`).catch(() => undefined);
    if (first?.body.data?.result?.length) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  if (!first?.body.data?.result?.length) {
    console.error(`no successful scrape within ${values["timeout-s"]} s; Prometheus said:\n${prometheusLog}`);
    process.exit(1);
  }
  for (const q of QUERIES) {
    const { body } = await query(q);
    console.log(`$ curl 'http://127.0.0.1:PORT/api/v1/query?query=${encodeURIComponent(q)}'`);
    console.log(JSON.stringify(body));
  }
  const rules = (await (await fetch(`http://127.0.0.1:${port}/api/v1/rules`)).json()) as {
    data: { groups: { rules: { name: string; health: string; state: string }[] }[] };
  };
  console.log("# alerting rules as Prometheus loaded them: name health state");
  for (const rule of rules.data.groups.flatMap((g) => g.rules)) {
    console.log(`${rule.name} ${rule.health} ${rule.state}`);
  }
  process.exit(0);
} catch (error) {
  console.error(`failed: ${(error as Error).message}`);
  process.exit(1);
}

async function startService(token: string): Promise<{ port: number }> {
  const child = spawn(process.execPath, ["src/main.ts"], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "",
      DATABASE_PATH: path.join(dir, "data", "app.db"),
      METRICS_TOKEN: token,
      PORT: "0",
      HOST: "127.0.0.1",
      BACKUP_INTERVAL: "1h",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let pending = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk;
      const line = pending.split("\n").find((l) => l.includes('"msg":"listening"'));
      if (line) resolve({ port: (JSON.parse(line) as { port: number }).port });
    });
    child.once("exit", (code) => reject(new Error(`the service exited (code ${code}) before listening`)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}
