// Worker thread entry: prepares and verifies a fresh backup copy off the service's event loop
// (see prepareBackupCopyInWorker in backup.ts). Runs only when started as a worker.
import { parentPort, workerData } from "node:worker_threads";
import { BackupError, prepareBackupCopy } from "./backup.ts";

try {
  prepareBackupCopy((workerData as { file: string }).file);
  parentPort!.postMessage({});
} catch (error) {
  parentPort!.postMessage({ error: (error as Error).message, backupError: error instanceof BackupError });
}
