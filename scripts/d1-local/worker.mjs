// d1-local worker: answers Cloudflare D1's REST API (`/query` and `/raw`) on top of
// a D1 binding (`env.DB`) provided by workerd through miniflare.
//
// Routes (any account id, any database id, any bearer token):
//   POST /client/v4/accounts/{account}/d1/database/{database}/query
//   POST /client/v4/accounts/{account}/d1/database/{database}/raw
//
// Body: {"sql": "...", "params": [...]}  or  {"batch": [{"sql": ..., "params": [...]}, ...]}
// A `sql` string may hold several `;`-separated statements (migration scripts); they are
// split the way SQLite's sqlite3_complete() does (so `CREATE TRIGGER ... BEGIN ...; END;`
// stays one statement) and run with the other statements of the request.
//
// Every request runs as ONE D1 batch, which D1 executes as one transaction: all statements
// succeed or none is applied. One result entry is returned per statement.
//
// Plain JS, no build step: workerd loads this file as an ES module.

const ROUTE = /^\/client\/v4\/accounts\/([^/]+)\/d1\/database\/([^/]+)\/(query|raw)\/?$/;

// Cloudflare API error codes. 7500 is what D1's REST API returns for SQL errors (HTTP 400);
// 10000 is Cloudflare's generic authentication error; 7000/7001 are the API gateway's
// "No route for that URI" / method errors. 7400 (malformed request body) is d1-local's own.
const CODE_SQL = 7500;
const CODE_BAD_REQUEST = 7400;
const CODE_AUTH = 10000;
const CODE_NO_ROUTE = 7000;
const CODE_METHOD = 7001;

function envelope(status, { result = null, errors = [], messages = [] } = {}) {
  return new Response(
    JSON.stringify({ result, success: errors.length === 0, errors, messages }),
    { status, headers: { "content-type": "application/json" } },
  );
}

function failure(status, code, message) {
  return envelope(status, { errors: [{ code, message }] });
}

class RequestError extends Error {
  constructor(message) {
    super(message);
    this.name = "RequestError";
  }
}

function authorized(request) {
  const auth = request.headers.get("authorization") || "";
  if (/^bearer\s+\S+/i.test(auth)) return true;
  // Cloudflare's legacy scheme (global API key) is accepted too.
  return Boolean(request.headers.get("x-auth-email") && request.headers.get("x-auth-key"));
}

// ---------------------------------------------------------------------------
// Splitting a SQL script into statements: a port of SQLite's sqlite3_complete()
// state machine (src/complete.c). A statement ends at a `;` that leaves the machine in
// the START state; inside CREATE TRIGGER only `; END ;` ends it.
// ---------------------------------------------------------------------------
const TK_SEMI = 0, TK_WS = 1, TK_OTHER = 2, TK_EXPLAIN = 3, TK_CREATE = 4, TK_TEMP = 5,
  TK_TRIGGER = 6, TK_END = 7;
// prettier-ignore
const TRANS = [
  /*            SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END */
  /* 0 INVALID */ [1, 0, 2, 3, 4, 2, 2, 2],
  /* 1 START   */ [1, 1, 2, 3, 4, 2, 2, 2],
  /* 2 NORMAL  */ [1, 2, 2, 2, 2, 2, 2, 2],
  /* 3 EXPLAIN */ [1, 3, 3, 2, 4, 2, 2, 2],
  /* 4 CREATE  */ [1, 4, 2, 2, 2, 4, 5, 2],
  /* 5 TRIGGER */ [6, 5, 5, 5, 5, 5, 5, 5],
  /* 6 SEMI    */ [6, 6, 5, 5, 5, 5, 5, 7],
  /* 7 END     */ [1, 7, 5, 5, 5, 5, 5, 5],
];
const KEYWORDS = {
  create: TK_CREATE, temp: TK_TEMP, temporary: TK_TEMP, trigger: TK_TRIGGER, end: TK_END,
  explain: TK_EXPLAIN,
};

function isIdChar(ch) {
  return /[A-Za-z0-9_$]/.test(ch) || ch.charCodeAt(0) > 0x7f;
}

/** Split `sql` into statements (without their terminating `;`), dropping empty ones. */
export function splitStatements(sql) {
  const out = [];
  let state = 0;
  let start = 0;
  let hasContent = false; // any non-whitespace, non-comment token in the current statement
  let i = 0;
  const n = sql.length;
  const push = (end) => {
    if (hasContent) out.push(sql.slice(start, end).trim());
    hasContent = false;
  };
  while (i < n) {
    const ch = sql[i];
    let token;
    if (ch === ";") {
      token = TK_SEMI;
      i += 1;
    } else if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || ch === "\f") {
      token = TK_WS;
      i += 1;
    } else if (ch === "/" && sql[i + 1] === "*") {
      const close = sql.indexOf("*/", i + 2);
      i = close < 0 ? n : close + 2;
      token = TK_WS;
    } else if (ch === "-" && sql[i + 1] === "-") {
      const nl = sql.indexOf("\n", i + 2);
      i = nl < 0 ? n : nl + 1;
      token = TK_WS;
    } else if (ch === "'" || ch === '"' || ch === "`" || ch === "[") {
      const close = ch === "[" ? "]" : ch;
      let j = i + 1;
      for (;;) {
        const k = sql.indexOf(close, j);
        if (k < 0) { j = n; break; }
        // Doubled quote inside a quoted string is an escaped quote ([...] has no escape).
        if (close !== "]" && sql[k + 1] === close) { j = k + 2; continue; }
        j = k + 1;
        break;
      }
      i = j;
      token = TK_OTHER;
    } else if (isIdChar(ch)) {
      let j = i + 1;
      while (j < n && isIdChar(sql[j])) j += 1;
      token = KEYWORDS[sql.slice(i, j).toLowerCase()] ?? TK_OTHER;
      i = j;
    } else {
      token = TK_OTHER;
      i += 1;
    }
    if (token !== TK_WS && token !== TK_SEMI) hasContent = true;
    state = TRANS[state][token];
    if (token === TK_SEMI && state === 1) {
      push(i - 1);
      start = i;
    }
  }
  push(n);
  return out;
}

