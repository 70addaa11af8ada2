// What the rest of the service reports to the metrics: a small typed API with no dependency, and a
// recorder that drops everything for when no token is set and prom-client is not even loaded.

export type Outcome = "success" | "failure";

export interface BackupEvent {
  /** The backup's kind as its file name says it: scheduled, manual, pre-migration, ... */
  kind: string;
  outcome: Outcome;
  seconds: number;
}

export interface MetricsRecorder {
  /** A statement failed with one of the kinds src/db/errors.ts sorts errors into. */
  statementError(kind: string): void;
  /** A WAL checkpoint ran: `busy` when a reader kept it from completing. */
  checkpoint(outcome: "complete" | "busy"): void;
  backupFinished(event: BackupEvent): void;
  /** A restore drill (restore into a scratch file, migrate, verify) finished. */
  drillFinished(event: { outcome: Outcome; seconds: number }): void;
  restoreFinished(event: { outcome: Outcome; seconds: number }): void;
  setMaintenance(on: boolean): void;
}

export const noMetrics: MetricsRecorder = {
  statementError() {},
  checkpoint() {},
  backupFinished() {},
  drillFinished() {},
  restoreFinished() {},
  setMaintenance() {},
};
