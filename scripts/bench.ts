// npm run bench [-- --quick] [--json] [--out FILE] ...
// Measures the service against bare Express and raw SQLite in one run (see docs/performance.md):
// prints a table, writes the full result as JSON. Progress goes to stderr.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { formatReport } from "./bench/report.ts";
import { defaultSettings, runBench } from "./bench/run.ts";

const USAGE = `usage: node scripts/bench.ts [--quick] [--json] [--out FILE] [--rounds N] [--duration SECONDS]
       [--connections N] [--clean] [--engine postgres --database-url URL]
  --quick        tiny databases and short rounds: checks that the bench works, in seconds
  --json         print the result as JSON on stdout instead of the table
  --out FILE     where to write the JSON (default bench-results/bench-<time>.json)
  --rounds N     measured rounds per case (the median is reported)
  --duration S   seconds per round of HTTP load
  --connections N  concurrent connections of the load generator
  --clean        delete the cached large database afterwards
  --engine postgres  run the service's HTTP cases on PostgreSQL too, beside SQLite
  --database-url URL  with --engine postgres: a server and role that may create a database (the
                 bench makes its own, bench_<pid>, and drops it)`;

let values: ReturnType<typeof parse>["values"];
function parse() {
  return parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      out: { type: "string" },
      rounds: { type: "string" },
      duration: { type: "string" },
      connections: { type: "string" },
      clean: { type: "boolean", default: false },
      engine: { type: "string", default: "sqlite" },
      "database-url": { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
}
try {
  values = parse().values;
} catch (error) {
  console.error(`${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

const positive = (name: string, raw: string | undefined, fallback: number): number => {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!(value > 0)) {
    console.error(`--${name} expects a positive number, got "${raw}"\n${USAGE}`);
    process.exit(2);
  }
  return value;
};

if (values.engine !== "sqlite" && values.engine !== "postgres") {
  console.error(`--engine is sqlite or postgres, got "${values.engine}"\n${USAGE}`);
  process.exit(2);
}
if (values.engine === "postgres" && !values["database-url"]) {
  console.error(
    `--engine postgres needs --database-url postgres://USER:PASSWORD@HOST:5432/postgres\n${USAGE}`,
  );
  process.exit(2);
}

const defaults = defaultSettings(values.quick);
const settings = {
  ...defaults,
  rounds: Math.round(positive("rounds", values.rounds, defaults.rounds)),
  durationSeconds: positive("duration", values.duration, defaults.durationSeconds),
  requestsPerRound: values.duration === undefined ? defaults.requestsPerRound : undefined,
  connections: Math.round(positive("connections", values.connections, defaults.connections)),
  engine: values.engine as "sqlite" | "postgres",
  databaseUrl: values["database-url"],
};

try {
  const started = performance.now();
  const result = await runBench(settings, (message) => console.error(`bench: ${message}`));
  const out = path.resolve(
    values.out ?? path.join("bench-results", `bench-${result.startedAt.replace(/[-:.]/g, "")}.json`),
  );
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  if (values.clean) fs.rmSync(settings.cacheDir, { recursive: true, force: true });
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else console.log(formatReport(result));
  console.error(`bench: done in ${((performance.now() - started) / 1000).toFixed(0)} s; results in ${out}`);
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? String(error)}`);
  process.exit(1);
}
