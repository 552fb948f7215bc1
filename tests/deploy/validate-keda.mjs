#!/usr/bin/env node
// Validates the KEDA objects (apiVersion keda.sh/*) of a Kubernetes YAML stream against KEDA's
// schema, as published in @kubernetes-models/keda, and skips every other object (those are
// kubernetes-validate's job). Usage: node validate-keda.mjs FILE|-
//
// The package's validators accept properties they do not know, so a misspelt field would pass
// and KEDA would silently ignore it. On top of them this script walks each object along the
// package's type declarations and rejects unknown properties, and it checks the metadata of
// the triggers it knows against the names KEDA's scaler reads.
//
// Exits 0 when every KEDA object is valid and at least one was found; otherwise prints every
// error and exits 1.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

// The metadata names KEDA's scalers read (gcp-pubsub: `pubsubMetadata` in
// pkg/scalers/gcp_pubsub_scaler.go, plus the GCP credential parameters).
const TRIGGER_METADATA = {
  "gcp-pubsub": [
    "subscriptionSize",
    "mode",
    "value",
    "activationValue",
    "aggregation",
    "timeHorizon",
    "valueIfNull",
    "subscriptionName",
    "topicName",
    "credentialsFromEnv",
    "credentialsFromEnvFile",
  ],
  prometheus: [
    "serverAddress",
    "query",
    "queryParameters",
    "threshold",
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "unsafeSsl",
    "timeout",
    "credentialsFromEnv",
    "credentialsFromEnvFile",
  ],
};

/** The declaration file of a type imported as `spec` from the declaration file `from`. */
function declarationFile(spec, from) {
  if (spec.startsWith(".")) {
    return resolve(dirname(from), spec.replace(/\.js$/, ".d.ts"));
  }
  try {
    return fileURLToPath(import.meta.resolve(spec)).replace(/\.js$/, ".d.ts");
  } catch {
    return null;
  }
}

const shapes = new Map();

/**
 * The first interface declared in `file`: its property names, and for each property that is
 * itself a declared object (or an array of one) the file that declares it.
 */
function shape(file) {
  if (shapes.has(file)) return shapes.get(file);
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    shapes.set(file, null);
    return null;
  }
  const imports = new Map();
  for (const m of text.matchAll(/^import \{([^}]+)\} from "([^"]+)";$/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim())) imports.set(name, m[2]);
  }
  const lines = text.split("\n");
  const start = lines.findIndex((l) => /^export interface I\w+( extends [^{]+)? \{$/.test(l));
  if (start < 0) {
    shapes.set(file, null);
    return null;
  }
  const props = new Map();
  for (const line of lines.slice(start + 1)) {
    if (line === "}") break;
    const m = /^ {4}"([^"]+)"\??: (.+?);?$/.exec(line);
    if (!m) continue;
    const type = m[2];
    const object = /^(I\w+)$/.exec(type);
    const array = /^Array<(I\w+)>$/.exec(type);
    const name = (object || array || [])[1];
    const spec = name && imports.get(name);
    props.set(m[1], {
      array: Boolean(array),
      file: spec ? declarationFile(spec, file) : null,
    });
  }
  const result = { props };
  shapes.set(file, result);
  return result;
}

/** Errors for properties of `value` that the type declared in `file` does not have. */
function unknownProperties(value, file, path) {
  const s = shape(file);
  if (!s || value === null || typeof value !== "object" || Array.isArray(value)) return [];
  const errors = [];
  for (const [key, child] of Object.entries(value)) {
    const prop = s.props.get(key);
    if (!prop) {
      errors.push(`${path}/${key}: not a property of ${file.split("/").pop().replace(/\.d\.ts$/, "")}`);
      continue;
    }
    if (!prop.file) continue;
    const items = prop.array && Array.isArray(child) ? child : [child];
    items.forEach((item, i) => {
      const at = prop.array ? `${path}/${key}/${i}` : `${path}/${key}`;
      errors.push(...unknownProperties(item, prop.file, at));
    });
  }
  return errors;
}

/** Errors in the triggers' metadata, for the trigger types listed above. */
function triggerErrors(object) {
  const errors = [];
  (object.spec?.triggers ?? []).forEach((t, i) => {
    const known = TRIGGER_METADATA[t.type];
    if (!known) return;
    for (const key of Object.keys(t.metadata ?? {})) {
      if (!known.includes(key)) {
        errors.push(`/spec/triggers/${i}/metadata/${key}: not read by KEDA's ${t.type} scaler`);
      }
    }
    if (t.type === "gcp-pubsub") {
      const both = ["subscriptionName", "topicName"].filter((k) => t.metadata?.[k]);
      if (both.length !== 1) {
        errors.push(`/spec/triggers/${i}/metadata: exactly one of subscriptionName and topicName`);
      }
    }
  });
  return errors;
}

const source = process.argv[2];
if (!source) {
  console.error("usage: node validate-keda.mjs FILE|-");
  process.exit(2);
}
const text = readFileSync(source === "-" ? 0 : source, "utf8");
const docs = parseAllDocuments(text);
const moduleDir = dirname(fileURLToPath(import.meta.resolve("@kubernetes-models/keda/keda.sh/v1alpha1")));

let checked = 0;
let failed = 0;
for (const doc of docs) {
  if (doc.errors.length) {
    console.error(`YAML error: ${doc.errors.map((e) => e.message).join("; ")}`);
    failed++;
    continue;
  }
  const object = doc.toJS();
  if (!object || !String(object.apiVersion ?? "").startsWith("keda.sh/")) continue;
  const what = `${object.kind}/${object.metadata?.name ?? "?"}`;
  const Model = object.apiVersion === "keda.sh/v1alpha1" ? keda[object.kind] : undefined;
  if (typeof Model !== "function") {
    console.error(`${what}: no KEDA schema for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  checked++;
  const errors = [];
  try {
    new Model(object).validate();
  } catch (e) {
    errors.push(e.message);
  }
  errors.push(...unknownProperties(object, resolve(moduleDir, `${object.kind}.d.ts`), ""));
  errors.push(...triggerErrors(object));
  if (errors.length) {
    failed++;
    for (const e of errors) console.error(`${what}: ${e}`);
  } else {
    console.log(`${what}: valid`);
  }
}

if (checked === 0) {
  console.error("no KEDA object found");
  process.exit(1);
}
process.exit(failed ? 1 : 0);
