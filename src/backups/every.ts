// A task the service repeats on an interval (scheduled backups, restore drills): the next run is
// timed from the end of the last (no overlap however long one takes), a run in progress can be
// aborted, and the whole can be held while something must not race it (an online restore).
export interface Repeating {
  /** Aborts a run in progress (its task sees the signal), waits for it, and starts none until resume(). */
  pause(): Promise<void>;
  /** The next run comes one interval after this call. */
  resume(): void;
  /** pause() for good. */
  stop(): Promise<void>;
}

/** What a schedule that is turned off returns: nothing runs, nothing to hold. */
export const NEVER: Repeating = { pause: async () => {}, resume: () => {}, stop: async () => {} };

/** `task` reports its own failures: it must not reject. */
export function every(intervalMs: number, task: (signal: AbortSignal) => Promise<void>): Repeating {
  let timer: NodeJS.Timeout | undefined;
  let current: { abort: AbortController; done: Promise<void> } | undefined;
  let held = false;
  let stopped = false;

  const schedule = () => {
    timer = setTimeout(() => {
      const abort = new AbortController();
      current = {
        abort,
        done: task(abort.signal).finally(() => {
          current = undefined;
          if (!held) schedule();
        }),
      };
    }, intervalMs);
    // The timer alone never keeps the process alive.
    timer.unref();
  };
  const hold = async () => {
    held = true;
    clearTimeout(timer);
    current?.abort.abort();
    await current?.done;
  };
  schedule();

  return {
    pause: hold,
    resume() {
      if (stopped || !held) return;
      held = false;
      schedule();
    },
    async stop() {
      stopped = true;
      await hold();
    },
  };
}
