// Process and browser plumbing for the end-to-end run: real binaries, real Chromium, bounded waits,
// and cleanup of every child on any exit path.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, createWriteStream } from "node:fs";
import { createServer, connect } from "node:net";
import { join } from "node:path";

export class E2eError extends Error {}

export function fail(msg) {
  throw new E2eError(msg);
}

/** Waits until `fn` returns a truthy value, polling; throws with `what` after `timeoutMs`. */
export async function waitFor(what, fn, timeoutMs = 15_000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    await sleep(intervalMs);
  }
  fail(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr.message})` : ""}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Races a promise against a timeout so no await in the script can hang. */
export async function within(what, ms, promise) {
  let t;
  const timeout = new Promise((_, rej) => {
    t = setTimeout(() => rej(new E2eError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(t);
  }
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function portOpen(port) {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** The children's environment: no passphrase or server from the caller's shell, so the UI does it all. */
function childEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1" };
  delete env.DISCORDOPUS_PASSPHRASE;
  delete env.DISCORDOPUS_SERVER;
  for (const k of Object.keys(env)) if (k.startsWith("DOPUS_SERVER_")) delete env[k];
  return env;
}

/** Every child we start, so an exit handler can stop all of them. */
const children = new Set();

export function startProcess(name, bin, args, logDir) {
  mkdirSync(logDir, { recursive: true });
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: "a" });
  log.write(`\n=== ${new Date().toISOString()} ${bin} ${args.join(" ")}\n`);
  const child = spawn(bin, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: childEnv(),
  });
  const proc = { name, child, log, output: "", exited: null };
  const onData = (d) => {
    log.write(d);
    proc.output += d.toString();
    if (proc.output.length > 200_000) proc.output = proc.output.slice(-100_000);
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  child.on("exit", (code, signal) => {
    proc.exited = { code, signal };
    log.write(`=== exited code=${code} signal=${signal}\n`);
    children.delete(proc);
  });
  child.on("error", (e) => {
    proc.exited = { code: -1, signal: null, error: e };
    children.delete(proc);
  });
  children.add(proc);
  return proc;
}

export async function stopProcess(proc, timeoutMs = 10_000) {
  if (proc.exited) return;
  proc.child.kill("SIGTERM");
  const deadline = Date.now() + timeoutMs;
  while (!proc.exited && Date.now() < deadline) await sleep(50);
  if (!proc.exited) {
    proc.child.kill("SIGKILL");
    await waitFor(`${proc.name} to die`, () => proc.exited, 5000);
  }
}

export function killAll() {
  for (const proc of children) {
    try {
      proc.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
  children.clear();
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}
process.on("exit", killAll);

/** Reads `<dataDir>/api.json` once it names the given pid (a stale file from a previous run is ignored). */
export async function readApiFile(dataDir, pid, proc, timeoutMs = 30_000) {
  const path = join(dataDir, "api.json");
  return waitFor(
    `${path} for pid ${pid}`,
    () => {
      if (proc.exited) {
        fail(`${proc.name} exited (${JSON.stringify(proc.exited)}) before writing api.json; its output:\n${proc.output.slice(-3000)}`);
      }
      if (!existsSync(path)) return null;
      const j = JSON.parse(readFileSync(path, "utf8"));
      if (j.version !== 1 || !j.url || !j.token) fail(`${path} does not match docs/api.md: ${Object.keys(j)}`);
      return j.pid === pid ? j : null;
    },
    timeoutMs,
  );
}

export function removeIfExists(path) {
  rmSync(path, { force: true });
}
