// Maintenance mode: while the database is being swapped (an online restore), the routes behind
// this gate answer 503 `maintenance` with Retry-After instead of touching it, and the swap waits
// for the requests already inside to finish first.
import { EventEmitter, once } from "node:events";
import type { RequestHandler } from "express";
import { HttpError } from "./errors.ts";

export interface Maintenance {
  /** Mount before the routes that use the database: it gates them and counts those in flight. */
  readonly gate: RequestHandler;
  readonly active: boolean;
  /**
   * Turns maintenance on (new requests get 503 from now on) and waits for the requests already
   * past the gate to finish, up to `timeoutMs`. Resolves with how many were still running then.
   */
  begin(timeoutMs: number): Promise<{ unfinished: number }>;
  end(): void;
}

/** Seconds a client is told to wait: an online restore of a small database takes well under one. */
const RETRY_AFTER_SECONDS = "5";

/** `onChange` hears each switch on and off (the maintenance gauge in the metrics). */
export function createMaintenance({ onChange }: { onChange?: (on: boolean) => void } = {}): Maintenance {
  let active = false;
  let inFlight = 0;
  const drained = new EventEmitter();

  const gate: RequestHandler = (_req, res, next) => {
    if (active) {
      throw new HttpError(503, "maintenance", "the service is under maintenance; retry shortly", undefined, {
        "Retry-After": RETRY_AFTER_SECONDS,
      });
    }
    inFlight++;
    // "close" fires once per response, finished or aborted by the client.
    res.once("close", () => {
      inFlight--;
      if (inFlight === 0) drained.emit("idle");
    });
    next();
  };

  return {
    gate,
    get active() {
      return active;
    },
    async begin(timeoutMs) {
      active = true;
      onChange?.(true);
      if (inFlight > 0) {
        await once(drained, "idle", { signal: AbortSignal.timeout(timeoutMs) }).catch(() => {});
      }
      return { unfinished: inFlight };
    },
    end() {
      active = false;
      onChange?.(false);
    },
  };
}
