// d1-local launcher: runs Cloudflare's workerd (through miniflare) with one D1 database
// persisted in DIR and the REST-API worker (worker.mjs) in front of it.
//
// Usage: node serve.mjs PORT DIR      (PORT 0 picks a free port)
// Prints `d1-local listening on http://127.0.0.1:PORT/client/v4` once it answers.
// SIGINT / SIGTERM / SIGHUP: dispose miniflare (stops workerd), then exit 0.
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Log, LogLevel, Miniflare } from "miniflare";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HOST = "127.0.0.1";
// Fixed so that behaviour does not drift with the date the server is started on.
const COMPATIBILITY_DATE = "2026-04-01";
// One D1 database; every account/database id in the URL maps to it.
const DATABASE_ID = "d1-local";

function usage(message) {
  console.error(`d1-local: ${message}\nusage: node serve.mjs PORT DIR`);
  process.exit(2);
}

const [portArg, dirArg] = process.argv.slice(2);
if (portArg === undefined || dirArg === undefined) usage("PORT and DIR are required");
if (!/^\d+$/.test(portArg) || Number(portArg) > 65535) usage(`bad PORT: ${portArg}`);
const port = Number(portArg);
const dir = path.resolve(dirArg);
mkdirSync(dir, { recursive: true });

// If this node process is killed with SIGKILL it cannot stop workerd itself; ask the kernel
// to do it (parent-death signal) by starting workerd through setpriv, where available.
if (process.platform === "linux" && !process.env.MINIFLARE_WORKERD_PATH) {
  const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));
  if (setpriv) {
    // The workerd binary miniflare itself would run (its own dependency).
    const fromMiniflare = createRequire(createRequire(import.meta.url).resolve("miniflare"));
    process.env.D1_LOCAL_WORKERD_BIN = fromMiniflare("workerd").default;
    process.env.D1_LOCAL_SETPRIV = setpriv;
    process.env.MINIFLARE_WORKERD_PATH = path.join(HERE, "workerd-pdeathsig.sh");
  }
}

const signalsBefore = new Map(
  ["SIGINT", "SIGTERM", "SIGHUP"].map((s) => [s, new Set(process.listeners(s))]),
);

const mf = new Miniflare({
  modules: true,
  scriptPath: path.join(HERE, "worker.mjs"),
  modulesRoot: HERE, // module names are relative to this (not to the caller's cwd)
  compatibilityDate: COMPATIBILITY_DATE,
  d1Databases: { DB: DATABASE_ID },
  d1Persist: dir,
  host: HOST,
  port,
  cf: false, // no network: do not fetch the Request.cf object
  log: new Log(LogLevel.WARN),
});

// miniflare installs SIGINT/SIGTERM handlers that kill workerd and exit at once (130/143).
// Replace them with a graceful dispose; its process "exit" hook stays as a safety net.
for (const [signal, before] of signalsBefore) {
  for (const listener of process.listeners(signal)) {
    if (!before.has(listener)) process.removeListener(signal, listener);
  }
}
let stopping = false;
async function stop(signal) {
  if (stopping) process.exit(1); // second signal: exit now (the exit hook kills workerd)
  stopping = true;
  const timer = setTimeout(() => process.exit(1), 10_000);
  timer.unref();
  try {
    await mf.dispose();
  } catch (e) {
    console.error(`d1-local: dispose failed after ${signal}: ${e}`);
    process.exit(1);
  }
  process.exit(0);
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => stop(signal));

try {
  const url = await mf.ready;
  console.log(`d1-local listening on http://${HOST}:${url.port}/client/v4`);
} catch (e) {
  console.error(`d1-local: failed to start: ${e && e.stack ? e.stack : e}`);
  await mf.dispose().catch(() => {});
  process.exit(1);
}
