// GET /metrics: the Prometheus scrape, for METRICS_TOKEN or ADMIN_TOKEN holders.
import { type RequestHandler, Router } from "express";
import type { ServiceMetrics } from "../metrics/prometheus.ts";

export function metricsRouter({
  metrics,
  requireToken,
}: {
  metrics: Pick<ServiceMetrics, "scrape">;
  requireToken: RequestHandler;
}): Router {
  const router = Router();
  router.get("/", requireToken, async (_req, res) => {
    const { contentType, body } = await metrics.scrape();
    res.set({ "Content-Type": contentType, "Cache-Control": "no-store" }).send(body);
  });
  return router;
}
