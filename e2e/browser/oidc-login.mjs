// A real headless Chromium logs in through an OpenID Connect upstream, as a person would:
// consent (approve) → /login/oidc → the provider (e2e/oidc-provider.mjs logs its current user
// in without a form) → /callback/oidc → back at the client. Chromium enforces each page's
// Content-Security-Policy, `form-action` included on every redirect after the consent form is
// submitted, so a policy that forgot the provider's origin stops this login. Then the refusal
// page of a user the allow-lists refuse, after switching the provider's user. One JSON line.
//
// usage: node oidc-login.mjs ISSUER PROVIDER_BASE REFUSED_USER
import { chromium } from "playwright-core";
import { startClientOr } from "./client.mjs";

const [issuer, providerBase, refusedUser] = process.argv.slice(2);
if (!issuer || !providerBase || !refusedUser) {
  console.error("usage: node oidc-login.mjs ISSUER PROVIDER_BASE REFUSED_USER");
  process.exit(2);
}
const deadline = setTimeout(() => fail("timed out after 60 s"), 60_000);
function fail(message) {
  console.log(JSON.stringify({ ok: false, error: String(message), csp_violations }));
  process.exit(1);
}
const csp_violations = [];

const client = await startClientOr(fail, issuer, "Browser OIDC client");
const { received, authorizeUrl } = client;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) csp_violations.push(m.text());
  });
  let { url, verifier } = authorizeUrl();
  await page.goto(url);
  await page.waitForSelector("text=Allow and continue");
  await page.click("button[value=approve]");
  await page.waitForURL(/127\.0\.0\.1:\d+\/callback\?/, { timeout: 20_000 });
  const back = received.at(-1);
  const code = back?.searchParams.get("code");
  if (!code) fail(`no code at the client: ${back}`);
  const tokens = await client.redeem(code, verifier);
  if (!tokens.access_token) fail(`token exchange failed: ${JSON.stringify(tokens)}`);
  const claims = JSON.parse(Buffer.from(tokens.access_token.split(".")[1], "base64url").toString());

  // A user no list admits: our page, in the browser, with its link back.
  await fetch(`${providerBase}/_test/login?user=${encodeURIComponent(refusedUser)}`, { method: "POST" });
  // Another person's browser (this one remembers alice's consent).
  const other = await (await browser.newContext()).newPage();
  other.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) csp_violations.push(m.text());
  });
  ({ url } = authorizeUrl());
  await other.goto(url);
  await other.waitForSelector("text=Allow and continue");
  await other.click("button[value=approve]");
  await other.waitForSelector("text=Return to the application", { timeout: 20_000 });
  const refusal = await other.textContent("body");
  console.log(JSON.stringify({
    ok: true,
    sub: claims.sub,
    amr: claims.amr,
    refusal_names_why: /not allowed to use this gateway/.test(refusal),
    csp_violations,
  }));
} catch (e) {
  fail(e?.message || e);
} finally {
  clearTimeout(deadline);
  await browser.close();
  client.close();
}
