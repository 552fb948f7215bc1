// graphile-worker draining N jobs shaped like an aiprod job: nine steps, each checkpointed in
// its own committed transaction before the next starts. Runs on a fresh database of its own
// (dropped afterwards, also on error) and prints one JSON line on stdout; diagnostics go to
// stderr so that the line can be piped.
//
//   node bench.mjs [--jobs N] [--concurrency C] [--database-url URL]

import { EventEmitter } from "node:events";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import pg from "pg";
import graphile from "graphile-worker";

const { run, runMigrations, makeWorkerUtils, Logger } = graphile;

const STEPS = 9;
const POLL_MS = 20;
const TASK = "bench_job";

function usage(message) {
  process.stderr.write(
    `${message}\nusage: node bench.mjs [--jobs N] [--concurrency C] [--database-url URL]\n`,
  );
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      jobs: { type: "string", default: "2000" },
      concurrency: { type: "string", default: "8" },
      "database-url": {
        type: "string",
        default: "postgres://postgres@127.0.0.1:5432/postgres",
      },
    },
    strict: true,
  }));
} catch (e) {
  usage(e.message);
}
const jobs = positiveInt(opts.jobs, "--jobs");
const concurrency = positiveInt(opts.concurrency, "--concurrency");
const serverUrl = opts["database-url"];

const version = JSON.parse(
  readFileSync(
    new URL("./node_modules/graphile-worker/package.json", import.meta.url),
    "utf8",
  ),
).version;

function positiveInt(s, flag) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) {
    usage(`${flag} must be a whole number of at least 1, not ${s}`);
  }
  return n;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, places = 1) => Math.round(x * 10 ** places) / 10 ** places;

// A per-job log line on stdout would both cost time inside the measurement and break the
// one-JSON-line contract, so only warnings and errors are kept, on stderr.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`graphile-worker ${level}: ${message}\n`);
  }
});

// A signal must not kill the process before the database is dropped: it is turned into an
// error that the drain loop throws, and the finally block drops the database.
let interrupted = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    interrupted = new Error(`interrupted by ${sig}`);
  });
}

// One step: a transaction that writes the step's checkpoint and advances the job, committed
// before the next step begins, as a durable-execution engine checkpoints each stage.
// clock_timestamp(), not now(): now() is the start of the transaction, which would leave the
// last step's own insert, update and commit out of the job's latency.
async function checkpoint(client, id, stage) {
  await client.query("begin");
  try {
    await client.query({
      name: "bench_checkpoint",
      text: "insert into bench_checkpoint (job_id, stage, output) values ($1, $2, $3)",
      values: [id, stage, { stage, ok: true }],
    });
    await client.query({
      name: "bench_stage",
      text: `update bench_job
                set stage = $2,
                    started_at = case when $2 = 1 then clock_timestamp() else started_at end,
                    finished_at = case when $2 = ${STEPS} then clock_timestamp() else finished_at end
              where id = $1`,
      values: [id, stage],
    });
    await client.query("commit");
  } catch (e) {
    await client.query("rollback").catch(() => {});
    throw e;
  }
}

const taskList = {
  async [TASK](payload, helpers) {
    for (let stage = 1; stage <= STEPS; stage++) {
      // A connection per step, returned between steps, as an engine that checkpoints and may
      // yield between stages would do; holding one for all nine would need a connection per
      // slot for the whole job.
      await helpers.withPgClient((client) => checkpoint(client, payload.id, stage));
    }
  },
};

async function withClient(url, fn) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

