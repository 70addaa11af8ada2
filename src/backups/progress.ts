// Progress of a long transfer on a terminal: bytes done, rate and time left, redrawn in place on
// stderr at most a few times a second. Nothing at all when the stream is not a TTY (logs, pipes,
// CI): the final figures go to logs and --json instead.
import { Transform } from "node:stream";

export interface Progress {
  /** Counts `bytes` more as done, redrawing when the last redraw is old enough. */
  add(bytes: number): void;
  /** Draws the final line and moves to the next one. */
  finish(): void;
}

export interface ProgressOptions {
  label: string;
  /** Expected bytes; undefined when unknown (no percentage, no time left). */
  total?: number;
  stream?: Pick<NodeJS.WriteStream, "write"> & { isTTY?: boolean };
  now?: () => number;
}

const REDRAW_MS = 250;

export const noProgress: Progress = { add() {}, finish() {} };

export function createProgress({
  label,
  total,
  stream = process.stderr,
  now = () => performance.now(),
}: ProgressOptions): Progress {
  if (!stream.isTTY) return noProgress;
  const started = now();
  let done = 0;
  let drawn = -Infinity;
  const draw = (end: string) => {
    const seconds = (now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const parts = [label, total ? `${formatBytes(done)} / ${formatBytes(total)}` : formatBytes(done)];
    if (total) parts.push(`${Math.min(100, Math.floor((done / total) * 100))}%`);
    parts.push(`${formatBytes(rate)}/s`);
    if (total && rate > 0 && end === "")
      parts.push(`${formatDuration(Math.max(0, total - done) / rate)} left`);
    if (end !== "") parts.push(`in ${formatDuration(seconds)}`);
    stream.write(`\r${parts.join("  ")}\x1b[K${end}`);
  };
  return {
    add(bytes) {
      done += bytes;
      if (now() - drawn < REDRAW_MS) return;
      drawn = now();
      draw("");
    },
    finish() {
      draw("\n");
    },
  };
}

/** A pass-through stream that reports every chunk's size to `progress`. */
export function counting(progress: Progress, onBytes?: (bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      progress.add(chunk.length);
      onBytes?.(chunk.length);
      callback(null, chunk);
    },
  });
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(unit < 3 ? 1 : 2)} ${UNITS[unit]}`;
}

function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}
