// The browser's part of the authorization-code flow, driven headlessly with fetch: follows the
// gateway's redirects one at a time (redirect: "manual"), keeps cookies per origin, submits the
// consent form with "approve", passes through the (fake) GitHub login, and stops at the first
// redirect to the client's redirect_uri. No dependencies.
//
// Expected shape (the gateway's interface; each hop is checked and recorded in `steps`):
//   GET  {issuer}/authorize?…            307 → {issuer}/consent?request=ID
//   GET  {issuer}/consent?request=ID     200 HTML: <form method="post" action="/consent"> with hidden
//                                        `request`, `csrf_token`; Set-Cookie mcp_csrf=…
//   POST {issuer}/consent                303 → GITHUB_AUTHORIZE_URL?client_id&redirect_uri={issuer}/callback&state&scope
//   GET  github authorize                302 → {issuer}/callback?code&state
//   GET  {issuer}/callback?…             302 → redirect_uri?code&state&iss
//
// Against `mcp-gateway dev` the consent POST goes to its development login page instead of
// GitHub; that form is submitted as the user E2E_DEV_LOGIN (default alice), and it redirects to
// the client like the callback.

const BROWSER_HEADERS = {
  "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) mcp-gateway-e2e/1.0",
  Accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
  "Accept-Language": "en",
};

export class FlowError extends Error {
  constructor(message, details = {}) {
    super(message);
    this.details = details;
  }
}

/** Decodes the HTML entities a server may use inside attribute values. */
export function htmlDecode(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");
}

function attrs(tag) {
  const out = {};
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  const body = tag.replace(/^<\s*[a-zA-Z]+/, "").replace(/\/?>$/, "");
  let m;
  while ((m = re.exec(body))) {
    out[m[1].toLowerCase()] = htmlDecode(m[2] ?? m[3] ?? m[4] ?? "");
  }
  return out;
}

/** The first POST form of a page: its action, hidden inputs and the approve button. */
export function parseConsentForm(html) {
  const forms = [...html.matchAll(/<form\b[^>]*>([\s\S]*?)<\/form>/gi)];
  for (const f of forms) {
    const formTag = f[0].match(/<form\b[^>]*>/i)[0];
    const fa = attrs(formTag);
    if ((fa.method || "get").toLowerCase() !== "post") continue;
    const fields = {};
    for (const input of f[1].matchAll(/<input\b[^>]*>/gi)) {
      const a = attrs(input[0]);
      if ((a.type || "text").toLowerCase() === "hidden" && a.name) fields[a.name] = a.value ?? "";
    }
    let approve = null;
    for (const button of f[1].matchAll(/<(?:button|input)\b[^>]*>/gi)) {
      const a = attrs(button[0]);
      if (a.name === "decision" && a.value === "approve") approve = { name: a.name, value: a.value };
    }
    return { action: fa.action ?? "", fields, approve, formTag };
  }
  return null;
}

