// Failed authentications counted per client in fixed windows: bounded memory and no timer, so it
// costs nothing until a client fails and leaves nothing running.

export interface FailureLimiterOptions {
  /** Failures a client may have in one window before the next ones are refused. */
  maxFailures?: number;
  windowMs?: number;
  /** Clients tracked at once; past it the client whose window is oldest is forgotten. */
  maxClients?: number;
  now?: () => number;
}

export interface FailureVerdict {
  /** This failure is over the limit: answer 429 rather than 401. */
  limited: boolean;
  /** This failure is the first over the limit in its window (log it once, not per request). */
  crossed: boolean;
  failures: number;
  /** Seconds until the client's window ends, at least 1. */
  retryAfterSeconds: number;
}

export interface FailureLimiter {
  /** Counts one failure of `client` and says whether it is over the limit. */
  fail(client: string): FailureVerdict;
  /** Clients tracked now (for tests of the bound). */
  size(): number;
}

export function createFailureLimiter({
  maxFailures = 10,
  windowMs = 60_000,
  maxClients = 4_096,
  now = Date.now,
}: FailureLimiterOptions = {}): FailureLimiter {
  // A Map iterates in insertion order, and an entry is re-inserted only when its window starts
  // anew, so the first key is always the client whose window started longest ago.
  const windows = new Map<string, { start: number; failures: number }>();
  return {
    fail(client) {
      const at = now();
      let entry = windows.get(client);
      if (!entry || at - entry.start >= windowMs) {
        windows.delete(client);
        entry = { start: at, failures: 0 };
        windows.set(client, entry);
        if (windows.size > maxClients) windows.delete(windows.keys().next().value!);
      }
      entry.failures++;
      return {
        limited: entry.failures > maxFailures,
        crossed: entry.failures === maxFailures + 1,
        failures: entry.failures,
        retryAfterSeconds: Math.max(1, Math.ceil((entry.start + windowMs - at) / 1000)),
      };
    },
    size: () => windows.size,
  };
}
