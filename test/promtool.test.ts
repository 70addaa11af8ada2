// Prometheus' own checks: the alerting rules' unit tests, and `promtool check metrics` on a real
// scrape of the running service. Needs promtool (Debian package prometheus; .ci/run installs it).
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { cleanupAfterEach, ROOT, startService } from "./helpers.ts";
import { bearer, METRICS_TOKEN } from "./ops-helpers.ts";

const { track, tempDir } = cleanupAfterEach();
const RULES = path.join(ROOT, "ops", "prometheus");
const promtool = spawnSync("promtool", ["--version"]);

// prom-client's default metrics name three gauges with a counter's suffix (a known prom-client
// issue): promtool's complaints about exactly these are expected; any other line is ours.
const PROM_CLIENT_DEFAULTS = new Set(
  ["handles", "requests", "resources"].map(
    (what) => `nodejs_active_${what}_total non-counter metrics should not have "_total" suffix`,
  ),
);

describe.skipIf(promtool.error !== undefined)("promtool, when installed (apt-get install prometheus)", () => {
  it("passes the alerting rules' unit tests", () => {
    const check = spawnSync("promtool", ["check", "rules", "alerts.yml"], { cwd: RULES, encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const test = spawnSync("promtool", ["test", "rules", "alerts.test.yml"], {
      cwd: RULES,
      encoding: "utf8",
    });
    expect(test.status, test.stdout + test.stderr).toBe(0);
    expect(test.stdout).toContain("SUCCESS");
  });

  it("finds nothing to say about the service's own metrics in a real scrape", async () => {
    const service = track(
      await startService({
        METRICS_TOKEN,
        DATABASE_PATH: path.join(tempDir(), "app.db"),
        BACKUP_INTERVAL: "1h",
      }),
    );
    const url = (p: string) => `http://127.0.0.1:${service.port}${p}`;
    await fetch(url("/api/notes"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: "x" }),
    });
    await fetch(url("/api/notes/1"));
    await fetch(url("/nope"));
    const scrape = await (await fetch(url("/metrics"), { headers: bearer(METRICS_TOKEN) })).text();
    expect(scrape).toContain('route="/api/notes/:id"');
    expect(scrape).toContain("app_database_size_bytes");

    const check = spawnSync("promtool", ["check", "metrics"], { input: scrape, encoding: "utf8" });
    const complaints = `${check.stdout}${check.stderr}`.split("\n").filter((line) => line.trim() !== "");
    expect(complaints.filter((line) => !PROM_CLIENT_DEFAULTS.has(line))).toEqual([]);
    // Exit 3 means "problems found": allowed only while the known three are the whole list.
    expect(check.status).toBe(complaints.length === 0 ? 0 : 3);
  });
});
