#!/usr/bin/env node
// Prints a YAML stream (a file, or stdin with "-") as one JSON array of its documents, empty
// documents left out, so that tests/tests/deploy.rs can read rendered manifests and the compose
// file with serde_json. Anchors and merge keys (<<) are resolved; a YAML error exits 1.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const source = process.argv[2];
if (!source) {
  console.error("usage: node yaml-to-json.mjs FILE|-");
  process.exit(2);
}
const docs = parseAllDocuments(readFileSync(source === "-" ? 0 : source, "utf8"), { merge: true });
const out = [];
for (const doc of docs) {
  if (doc.errors.length) {
    console.error(doc.errors.map((e) => e.message).join("\n"));
    process.exit(1);
  }
  const value = doc.toJS({ maxAliasCount: -1 });
  if (value !== null && value !== undefined) out.push(value);
}
process.stdout.write(JSON.stringify(out));