// ---------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------
function parseQuery(q, where) {
  if (q === null || typeof q !== "object" || Array.isArray(q)) {
    throw new RequestError(`${where}: expected an object with "sql" and optional "params"`);
  }
  if (typeof q.sql !== "string") throw new RequestError(`${where}: "sql" must be a string`);
  const params = q.params ?? [];
  if (!Array.isArray(params)) throw new RequestError(`${where}: "params" must be an array`);
  const statements = splitStatements(q.sql);
  if (statements.length === 0) throw new RequestError(`${where}: No SQL statements detected.`);
  if (statements.length > 1 && params.length > 0) {
    throw new RequestError(
      `${where}: params given for a SQL string holding ${statements.length} statements; ` +
        `send them as separate entries of "batch"`,
    );
  }
  return statements.map((sql) => ({ sql, params: statements.length === 1 ? params : [] }));
}

function parseBody(body) {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new RequestError('request body must be a JSON object with "sql" or "batch"');
  }
  if ("batch" in body) {
    if (!Array.isArray(body.batch) || body.batch.length === 0) {
      throw new RequestError('"batch" must be a non-empty array of {"sql", "params"} objects');
    }
    return body.batch.flatMap((q, i) => parseQuery(q, `batch[${i}]`));
  }
  return parseQuery(body, "body");
}

// ---------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------
function withRestMeta(meta) {
  // D1's REST API reports these in addition to the binding's meta.
  const out = { ...meta };
  if (out.served_by_primary === undefined) out.served_by_primary = true;
  if (out.timings === undefined && typeof out.duration === "number") {
    out.timings = { sql_duration_ms: out.duration };
  }
  return out;
}

function objectsToRaw(results) {
  const columns = results.length > 0 ? Object.keys(results[0]) : [];
  return { columns, rows: results.map((row) => columns.map((c) => row[c])) };
}

async function execute(db, queries, raw) {
  // bind() is the binding's own validation and conversion (booleans -> 1/0, bytes, ...).
  const prepared = queries.map((q) => db.prepare(q.sql).bind(...q.params));
  if (raw) {
    // The public binding API turns rows into objects, which loses columns whose names
    // repeat (joins) and the column list of empty results. The binding's session sends the
    // very same batch request but can keep D1's ROWS_AND_COLUMNS interchange format.
    const session = typeof db.withSession === "function" ? db.withSession("first-primary") : null;
    if (session && typeof session._sendOrThrow === "function") {
      let answer;
      try {
        answer = await session._sendOrThrow(
          "/query",
          prepared.map((p) => p.statement),
          prepared.map((p) => p.params),
          "ROWS_AND_COLUMNS",
        );
      } catch {
        // This internal path loses D1's error (it fails while wrapping it). The batch wrote
        // nothing (all or nothing): run it again through the public API, which reports the
        // error as D1 words it (or, should a concurrent change have cleared it, succeeds).
        return publicExecute(db, prepared, raw);
      }
      const list = Array.isArray(answer) ? answer : [answer];
      return list.map((r) => ({
        results: r.results && !Array.isArray(r.results)
          ? { columns: r.results.columns, rows: r.results.rows }
          : objectsToRaw(r.results || []),
        success: true,
        meta: withRestMeta(r.meta || {}),
      }));
    }
  }
  return publicExecute(db, prepared, raw);
}

async function publicExecute(db, prepared, raw) {
  const results = prepared.length === 1 ? [await prepared[0].all()] : await db.batch(prepared);
  return results.map((r) => ({
    results: raw ? objectsToRaw(r.results || []) : r.results || [],
    success: true,
    meta: withRestMeta(r.meta || {}),
  }));
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const match = ROUTE.exec(url.pathname);
    if (!match) return failure(404, CODE_NO_ROUTE, "No route for that URI");
    if (!authorized(request)) {
      return failure(401, CODE_AUTH, "Authentication error: missing Authorization: Bearer header");
    }
    if (request.method !== "POST") return failure(405, CODE_METHOD, "Method not allowed");
    const raw = match[3] === "raw";
    let queries;
    try {
      queries = parseBody(JSON.parse(await request.text()));
    } catch (e) {
      const msg = e instanceof RequestError ? e.message : `invalid JSON body: ${e.message}`;
      return failure(400, CODE_BAD_REQUEST, msg);
    }
    try {
      return envelope(200, { result: await execute(env.DB, queries, raw) });
    } catch (e) {
      // D1 errors (SQL errors, constraint violations, D1_TYPE_ERROR from bind, ...).
      return failure(400, CODE_SQL, String(e && e.message ? e.message : e));
    }
  },
};
