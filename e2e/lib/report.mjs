// The report an e2e script hands to the Rust test that runs it: ONE JSON line on stdout (the
// test reads the last line), everything else on stderr, and a deadline after which the report
// is printed as it stands.

/** Prints `obj` as one JSON line on stdout. */
export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

/**
 * Starts the report `out`: console.log goes to stderr, and after `ms` the report is printed
 * with `timedOut()`'s fields and the script exits 3. Returns `finish(fields, code)`, which
 * prints the report with `fields` on top and exits with `code`.
 */
export function startReport(out, { ms = Number(process.env.E2E_TIMEOUT_MS || 60000), timedOut = () => ({ ok: false, error: "timed out" }) } = {}) {
  console.log = (...a) => console.error(...a);
  const timer = setTimeout(() => {
    emit({ ...out, ...timedOut() });
    process.exit(3);
  }, ms);
  return (fields = {}, code = 0) => {
    clearTimeout(timer);
    emit({ ...out, ...fields });
    process.exit(code);
  };
}

/**
 * Runs `main`, then `finish`es: as `main` left the report, or with ok: false, the error's
 * message and `errorFields(e)` (by default its details) when it threw.
 */
export function runMain(main, finish, errorFields = (e) => ({ details: e?.details })) {
  main().then(
    () => finish(),
    (e) => finish({ ok: false, error: e?.message || String(e), ...errorFields(e) }, 1),
  );
}

/**
 * A fetch that logs each exchange in `log` ({method, url without its query, …describe(input,
 * init), status, www_authenticate}) and gives up after 15 s unless the caller set a signal.
 */
export function fetchRecordingInto(log, describe = () => ({})) {
  return (input, init = {}) => {
    const url = typeof input === "string" ? input : input.url ?? String(input);
    const entry = { method: init.method || "GET", url: url.split("?")[0], ...describe(input, init) };
    log.push(entry);
    return fetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(15000) }).then((res) => {
      entry.status = res.status;
      const wa = res.headers.get("www-authenticate");
      if (wa) entry.www_authenticate = wa;
      return res;
    });
  };
}

/** The text parts of an MCP tool result, joined by newlines. */
export const textOf = (result) => (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
