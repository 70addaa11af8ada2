// The HTTP server's lifecycle: listen, and a graceful stop that drains in-flight requests.
import type { Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Express } from "express";

export interface RunningServer {
  server: Server;
  port: number;
  /**
   * Stops accepting connections and waits for in-flight requests to finish, up to `timeoutMs`;
   * then cuts what is left. Resolves with the number of connections cut.
   */
  stop(timeoutMs: number): Promise<{ cut: number }>;
}

export function listen(app: Express, { port, host }: { port: number; host: string }): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host);
    const active = new Set<ServerResponse>();
    let stopping = false;

    server.on("request", (_req, res: ServerResponse) => {
      active.add(res);
      if (stopping) res.setHeader("Connection", "close");
      res.on("close", () => {
        active.delete(res);
        // A keep-alive connection becomes idle when its response ends: close it now, not at the timeout.
        if (stopping) setImmediate(() => server.closeIdleConnections());
      });
    });

    const stop = (timeoutMs: number) =>
      new Promise<{ cut: number }>((done) => {
        stopping = true;
        let cut = 0;
        // Responses still being produced tell their clients not to reuse the connection.
        for (const res of active) if (!res.headersSent) res.setHeader("Connection", "close");
        const timer = setTimeout(() => {
          cut = active.size;
          server.closeAllConnections();
        }, timeoutMs);
        server.close(() => {
          clearTimeout(timer);
          done({ cut });
        });
        server.closeIdleConnections();
      });

    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      resolve({ server, port: (server.address() as AddressInfo).port, stop });
    });
  });
}
