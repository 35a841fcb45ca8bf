// Drives the official Qdrant gRPC client (@qdrant/js-client-grpc) against the server under test.
// Env: GRPC_URL (http://127.0.0.1:PORT), API_KEY, MODEL. Prints one JSON line with what it saw.
import { QdrantClient } from "@qdrant/js-client-grpc";

const client = new QdrantClient({ url: process.env.GRPC_URL, apiKey: process.env.API_KEY, timeout: 60000 });
const model = process.env.MODEL;
const collectionName = "js-docs";
const texts = ["The Eiffel Tower is in Paris.", "Bananas are rich in potassium.", "Rust is a systems language."];
const doc = (text) => ({ vector: { case: "document", value: { text, model } } });

const health = await client.api("service").healthCheck({});
await client.api("collections").create({
  collectionName,
  vectorsConfig: { config: { case: "params", value: { size: 384n, distance: 1 /* Cosine */ } } },
});
const upsert = await client.api("points").upsert({
  collectionName,
  wait: true,
  points: texts.map((text, i) => ({
    id: { pointIdOptions: { case: "num", value: BigInt(i + 1) } },
    vectors: { vectorsOptions: { case: "vector", value: doc(text) } },
    payload: { text: { kind: { case: "stringValue", value: text } } },
  })),
});
const query = await client.api("points").query({
  collectionName,
  query: { variant: { case: "nearest", value: { variant: { case: "document", value: { text: "fruit", model } } } } },
  limit: 3n,
});
const count = await client.api("points").count({ collectionName, exact: true });
let denied = null;
try {
  await new QdrantClient({ url: process.env.GRPC_URL, apiKey: "wrong", timeout: 60000 }).api("collections").list({});
} catch (err) {
  denied = { code: err.code, message: err.rawMessage ?? err.message };
}
const tokens = (usage) => Object.fromEntries(Object.entries(usage?.inference?.models ?? {}).map(([m, u]) => [m, Number(u.tokens)]));
console.log(
  JSON.stringify({
    version: health.version,
    upsert: { status: upsert.result.status, usage: tokens(upsert.usage) },
    query: query.result.map((p) => [Number(p.id.pointIdOptions.value), p.score]),
    queryUsage: tokens(query.usage),
    count: Number(count.result.count),
    denied,
  }),
);
