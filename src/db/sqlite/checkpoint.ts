// Explicit WAL checkpoints: fold the write-ahead log back into the database file and truncate it.
// https://www.sqlite.org/pragma.html#pragma_wal_checkpoint
import BetterSqlite3 from "better-sqlite3";
import type { CheckpointResult } from "../storage.ts";
import { fileSize } from "./stats.ts";

/**
 * `wal_checkpoint(TRUNCATE)` through a connection of its own: safe while the service runs. It waits
 * up to `busyTimeoutMs` for readers to finish with the frames it needs; when they do not, it
 * reports `busy` and leaves the rest for the next checkpoint (nothing is lost either way).
 */
export function checkpointDatabase(databasePath: string, busyTimeoutMs: number): CheckpointResult {
  const walBytesBefore = fileSize(`${databasePath}-wal`);
  const db = new BetterSqlite3(databasePath, { fileMustExist: true, timeout: busyTimeoutMs });
  try {
    const mode = db.pragma("journal_mode", { simple: true });
    if (mode !== "wal") {
      return { busy: false, walPages: 0, checkpointedPages: 0, walBytesBefore, walBytesAfter: 0 };
    }
    // A TRUNCATE checkpoint that succeeds resets the log and reports zero frames, so a PASSIVE one
    // first measures the log and moves what it can without waiting on anyone.
    const passive = checkpoint(db, "PASSIVE");
    const truncate = checkpoint(db, "TRUNCATE");
    return {
      busy: truncate.busy !== 0,
      walPages: Math.max(0, passive.log),
      checkpointedPages: Math.max(0, truncate.busy === 0 ? passive.log : passive.checkpointed),
      walBytesBefore,
      walBytesAfter: fileSize(`${databasePath}-wal`),
    };
  } finally {
    db.close();
  }
}

function checkpoint(db: BetterSqlite3.Database, mode: "PASSIVE" | "TRUNCATE") {
  return (db.pragma(`wal_checkpoint(${mode})`) as { busy: number; log: number; checkpointed: number }[])[0]!;
}
