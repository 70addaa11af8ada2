// Fixtures for the operations routes: tokens, authorized calls, and an app with its metrics.
import { randomBytes } from "node:crypto";
import { createApp } from "../src/app.ts";
import type { ServiceMetrics } from "../src/metrics/prometheus.ts";
import { createServiceMetrics } from "../src/metrics/service-metrics.ts";
import { recordResponses } from "./contract.ts";
import { createTestApp, silentLogger, type TestApp } from "./helpers.ts";

/** Fresh per test run: a test that passes only for one fixed token would prove nothing. */
export const ADMIN_TOKEN = randomBytes(32).toString("hex");
export const METRICS_TOKEN = randomBytes(32).toString("hex");
export const TOKENS = { ADMIN_TOKEN, METRICS_TOKEN };

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** GET /health/details of a service child, with the admin token. */
export async function healthDetails(port: number): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${port}/health/details`, { headers: bearer(ADMIN_TOKEN) });
  return { status: res.status, body: await res.json() };
}

export interface MetricsTestApp extends TestApp {
  metrics: ServiceMetrics;
}

/** createTestApp with both tokens set and the service's metrics (process metrics off: quieter). */
export async function createMetricsTestApp(env: Record<string, string> = {}): Promise<MetricsTestApp> {
  const t = await createTestApp({ ...TOKENS, ...env });
  const metrics = createServiceMetrics({ storage: t.storage, config: t.config, processMetrics: false });
  // Held to its own /openapi.json after each test, as createTestApp's app is.
  const app = recordResponses(
    createApp({ config: t.config, storage: t.storage, logger: silentLogger, metrics }),
  );
  return { ...t, app, metrics };
}
