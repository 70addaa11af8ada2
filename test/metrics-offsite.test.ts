// Off-site uploads and restore drills in the metrics of the running service, against a real
// S3-compatible server (s3rver, see s3-server.ts): read from the uploader's own state at scrape
// time, and the failing upload that sets off the OffsiteUploadFailing alert.
import path from "node:path";
import { describe, expect, it } from "vitest";
import { cleanupAfterEach, type ServiceChild, startService } from "./helpers.ts";
import { bearer, METRICS_TOKEN } from "./ops-helpers.ts";
import { startS3Server } from "./s3-server.ts";

const { tempDir, defer, track } = cleanupAfterEach();

async function scrape(service: ServiceChild): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${service.port}/metrics`, { headers: bearer(METRICS_TOKEN) });
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

describe("off-site and drill metrics", () => {
  it("count uploads and drills from the uploader's and the drills' own state", async () => {
    const s3 = await startS3Server(tempDir("s3rver-"));
    defer(() => s3.kill());
    const dir = tempDir();
    const env = s3.env("app", {
      DATABASE_PATH: path.join(dir, "data", "app.db"),
      METRICS_TOKEN,
      BACKUP_INTERVAL: "1s",
      BACKUP_DRILL_INTERVAL: "2s",
    });
    const service = track(await startService(env));
    await service.waitForLog((l) => l.msg === "backup uploaded");
    await service.waitForLog((l) => l.msg === "restore drill passed");
    const m = await scrape(service);
    expect(m.get('app_offsite_uploads_total{outcome="success"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('app_offsite_uploads_total{outcome="failure"}')).toBe(0);
    expect(m.get("app_offsite_upload_last_success_timestamp_seconds")).toBeGreaterThan(0);
    expect(m.get("app_offsite_upload_last_failure_timestamp_seconds")).toBe(0);
    expect(m.get("app_offsite_backups_pending")).toBeGreaterThanOrEqual(0);
    expect(m.get('app_restore_drills_total{outcome="success"}')).toBeGreaterThanOrEqual(1);
    expect(m.get("app_restore_drill_last_success_timestamp_seconds")).toBeGreaterThan(0);
  });

  it("show a failing upload as a failure newer than any success: what OffsiteUploadFailing alerts on", async () => {
    const s3 = await startS3Server(tempDir("s3rver-"));
    const dir = tempDir();
    const env = s3.env("app", {
      DATABASE_PATH: path.join(dir, "data", "app.db"),
      METRICS_TOKEN,
      BACKUP_INTERVAL: "1s",
    });
    await s3.kill();
    const service = track(await startService(env));
    await service.waitForLog((l) => l.msg === "off-site upload failed");
    const m = await scrape(service);
    expect(m.get('app_offsite_uploads_total{outcome="failure"}')).toBeGreaterThanOrEqual(1);
    expect(m.get("app_offsite_upload_last_failure_timestamp_seconds")).toBeGreaterThan(
      m.get("app_offsite_upload_last_success_timestamp_seconds")!,
    );
  });
});
