// Backing up a large live database, against a plain copy of its file, while a reader on the
// service's connection asks for a note every millisecond: how long each takes, and how late
// the reader's answers come (a synchronous copy holds the event loop for its whole length).
import fs from "node:fs";
import path from "node:path";
import { type SqliteDb as Database, openSqlite } from "../../src/db/sqlite/open.ts";
import { takeBackup, takeOnlineBackup } from "../../src/db/sqlite/snapshot.ts";
import { median, round } from "./stats.ts";

export interface BackupRow {
  name: string;
  ms: number;
  /** This method's time over the plain file copy's, in the same run. */
  vsCopy: number;
  /** The latest any reader answer came, over all rounds (ms). */
  readerWorstMs: number;
  bytes: number;
}

export interface BackupSettings {
  file: string;
  notes: number;
  workDir: string;
  rounds: number;
}

interface Method {
  name: string;
  run(db: Database, target: string): Promise<void> | void;
}

// The copies alone, then the project's backups, which also switch the copy to rollback-journal
// mode, run integrity_check on it and fsync it before renaming it into place.
const METHODS: Method[] = [
  { name: "file copy (cp)", run: (db, target) => fs.promises.copyFile(db.path, target) },
  // What a copy costs once it is on disk, as every backup of this project is (fsync).
  {
    name: "file copy + fsync",
    run: async (db, target) => {
      await fs.promises.copyFile(db.path, target);
      const handle = await fs.promises.open(target, "r+");
      await handle.sync();
      await handle.close();
    },
  },
  {
    name: "online backup API, copy only",
    run: async (db, target) => {
      await db.sqlite.backup(target, { progress: () => 256 });
    },
  },
  {
    name: "VACUUM INTO, copy only",
    run: (db, target) => {
      db.sqlite.prepare("VACUUM INTO ?").run(target);
    },
  },
  {
    name: "takeOnlineBackup (scheduled backups)",
    run: async (db, target) => {
      await takeOnlineBackup({ databasePath: db.path, backupDir: path.dirname(target), kind: "manual" });
    },
  },
  {
    name: "takeBackup: VACUUM INTO on the calling thread",
    run: (db, target) => {
      takeBackup({ databasePath: db.path, backupDir: path.dirname(target), kind: "manual" });
    },
  },
];

/** Reads a random note each millisecond; returns how late the latest answer was. */
function startReader(db: Database, notes: number): () => number {
  const read = db.sqlite.prepare("SELECT * FROM notes WHERE id = ?");
  let worst = 0;
  let stopped = false;
  let timer: NodeJS.Timeout;
  const tick = (due: number) => {
    read.get(1 + Math.floor(Math.random() * notes));
    const now = performance.now();
    worst = Math.max(worst, now - due);
    if (!stopped) timer = setTimeout(tick, 1, now + 1);
  };
  timer = setTimeout(tick, 1, performance.now() + 1);
  return () => {
    stopped = true;
    clearTimeout(timer);
    return worst;
  };
}

export async function runBackups({ file, notes, workDir, rounds }: BackupSettings): Promise<BackupRow[]> {
  const db = openSqlite({ path: file, backupDir: path.join(workDir, "backups"), busyTimeoutMs: 2000 });
  const times = new Map<string, number[]>(METHODS.map((m) => [m.name, []]));
  const worst = new Map<string, number>();
  const bytes = new Map<string, number>();
  try {
    for (let n = 0; n < rounds; n++) {
      for (const method of METHODS) {
        const dir = fs.mkdtempSync(path.join(workDir, "backup-"));
        const target = path.join(dir, "copy.db");
        const stopReader = startReader(db, notes);
        const started = performance.now();
        await method.run(db, target);
        times.get(method.name)!.push(performance.now() - started);
        // One more turn of the loop so a reader held up by the backup gets its (late) answer.
        await new Promise((resolve) => setTimeout(resolve, 2));
        worst.set(method.name, Math.max(worst.get(method.name) ?? 0, stopReader()));
        bytes.set(
          method.name,
          fs.readdirSync(dir).reduce((s, f) => s + fs.statSync(path.join(dir, f)).size, 0),
        );
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    db.close();
  }
  const copyMs = median(times.get(METHODS[0]!.name)!);
  return METHODS.map((m) => {
    const ms = median(times.get(m.name)!);
    return {
      name: m.name,
      ms: round(ms),
      vsCopy: round(ms / copyMs),
      readerWorstMs: round(worst.get(m.name)!),
      bytes: bytes.get(m.name)!,
    };
  });
}
