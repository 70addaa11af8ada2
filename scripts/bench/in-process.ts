// In one process, no HTTP: the same point read and insert through Kysely (as the routes issue
// them) and through a raw better-sqlite3 prepared statement, the floor for this SQLite build.
import path from "node:path";
import { openSqlite } from "../../src/db/sqlite/open.ts";
import { median, round } from "./stats.ts";

export interface InProcessRow {
  name: string;
  kyselyOpsPerSec: number;
  rawOpsPerSec: number;
  kyselyUs: number;
  rawUs: number;
  /** Kysely's time per operation over the raw statement's. */
  timeRatio: number;
}

export interface InProcessSettings {
  file: string;
  notes: number;
  rounds: number;
  roundMs: number;
}

type Op = (i: number) => unknown;

/** Operations per second of `op` over `ms`; awaits only when `op` returns a promise. */
async function opsPerSecond(op: Op, ms: number): Promise<number> {
  const started = performance.now();
  let done = 0;
  let elapsed = 0;
  while (elapsed < ms) {
    for (let k = 0; k < 64; k++) {
      const result = op(done++);
      if (result instanceof Promise) await result;
    }
    elapsed = performance.now() - started;
  }
  return (done / elapsed) * 1000;
}

export async function runInProcess({
  file,
  notes,
  rounds,
  roundMs,
}: InProcessSettings): Promise<InProcessRow[]> {
  const db = openSqlite({
    path: file,
    backupDir: path.join(path.dirname(file), "backups"),
    busyTimeoutMs: 2000,
  });
  try {
    const { kysely, sqlite } = db;
    const randomId = () => 1 + Math.floor(Math.random() * notes);
    const readRaw = sqlite.prepare("SELECT * FROM notes WHERE id = ?");
    const insertRaw = sqlite.prepare(
      "INSERT INTO notes (title, body, created_at, updated_at) VALUES (?, ?, ?, ?) RETURNING *",
    );
    const pairs: { name: string; kysely: Op; raw: Op }[] = [
      {
        name: "point read",
        kysely: () => kysely.selectFrom("notes").selectAll().where("id", "=", randomId()).executeTakeFirst(),
        raw: () => readRaw.get(randomId()),
      },
      {
        name: "insert",
        kysely: (i) => {
          const now = new Date().toISOString();
          return kysely
            .insertInto("notes")
            .values({ title: `bench ${i}`, body: "written by the bench", created_at: now, updated_at: now })
            .returningAll()
            .executeTakeFirstOrThrow();
        },
        // all(), as Kysely's driver runs it: SQLite runs the automatic checkpoint only when a
        // statement steps to its end, and get() stops after the first row. An insert through get()
        // skipped every checkpoint and left them, a WAL grown to hundreds of MB, to whichever
        // writer came next: the Kysely round, which then measured 1 ms per insert (28× raw).
        raw: (i) => {
          const now = new Date().toISOString();
          return insertRaw.all(`bench ${i}`, "written by the bench", now, now);
        },
      },
    ];
    const rows: InProcessRow[] = [];
    for (const pair of pairs) {
      await opsPerSecond(pair.kysely, roundMs);
      await opsPerSecond(pair.raw, roundMs);
      const k: number[] = [];
      const r: number[] = [];
      for (let n = 0; n < rounds; n++) {
        k.push(await opsPerSecond(pair.kysely, roundMs));
        r.push(await opsPerSecond(pair.raw, roundMs));
      }
      const kyselyOps = median(k);
      const rawOps = median(r);
      rows.push({
        name: pair.name,
        kyselyOpsPerSec: round(kyselyOps),
        rawOpsPerSec: round(rawOps),
        kyselyUs: round(1e6 / kyselyOps),
        rawUs: round(1e6 / rawOps),
        timeRatio: round(rawOps / kyselyOps),
      });
    }
    return rows;
  } finally {
    db.close();
  }
}