class CookieJar {
  constructor() {
    this.byOrigin = new Map();
  }
  store(url, res) {
    const origin = new URL(url).origin;
    const jar = this.byOrigin.get(origin) ?? new Map();
    const setCookies = typeof res.headers.getSetCookie === "function" ? res.headers.getSetCookie() : [];
    const parsed = [];
    for (const sc of setCookies) {
      const [pair, ...attributes] = sc.split(";");
      const i = pair.indexOf("=");
      if (i < 0) continue;
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      const maxAge = attributes.find((a) => /^\s*max-age\s*=/i.test(a));
      if (value === "" || (maxAge && Number(maxAge.split("=")[1]) <= 0)) jar.delete(name);
      else jar.set(name, value);
      parsed.push({ name, attributes: attributes.map((a) => a.trim()) });
    }
    this.byOrigin.set(origin, jar);
    return parsed;
  }
  header(url) {
    const jar = this.byOrigin.get(new URL(url).origin);
    if (!jar || jar.size === 0) return undefined;
    return [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

/** A URL with the values of secret-looking query parameters shortened, for logs. */
export function redact(u) {
  try {
    const url = new URL(u);
    for (const k of ["code", "state", "code_challenge", "request", "csrf_token", "client_secret"]) {
      const v = url.searchParams.get(k);
      if (v && v.length > 8) url.searchParams.set(k, `${v.slice(0, 4)}…(${v.length})`);
    }
    return url.toString();
  } catch {
    return String(u);
  }
}

/**
 * Runs the browser step from the authorization URL until the gateway redirects to `redirectUri`.
 * Returns { callbackUrl, code, state, iss, steps, githubAuthorizeUrl }.
 * With `strict`, each hop must have the documented status and target (see the top of the file).
 */
export async function browserLogin(authorizationUrl, { redirectUri, issuer, strict = true, timeoutMs = 10000, maxHops = 12 }) {
  const jar = new CookieJar();
  const steps = [];
  const issuerOrigin = issuer ? new URL(issuer).origin : new URL(authorizationUrl).origin;
  let method = "GET";
  let url = String(authorizationUrl);
  let body;
  let headers = {};
  let referer;
  let githubAuthorizeUrl;
  const fail = (message, extra = {}) => {
    throw new FlowError(message, { steps, ...extra });
  };

  for (let hop = 0; hop < maxHops; hop++) {
    const h = { ...BROWSER_HEADERS, ...headers };
    const cookie = jar.header(url);
    if (cookie) h.Cookie = cookie;
    if (referer) h.Referer = referer;
    let res;
    try {
      res = await fetch(url, { method, headers: h, body, redirect: "manual", signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      fail(`${method} ${redact(url)} failed: ${e?.cause?.message || e.message}`);
    }
    const location = res.headers.get("location");
    const setCookies = jar.store(url, res);
    const text = res.status >= 300 && res.status < 400 ? "" : await res.text();
    const u = new URL(url);
    const step = {
      method,
      url: redact(url),
      status: res.status,
      ...(location ? { location: redact(new URL(location, url)) } : {}),
      ...(setCookies.length ? { set_cookie: setCookies } : {}),
    };
    const csp = res.headers.get("content-security-policy");
    if (csp) step.csp = csp;
    steps.push(step);

    if (res.status >= 300 && res.status < 400) {
      if (!location) fail(`${method} ${redact(url)}: ${res.status} without Location`);
      const next = new URL(location, url).toString();
      const isIssuer = u.origin === issuerOrigin;
      if (strict && isIssuer) {
        if (u.pathname.endsWith("/authorize") && method === "GET") {
          if (res.status !== 307 && res.status !== 302 && res.status !== 303)
            fail(`GET /authorize answered ${res.status}, expected 307 to the consent page`);
          step.expect = "307 → {issuer}/consent?request=ID";
        }
        // On to GitHub (another origin); the development login and the OpenID upstream's own
        // first step (/login/oidc) stay on ours.
        if (u.pathname.endsWith("/consent") && method === "POST" && new URL(next).origin !== issuerOrigin) {
          if (res.status !== 303) fail(`POST /consent answered ${res.status}, expected 303 to GitHub`);
          githubAuthorizeUrl = next;
          const g = new URL(next).searchParams;
          for (const p of ["client_id", "redirect_uri", "state"]) if (!g.get(p)) fail(`the redirect to GitHub lacks ${p}: ${redact(next)}`);
          const expectCb = `${issuer ?? issuerOrigin}/callback`;
          if (issuer && g.get("redirect_uri") !== expectCb) fail(`GitHub redirect_uri is ${g.get("redirect_uri")}, expected ${expectCb}`);
        }
      }
      if (next.startsWith(redirectUri)) {
        const cb = new URL(next).searchParams;
        const err = cb.get("error");
        if (err) fail(`the authorization server redirected with error=${err}: ${cb.get("error_description") ?? ""}`, { callback: next });
        return {
          callbackUrl: next,
          code: cb.get("code"),
          state: cb.get("state"),
          iss: cb.get("iss"),
          codeCount: cb.getAll("code").length,
          steps,
          githubAuthorizeUrl,
        };
      }
      referer = undefined;
      method = "GET";
      body = undefined;
      headers = {};
      url = next;
      continue;
    }

    if (res.status === 200 && /<form/i.test(text) && u.pathname.endsWith("/dev/login")) {
      const form = parseConsentForm(text);
      if (!form) fail(`${redact(url)}: the development login has no POST form`);
      step.form = { action: form.action, fields: Object.keys(form.fields) };
      const params = new URLSearchParams(form.fields);
      params.set("login", process.env.E2E_DEV_LOGIN || "alice");
      referer = url;
      url = new URL(form.action || u.pathname, url).toString();
      method = "POST";
      body = params.toString();
      headers = { "Content-Type": "application/x-www-form-urlencoded", Origin: u.origin };
      continue;
    }

    if (res.status === 200 && /<form/i.test(text)) {
      const form = parseConsentForm(text);
      if (!form) fail(`${redact(url)}: a page with no POST form`, { page: text.slice(0, 2000) });
      if (strict) {
        if (!u.pathname.endsWith("/consent")) fail(`a form on ${u.pathname}, expected the consent page`);
        for (const f of ["request", "csrf_token"]) if (!(f in form.fields)) fail(`the consent form has no hidden input ${f}`, { form: form.formTag, fields: Object.keys(form.fields) });
        if (!form.approve) fail('the consent form has no button name="decision" value="approve"', { page: text.slice(0, 2000) });
        if (!setCookies.some((c) => c.name === "mcp_csrf") && !jar.header(url)?.includes("mcp_csrf=")) fail("the consent page set no mcp_csrf cookie");
      }
      step.form = { action: form.action, fields: Object.keys(form.fields) };
      const params = new URLSearchParams(form.fields);
      params.set("decision", "approve");
      referer = url;
      url = new URL(form.action || u.pathname, url).toString();
      method = "POST";
      body = params.toString();
      headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        Origin: u.origin,
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
      };
      continue;
    }

    fail(`${method} ${redact(url)} answered ${res.status}${location ? "" : " with no redirect"}`, { body: text.slice(0, 2000) });
  }
  fail(`no redirect to ${redirectUri} after ${maxHops} hops`);
}
