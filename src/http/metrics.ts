// GET /metrics: the Prometheus scrape, for METRICS_TOKEN or ADMIN_TOKEN holders.
import type { RequestHandler } from "express";
import { z } from "zod";
import type { ServiceMetrics } from "../metrics/prometheus.ts";
import { type ApiOperation, type ApiRouter, apiRouter } from "./api-router.ts";

const getMetrics: ApiOperation = {
  operationId: "getMetrics",
  summary: "Prometheus metrics (METRICS_TOKEN or ADMIN_TOKEN)",
  description: "docs/operations-api.md lists the metrics and the alerting rules built on them.",
  auth: "bearer",
  responses: {
    200: {
      description: "Every metric, collected now, in Prometheus' text exposition format 0.0.4",
      contentType: "text/plain",
      body: z.string(),
    },
  },
};

export function metricsRouter({
  metrics,
  requireToken,
}: {
  metrics: Pick<ServiceMetrics, "scrape">;
  requireToken: RequestHandler;
}): ApiRouter {
  const router = apiRouter({ name: "metrics", description: "For Prometheus" });
  router.get("/", getMetrics, requireToken, async (_req, res) => {
    const { contentType, body } = await metrics.scrape();
    res.set({ "Content-Type": contentType, "Cache-Control": "no-store" }).send(body);
  });
  return router;
}
