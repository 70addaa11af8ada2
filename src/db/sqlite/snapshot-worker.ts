// Worker thread entry for takeOnlineBackup (snapshot.ts): the snapshot, its verification and fsync,
// off the service's event loop. Runs only when started as a worker.
import { parentPort, workerData } from "node:worker_threads";
import { BackupError } from "../storage.ts";
import { snapshotInto } from "./snapshot.ts";

const { source, file } = workerData as { source: string; file: string };
try {
  snapshotInto(source, file);
  parentPort!.postMessage({});
} catch (error) {
  parentPort!.postMessage({ error: (error as Error).message, backupError: error instanceof BackupError });
}
