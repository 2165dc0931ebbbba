// Validates the Traefik custom resources (traefik.io/v1alpha1) in Kubernetes manifests against
// the schema of Traefik v3's CRD types, as published in the npm package
// @kubernetes-models/traefik (generated from github.com/traefik/traefik/v3's
// pkg/provider/kubernetes/crd/traefikio/v1alpha1), then checks the gateway's own rules:
//
//   - every forwardAuth middleware has trustForwardHeader: false and lists the identity headers
//     verify sends in authResponseHeaders (so Traefik strips client-sent copies);
//   - every IngressRoute route that reaches a backend other than the gateway's own services
//     (mcp-gateway-auth, mcp-gateway-verify) goes through a forwardAuth middleware.
//
// Usage: node validate-traefik-crds.mjs FILE.yaml...   (scripts/check-deploy runs it)
// Exit 0 when every Traefik resource is valid, 1 otherwise. Other kinds are left to
// kubernetes-validate.

import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as traefik from "@kubernetes-models/traefik/traefik.io/v1alpha1";

const IDENTITY_HEADERS = ["X-User-Id", "X-User-Name", "X-User-Email", "X-User-Groups", "X-Upstream-Token", "X-Auth-Client-Id", "X-Auth-Scope", "X-Auth-Subject-Type", "X-Auth-Token"];
const GATEWAY_SERVICES = new Set(["mcp-gateway-auth", "mcp-gateway-verify"]);

const errors = [];
const resources = [];

for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      errors.push(`${file}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (!obj || typeof obj !== "object") continue;
    const api = String(obj.apiVersion ?? "");
    if (api.startsWith("traefik.containo.us/")) {
      errors.push(`${file}: ${obj.kind}/${obj.metadata?.name}: ${api} is gone in Traefik v3, use traefik.io/v1alpha1`);
      continue;
    }
    if (api !== "traefik.io/v1alpha1") continue;
    const name = `${obj.kind}/${obj.metadata?.name}`;
    const Model = traefik[obj.kind];
    if (typeof Model !== "function") {
      errors.push(`${file}: ${name}: no such Traefik kind in traefik.io/v1alpha1`);
      continue;
    }
    try {
      new Model(obj).validate();
    } catch (e) {
      errors.push(`${file}: ${name}: ${e.message}`);
      continue;
    }
    resources.push({ file, name, obj });
  }
}

// Names of the forwardAuth middlewares, per namespace.
const authMiddlewares = new Set();
for (const { file, name, obj } of resources) {
  const fa = obj.kind === "Middleware" ? obj.spec?.forwardAuth : undefined;
  if (!fa) continue;
  authMiddlewares.add(`${obj.metadata?.namespace ?? ""}/${obj.metadata?.name}`);
  if (fa.trustForwardHeader !== false) {
    errors.push(`${file}: ${name}: forwardAuth.trustForwardHeader must be false (verify names the resource from X-Forwarded-*)`);
  }
  const listed = new Set((fa.authResponseHeaders ?? []).map((h) => h.toLowerCase()));
  const missing = IDENTITY_HEADERS.filter((h) => !listed.has(h.toLowerCase()));
  if (missing.length) {
    errors.push(`${file}: ${name}: forwardAuth.authResponseHeaders lacks ${missing.join(", ")} (clients could send them)`);
  }
}

for (const { file, name, obj } of resources) {
  if (obj.kind !== "IngressRoute") continue;
  const ns = obj.metadata?.namespace ?? "";
  (obj.spec?.routes ?? []).forEach((route, i) => {
    const backends = (route.services ?? []).filter((s) => !GATEWAY_SERVICES.has(s.name));
    if (!backends.length) return;
    const guarded = (route.middlewares ?? []).some((m) => authMiddlewares.has(`${m.namespace ?? ns}/${m.name}`));
    if (!guarded) {
      errors.push(`${file}: ${name}: route ${i} (${route.match}) reaches ${backends.map((s) => s.name).join(", ")} without a forwardAuth middleware`);
    }
  });
}

for (const { file, name } of resources) console.log(`ok    ${name} (${file})`);
for (const e of errors) console.log(`ERROR ${e}`);
console.log(`${resources.length} Traefik resources valid, ${errors.length} errors`);
process.exit(errors.length ? 1 : 0);
