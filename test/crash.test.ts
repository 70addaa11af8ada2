// kill -9 in the middle of a concurrent write load, round after round on the same database: every
// write the service acknowledged is there after the restart, exactly as acknowledged, nothing
// appears that was never sent, and (SQLite) integrity_check is ok. On both engines; SOAK=1 (npm run
// test:soak) runs 120 rounds on SQLite, 30 on PostgreSQL (a round restarts the service).
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { afterAll, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { loadEngine } from "../src/db/storage.ts";
import { describeEngines, engineEnv } from "./engines.ts";
import { callService, makeTempDir, type ServiceChild, startService } from "./helpers.ts";
import { ADMIN_TOKEN, healthDetails } from "./ops-helpers.ts";

const SOAK = Boolean(process.env.SOAK);
const WORKERS = 8;

interface NoteState {
  title: string;
  body: string;
}

/** What the client knows: the acknowledged state of each note, and writes it has not heard back about. */
class Ledger {
  acked = new Map<number, NoteState>();
  // Notes with a PATCH or DELETE in flight: after the crash either state is acceptable.
  pending = new Map<number, NoteState | "deleted">();
  // Titles of POSTs in flight: each may or may not have been committed.
  unackedTitles = new Set<string>();
  acknowledged = 0;
}

/** Writes from several workers at once; kills the service with SIGKILL after `killAfter` acks. */
async function loadAndKill(service: ServiceChild, ledger: Ledger, round: number, killAfter: number) {
  let acksThisRound = 0;
  let killed = false;
  let seq = 0;
  const kill = () => {
    if (!killed) service.process.kill("SIGKILL");
    killed = true;
  };
  const acked = () => {
    ledger.acknowledged++;
    if (++acksThisRound >= killAfter) kill();
  };

  const worker = async (w: number) => {
    while (!killed) {
      const n = seq++;
      const ids = [...ledger.acked.keys()].filter((id) => !ledger.pending.has(id));
      const target = ids[(n * 7919) % Math.max(ids.length, 1)];
      const op = target === undefined ? 0 : n % 5; // mostly inserts; some updates and deletes
      try {
        if (op <= 2) {
          const note = { title: `r${round}-w${w}-${n}`, body: `body ${n} `.repeat(n % 40) };
          ledger.unackedTitles.add(note.title);
          const res = await callService(service.port, "POST", "/api/notes", note);
          expect(res.status).toBe(201);
          ledger.unackedTitles.delete(note.title);
          ledger.acked.set(res.body.id, note);
          acked();
        } else if (op === 3) {
          const next = { ...ledger.acked.get(target!)!, body: `patched in round ${round} by ${n}` };
          ledger.pending.set(target!, next);
          const res = await callService(service.port, "PATCH", `/api/notes/${target}`, { body: next.body });
          expect(res.status).toBe(200);
          ledger.acked.set(target!, next);
          ledger.pending.delete(target!);
          acked();
        } else {
          ledger.pending.set(target!, "deleted");
          const res = await callService(service.port, "DELETE", `/api/notes/${target}`);
          expect(res.status).toBe(204);
          ledger.acked.delete(target!);
          ledger.pending.delete(target!);
          acked();
        }
      } catch (error) {
        // A request cut by the kill is expected; anything else before the kill is a failure.
        if (!killed) throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  return service.exited;
}

/** The rows the killed service left, read as the engine stores them. */
async function storedRows(env: Record<string, string>): Promise<({ id: number } & NoteState)[]> {
  if (env.DATABASE_PATH) {
    const db = new BetterSqlite3(env.DATABASE_PATH, { readonly: true, fileMustExist: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      return db.prepare("SELECT id, title, body FROM notes").all() as ({ id: number } & NoteState)[];
    } finally {
      db.close();
    }
  }
  const storage = await (await loadEngine(loadConfig({ ...env, LOG_LEVEL: "silent" }))).open();
  try {
    return await storage.kysely.selectFrom("notes").select(["id", "title", "body"]).execute();
  } finally {
    await storage.close();
  }
}

/** Compares the database with the ledger, then forgets what was in flight: it is now settled. */
async function verify(env: Record<string, string>, ledger: Ledger) {
  const rows = await storedRows(env);
  const stored = new Map(rows.map(({ id, title, body }) => [id, { title, body }]));
  for (const [id, note] of ledger.acked) {
    const pending = ledger.pending.get(id);
    const got = stored.get(id);
    if (pending === "deleted") {
      if (got) expect(got).toEqual(note);
    } else if (pending) {
      expect([note, pending]).toContainEqual(got);
    } else {
      expect(got, `acknowledged note ${id}`).toEqual(note);
    }
  }
  for (const [id, note] of stored) {
    if (ledger.acked.has(id)) continue;
    // Not acknowledged: it must be a POST that was in flight when the process died.
    expect(ledger.unackedTitles.has(note.title), `unexpected note ${id} ${note.title}`).toBe(true);
  }
  // Settle: whatever survived is now the truth the next round builds on.
  ledger.acked = stored;
  ledger.pending.clear();
  ledger.unackedTitles.clear();
}

const dir = makeTempDir("svc-crash-");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describeEngines("kill -9 under a concurrent write load", (engine) => {
  const rounds = engine === "sqlite" ? (SOAK ? 120 : 20) : SOAK ? 30 : 6;
  it(`keeps every acknowledged write over ${rounds} rounds${engine === "sqlite" ? ", with integrity_check ok each time" : ""}`, async () => {
    const env = await engineEnv(engine, fs.mkdtempSync(path.join(dir, `${engine}-`)));
    const file = env.DATABASE_PATH;
    const ledger = new Ledger();
    let service: ServiceChild | undefined;
    try {
      for (let round = 0; round < rounds; round++) {
        // SQLite recovers from -wal on open, PostgreSQL from its own WAL: verification reads what
        // the killed service left behind.
        service = await startService(env);
        const killAfter = 15 + ((round * 37) % 60);
        const exit = await loadAndKill(service, ledger, round, killAfter);
        expect(exit.signal).toBe("SIGKILL");
        // The kill leaves -wal behind: the crash really happened mid-stream, not after a checkpoint.
        if (file) expect(fs.existsSync(`${file}-wal`)).toBe(true);
        // A readonly connection can read a WAL database only while -shm exists; kill -9 leaves it.
        await verify(env, ledger);
      }
      service = await startService({ ...env, ADMIN_TOKEN });
      const health = await healthDetails(service.port);
      expect(health.status).toBe(200);
      expect(health.body.database.tables.notes).toBe(ledger.acked.size);
      console.info(
        `crash (${engine}): ${rounds} rounds of kill -9, ${ledger.acknowledged} writes acknowledged, all kept; ${ledger.acked.size} notes stored`,
      );
    } finally {
      service?.process.kill("SIGKILL");
    }
  }, 600_000);
});
