// The official JS REST client against the data plane: prints one JSON object of what it saw.
// Usage: QDRANT_URL=... QDRANT_API_KEY=... node check.mjs
import { QdrantClient } from "@qdrant/js-client-rest";

const warnings = [];
console.warn = (...args) => warnings.push(args.join(" "));

const url = process.env.QDRANT_URL;
const apiKey = process.env.QDRANT_API_KEY;
// The client keeps only scheme, host and port of `url`; the cluster's path goes in `prefix`.
const parsed = new URL(url);
const client = new QdrantClient({ url: parsed.origin, prefix: parsed.pathname, apiKey });
const out = {};

await client.createCollection("js", { vectors: { size: 3, distance: "Cosine" } });
await client.upsert("js", {
  wait: true,
  points: [
    { id: 1, vector: [1, 0, 0], payload: { g: "a" } },
    { id: 2, vector: [0, 1, 0], payload: { g: "b" } },
    { id: 3, vector: [0.9, 0.1, 0], payload: { g: "a" } },
  ],
});
out.version = (await client.versionInfo()).version;
out.query = (await client.query("js", { query: [1, 0, 0], limit: 2 })).points.map((p) => p.id);
out.groups = (await client.queryGroups("js", { query: [1, 0, 0], group_by: "g", group_size: 1, limit: 2 })).groups.map(
  (g) => g.id,
);
await client.updateCollectionAliases({ actions: [{ create_alias: { collection_name: "js", alias_name: "jsa" } }] });
out.aliases = (await client.getAliases()).aliases;
out.byAlias = (await client.count("jsa", { exact: true })).count;
out.matrix = (await client.searchMatrixPairs("js", { sample: 3, limit: 1 })).pairs.length;
out.updated = await client.updateCollection("js", { metadata: { team: "js" } });
out.cluster = (await client.collectionClusterInfo("js")).shard_count;
// `points/search` is what older JS clients' search() calls; 1.19 no longer wraps it.
const search = await fetch(`${url}/collections/js/points/search`, {
  method: "POST",
  headers: { "api-key": apiKey, "content-type": "application/json" },
  body: JSON.stringify({ vector: [1, 0, 0], limit: 2 }),
});
out.search = { status: search.status, ids: (await search.json()).result.map((p) => p.id) };
try {
  await client.getCollection("missing");
} catch (err) {
  out.missing = { status: err.status, error: err.data?.status?.error ?? null };
}
await new Promise((resolve) => setTimeout(resolve, 200)); // the version check runs in the background
out.warnings = warnings.filter((w) => !w.includes("unsecure connection"));
console.log(JSON.stringify(out));