// pool.end() and client.end() return before the server has closed the sessions.
async function sessionsGone(admin, name, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await admin.query(
      "select count(*)::int as n from pg_stat_activity where datname = $1",
      [name],
    );
    if (rows[0].n === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
}

// Stats of a backend reach pg_stat_database when it exits (or at most once a second while it
// idles), so the commit counter is read only once no session is left on the database.
async function settledCommits(admin, name) {
  if (!(await sessionsGone(admin, name, 10_000))) {
    throw new Error(`sessions still on ${name} after 10 s`);
  }
  await admin.query("select pg_stat_clear_snapshot()");
  const { rows } = await admin.query(
    "select xact_commit::bigint as c from pg_stat_database where datname = $1",
    [name],
  );
  return Number(rows[0].c);
}

async function setup(url) {
  await runMigrations({ connectionString: url, logger });
  await withClient(url, async (c) => {
    await c.query(`
      create table bench_job (
        id bigint primary key,
        stage int not null default 0,
        created_at timestamptz default now(),
        started_at timestamptz,
        finished_at timestamptz
      );
      create table bench_checkpoint (
        job_id bigint,
        stage int,
        output jsonb,
        primary key (job_id, stage)
      );`);
    await c.query("insert into bench_job (id) select generate_series(1, $1::bigint)", [jobs]);
  });
  const utils = await makeWorkerUtils({ connectionString: url, logger });
  try {
    const t0 = performance.now();
    // Chunks keep a single statement's JSON argument bounded for large N.
    for (let first = 1; first <= jobs; first += 5000) {
      const specs = [];
      for (let id = first; id < Math.min(first + 5000, jobs + 1); id++) {
        specs.push({ identifier: TASK, payload: { id } });
      }
      await utils.addJobs(specs);
    }
    return (performance.now() - t0) / 1000;
  } finally {
    await utils.release();
  }
}

async function drain(url) {
  const events = new EventEmitter();
  let jobError = null;
  // A failing job would be retried with backoff and the drain would never end: stop instead.
  events.on("job:error", ({ job, error }) => {
    jobError ??= new Error(`job ${job.id} failed: ${error?.message ?? error}`);
  });

  // The pool is ours, not the runner's, so that it is closed (and its sessions gone) before
  // the commit counter is read or the database dropped, and so that a session killed by the
  // drop after a failure cannot crash the process with an unhandled pool error.
  const pool = new pg.Pool({
    connectionString: url,
    // Every slot may hold a connection for a step while the runner needs one to fetch or
    // complete a job and one to listen.
    max: concurrency + 2,
  });
  const lost = (e) => process.stderr.write(`pool session lost: ${e.message}\n`);
  pool.on("error", lost);
  pool.on("connect", (client) => client.on("error", lost));
  const poll = new pg.Client({ connectionString: url });
  let polls = 0;
  let runner = null;
  try {
    await poll.connect();
    const t0 = performance.now();
    runner = await run({
      pgPool: pool,
      concurrency,
      taskList,
      logger,
      events,
      noHandleSignals: true,
    });
    for (;;) {
      if (interrupted) throw interrupted;
      if (jobError) throw jobError;
      const { rows } = await poll.query({
        name: "bench_done",
        text: "select count(*)::int as n from bench_job where finished_at is not null",
      });
      polls++;
      if (rows[0].n >= jobs) break;
      await sleep(POLL_MS);
    }
    return { drainS: (performance.now() - t0) / 1000, polls };
  } finally {
    if (runner) {
      await runner.stop().catch(() => {});
      await runner.promise.catch(() => {});
    }
    await poll.end().catch(() => {});
    await pool.end().catch(() => {});
  }
}

async function main() {
  const name = `graphile_bench_${randomBytes(6).toString("hex")}`;
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  const url = u.toString();

  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database "${name}"`);
  try {
    const enqueueS = await setup(url);
    const c0 = await settledCommits(admin, name);
    const { drainS, polls } = await drain(url);
    const c1 = await settledCommits(admin, name);

    const r = await withClient(url, async (c) => {
      const { rows } = await c.query(
        `select (select count(*) from bench_job where stage = $1 and finished_at is not null)::int
                  as finished,
                (select count(*) from bench_checkpoint)::int as checkpoints,
                (select count(*) from graphile_worker.jobs)::int as left_in_queue,
                coalesce(percentile_cont(0.5) within group (
                    order by extract(epoch from finished_at - started_at)::float8 * 1000), 0)
                  as p50,
                coalesce(percentile_cont(0.99) within group (
                    order by extract(epoch from finished_at - started_at)::float8 * 1000), 0)
                  as p99
           from bench_job`,
        [STEPS],
      );
      return rows[0];
    });
    if (r.finished !== jobs || r.checkpoints !== jobs * STEPS || r.left_in_queue !== 0) {
      throw new Error(
        `incomplete run: ${r.finished}/${jobs} jobs finished, ` +
          `${r.checkpoints}/${jobs * STEPS} checkpoints, ${r.left_in_queue} jobs left in the queue`,
      );
    }

    process.stdout.write(
      JSON.stringify({
        engine: "graphile-worker",
        version,
        jobs,
        concurrency,
        jobs_per_s: round(jobs / drainS),
        checkpoints_per_s: round(r.checkpoints / drainS),
        // The poll's own commits land on the same database; they are the harness's, not the
        // engine's, so they are taken out.
        commits_per_job: round((c1 - c0 - polls) / jobs, 2),
        p50_ms: round(r.p50),
        p99_ms: round(r.p99),
        rss_mib: round(process.resourceUsage().maxRSS / 1024),
        drain_s: round(drainS, 3),
        enqueue_per_s: round(jobs / enqueueS),
      }) + "\n",
    );
  } finally {
    // FORCE: a session left behind by a failure must not keep the database alive.
    await sessionsGone(admin, name, 5_000).catch(() => {});
    await admin
      .query(`drop database if exists "${name}" with (force)`)
      .catch((e) => process.stderr.write(`cannot drop database ${name}: ${e.message}\n`));
    await admin.end().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench failed: ${e?.stack ?? e}\n`);
    process.exit(1);
  },
);
