// Drives a real headless Chromium through the gateway's pages, as a person would:
// consent → development login → TOTP enrolment (reading the key off the page, computing the
// code like an authenticator app) → recovery codes → back at the client; then a second login
// with a code. Saves a screenshot of each page (phone width) and prints one JSON line.
//
// usage: node login.mjs ISSUER SCREENSHOT_DIR
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { startClientOr } from "./client.mjs";
import { mkdirSync } from "node:fs";

const [issuer, shots] = process.argv.slice(2);
if (!issuer || !shots) {
  console.error("usage: node login.mjs ISSUER SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const deadline = setTimeout(() => fail("timed out after 90 s"), 90_000);

function fail(message) {
  console.log(JSON.stringify({ ok: false, error: String(message) }));
  process.exit(1);
}

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/\s+/g, "")) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8; }
  }
  return Buffer.from(out);
}

// RFC 6238, as an authenticator app computes it.
function totp(secret, offsetSteps = 0) {
  const step = Math.floor(Date.now() / 1000 / 30) + offsetSteps;
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", secret).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 1_000_000).padStart(6, "0");
}

// The "client": a loopback redirect receiver (client.mjs).
const client = await startClientOr(fail, issuer, "Browser test client");
const { received, authorizeUrl } = client;

async function redeem(code, verifier) {
  const body = await client.redeem(code, verifier);
  if (!body.access_token) fail(`token request failed: ${JSON.stringify(body)}`);
  return JSON.parse(Buffer.from(body.access_token.split(".")[1], "base64url").toString());
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const steps = [];
try {
  // A phone-sized window: the pages must be readable there.
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
  const page = await context.newPage();
  // Chromium under load sometimes fails a capture ("Unable to capture screenshot"): the page
  // is there, so try again a few times before calling it a failure.
  const shot = async (name) => {
    for (let attempt = 1; ; attempt++) {
      try {
        await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
        break;
      } catch (e) {
        if (attempt >= 4) throw e;
        await new Promise((r) => setTimeout(r, 250 * attempt));
      }
    }
    steps.push(name);
  };

  // First login: consent, development login, enrolment.
  let { url, verifier } = authorizeUrl();
  await page.goto(url);
  await page.waitForSelector("text=Allow and continue");
  await shot("1-consent");
  await page.click("button[value=approve]");
  await page.waitForSelector("#login");
  await shot("2-dev-login");
  await page.fill("#login", "alice");
  await page.click("button[type=submit]");
  await page.waitForSelector(".qr svg");
  await shot("3-totp-enrol");
  const key = (await page.textContent("p.mono strong")).trim();
  const secret = base32Decode(key);
  await page.fill("#code", "000000");
  await page.click("button[type=submit]");
  await page.waitForSelector(".error");
  await shot("4-totp-wrong-code");
  await page.fill("#code", totp(secret));
  await page.click("button[type=submit]");
  await page.waitForSelector("#recovery-codes");
  await shot("5-recovery-codes");
  const codes = await page.$$eval("#recovery-codes li", (lis) => lis.map((li) => li.textContent.trim()));
  await page.click("button[type=submit]");
  await page.waitForURL(/\/callback\?/);
  const first = received.at(-1);
  const firstClaims = await redeem(first.searchParams.get("code"), verifier);

  // Second login: consent is remembered for this browser; enter the next code.
  ({ url, verifier } = authorizeUrl());
  await page.goto(url);
  await page.waitForSelector("#login");
  await page.fill("#login", "alice");
  await page.click("button[type=submit]");
  await page.waitForSelector("text=Two-factor sign-in");
  await shot("6-totp-verify");
  await page.fill("#code", totp(secret, 1));
  await page.click("button[type=submit]");
  await page.waitForURL(/\/callback\?/);
  const secondClaims = await redeem(received.at(-1).searchParams.get("code"), verifier);

  await page.goto(`${issuer}/error?error=access_denied&error_description=${encodeURIComponent("<b>escaped</b> example")}`);
  await shot("7-error-page");
  const frameOk = await page.evaluate(() => document.querySelector("b") === null);

  clearTimeout(deadline);
  console.log(JSON.stringify({
    ok: true, steps, recovery_codes: codes.length, key_length: key.replace(/\s/g, "").length,
    first_amr: firstClaims.amr, second_amr: secondClaims.amr, error_page_escaped: frameOk,
  }));
} catch (e) {
  fail(e.stack || e);
} finally {
  await browser.close();
  client.close();
}
