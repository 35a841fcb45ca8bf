"""Usage examples for one model on one cluster: HTTP (curl), Python (qdrant-client, over REST and over gRPC)
and TypeScript.

Each example creates a collection whose vectors fit the model (size and distance for dense models, a named
sparse vector for sparse ones, with `modifier: idf` for BM25, a multivector for late-interaction models),
upserts one point with a `Document` (or `Image`) and queries it. The strings are generated with
`json.dumps`, which quotes values the same way JSON, Python and TypeScript read them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from inference.catalog import CatalogEntry
from inference.engine.types import InputType, Output
from inference.selectors import ProviderEntry

API_KEY_PLACEHOLDER = "<your-api-key>"
DOCUMENT_TEXT = "Qdrant is a vector similarity search engine written in Rust."
QUERY_TEXT = "Which vector database is written in Rust?"
IMAGE_URL = "https://qdrant.tech/example.png"  # any image URL the server may fetch


@dataclass(frozen=True)
class Snippets:
    """The three examples for one model, and the collection they create."""

    model: str
    collection: str
    vector_note: str  # e.g. "dense, 384 dimensions, cosine"
    http: str
    python: str
    typescript: str
    python_grpc: str = ""  # the Python example with `prefer_grpc=True` (empty when gRPC is off)


@dataclass(frozen=True)
class _Shape:
    """How the model's vectors are declared and addressed in a collection."""

    vector_name: str | None  # None: the collection's unnamed default vector
    sparse: bool
    config: dict[str, Any]  # the REST body of the create-collection call
    note: str


def _shape(entry: CatalogEntry) -> _Shape:
    spec = entry.spec
    base = entry.name.rsplit("/", 1)[-1]
    if spec.output == Output.SPARSE:
        name = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "sparse"
        if name.startswith("bm25"):
            name = "bm25"
        # BM25 weights are term frequencies only: the idf half of the score comes from the collection.
        params = {"modifier": "idf"} if spec.runtime == "bm25" else {}
        note = f"named sparse vector {name!r}" + (" with modifier idf" if params else "")
        return _Shape(name, True, {"sparse_vectors": {name: params}}, note)
    if spec.output == Output.MULTIVECTOR:
        config = {"size": spec.dim, "distance": "Cosine", "multivector_config": {"comparator": "max_sim"}}
        return _Shape(None, False, {"vectors": config}, f"multivector, {spec.dim} dimensions per token")
    return _Shape(
        None, False, {"vectors": {"size": spec.dim, "distance": "Cosine"}}, f"dense, {spec.dim} dims, cosine"
    )


def collection_name(entry: CatalogEntry) -> str:
    """A collection name of the model's own, so the examples of several models can run side by side."""
    base = entry.name.rsplit("/", 1)[-1].lower()
    return "docs-" + (re.sub(r"[^a-z0-9]+", "-", base).strip("-") or "model")


def _inference_object(entry: CatalogEntry, *, query: bool) -> dict[str, str]:
    if entry.spec.input_type == InputType.IMAGE:
        return {"image": IMAGE_URL, "model": entry.name}
    return {"text": QUERY_TEXT if query else DOCUMENT_TEXT, "model": entry.name}


def _q(value: str) -> str:
    """A double-quoted string literal, valid in JSON, Python and TypeScript."""
    return json.dumps(value)


def _http(url: str, collection: str, shape: _Shape, entry: CatalogEntry) -> str:
    document = _inference_object(entry, query=False)
    vector: Any = {shape.vector_name: document} if shape.vector_name else document
    upsert = {"points": [{"id": 1, "vector": vector, "payload": {"text": DOCUMENT_TEXT}}]}
    query: dict[str, Any] = {"query": _inference_object(entry, query=True), "limit": 3, "with_payload": True}
    if shape.vector_name:
        query["using"] = shape.vector_name
    base = f"{url}/collections/{collection}"
    headers = f'-H "api-key: {API_KEY_PLACEHOLDER}" -H "Content-Type: application/json"'
    calls = [
        ("Create the collection", "PUT", base, shape.config),
        (f"Upsert a point: the server embeds the {_kind(entry)}", "PUT", base + "/points?wait=true", upsert),
        ("Query with the same model", "POST", base + "/points/query", query),
    ]
    return "\n\n".join(
        f"# {comment}\ncurl -X {method} \"{target}\" \\\n  {headers} \\\n  -d '{json.dumps(body, indent=2)}'"
        for comment, method, target, body in calls
    )


def _kind(entry: CatalogEntry) -> str:
    return "Image" if entry.spec.input_type == InputType.IMAGE else "Document"


def _python_object(entry: CatalogEntry, *, query: bool, indent: int) -> str:
    """`models.Document(...)` / `models.Image(...)` with one argument a line, closed at `indent`."""
    obj = _inference_object(entry, query=query)
    cls = "Image" if "image" in obj else "Document"
    pad = " " * indent
    args = "".join(f"{pad}    {key}={_q(value)},\n" for key, value in obj.items())
    return f"models.{cls}(\n{args}{pad})"


def _python_client(url: str, grpc_url: str | None) -> str:
    if grpc_url is None:
        return f"""client = QdrantClient(
    url={_q(url)},
    api_key={_q(API_KEY_PLACEHOLDER)},
    cloud_inference=True,  # the cluster runs the model; nothing is embedded on this machine
)"""
    port = urlsplit(grpc_url).port or 6334
    return f"""client = QdrantClient(
    url={_q(url)},  # the gRPC host is this URL's host
    grpc_port={port},
    prefer_grpc=True,  # every call below goes over Qdrant's gRPC API; the API key picks the cluster
    api_key={_q(API_KEY_PLACEHOLDER)},
    cloud_inference=True,  # the cluster runs the model; nothing is embedded on this machine
)"""


def _python(
    url: str, collection: str, shape: _Shape, entry: CatalogEntry, grpc_url: str | None = None
) -> str:
    spec = entry.spec
    if shape.sparse:
        modifier = "modifier=models.Modifier.IDF" if shape.config["sparse_vectors"][shape.vector_name] else ""
        config = (
            f"sparse_vectors_config={{{_q(str(shape.vector_name))}: models.SparseVectorParams({modifier})}},"
        )
    elif spec.output == Output.MULTIVECTOR:
        config = (
            f"vectors_config=models.VectorParams(\n        size={spec.dim},\n"
            "        distance=models.Distance.COSINE,\n"
            "        multivector_config=models.MultiVectorConfig(\n"
            "            comparator=models.MultiVectorComparator.MAX_SIM,\n"
            "        ),\n"
            "    ),"
        )
    else:
        config = f"vectors_config=models.VectorParams(size={spec.dim}, distance=models.Distance.COSINE),"
    if shape.vector_name:
        named = _python_object(entry, query=False, indent=16)
        vector = f"{{\n                {_q(shape.vector_name)}: {named},\n            }}"
    else:
        vector = _python_object(entry, query=False, indent=12)
    using = f"\n    using={_q(shape.vector_name)}," if shape.vector_name else ""
    return f"""from qdrant_client import QdrantClient, models

{_python_client(url, grpc_url)}

client.create_collection(
    collection_name={_q(collection)},
    {config}
)

client.upsert(
    collection_name={_q(collection)},
    points=[
        models.PointStruct(
            id=1,
            vector={vector},
            payload={{"text": {_q(DOCUMENT_TEXT)}}},
        )
    ],
)

results = client.query_points(
    collection_name={_q(collection)},
    query={_python_object(entry, query=True, indent=4)},{using}
    limit=3,
)
print(results.points)
"""


def _js(value: Any, indent: int = 0) -> str:
    """A JavaScript object literal in the style people write: bare keys, inline when short."""
    if not isinstance(value, dict):
        return json.dumps(value)
    if not value:
        return "{}"
    items = [
        f"{key if re.fullmatch(r'[A-Za-z_$][A-Za-z0-9_$]*', key) else _q(key)}: {_js(item, indent + 2)}"
        for key, item in value.items()
    ]
    inline = "{ " + ", ".join(items) + " }"
    if len(inline) + indent <= 72 and "\n" not in inline:
        return inline
    pad = " " * (indent + 2)
    return "{\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + "}"


def _typescript(url: str, collection: str, shape: _Shape, entry: CatalogEntry) -> str:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    # The JS client ignores a path in `url` and assumes port 6333 when the URL names none, so the cluster's
    # path goes in `prefix` and a default port is spelled out.
    port = "" if parts.port else f"\n  port: {443 if parts.scheme == 'https' else 80},"
    config = _js(shape.config)
    document = _inference_object(entry, query=False)
    vector = _js({shape.vector_name: document} if shape.vector_name else document, 6)
    using = f"\n  using: {_q(shape.vector_name)}," if shape.vector_name else ""
    return f"""import {{ QdrantClient }} from "@qdrant/js-client-rest";

const client = new QdrantClient({{
  url: {_q(origin)},{port}
  prefix: {_q(parts.path)},
  apiKey: {_q(API_KEY_PLACEHOLDER)},
}});

await client.createCollection({_q(collection)}, {config});

await client.upsert({_q(collection)}, {{
  wait: true,
  points: [
    {{
      id: 1,
      vector: {vector},
      payload: {{ text: {_q(DOCUMENT_TEXT)} }},
    }},
  ],
}});

const results = await client.query({_q(collection)}, {{
  query: {_js(_inference_object(entry, query=True), 2)},{using}
  limit: 3,
}});
console.log(results.points);
"""


def usage_snippets(*, url: str, entry: CatalogEntry, grpc_url: str | None = None) -> Snippets:
    """The HTTP, Python (REST, and gRPC when `grpc_url` is given) and TypeScript examples of `entry`."""
    collection = collection_name(entry)
    shape = _shape(entry)
    return Snippets(
        model=entry.name,
        collection=collection,
        vector_note=shape.note,
        http=_http(url, collection, shape, entry),
        python=_python(url, collection, shape, entry),
        typescript=_typescript(url, collection, shape, entry),
        python_grpc=_python(url, collection, shape, entry, grpc_url) if grpc_url else "",
    )


def provider_snippets(*, url: str, provider: ProviderEntry) -> Snippets:
    """How to call a provider's model through the cluster: the caller's provider key in a request header.

    Python uses `qdrant_client.context_headers.headers`, which adds headers to the requests made inside it;
    TypeScript passes `headers` to the client. The example model is one of the provider's, for illustration.
    """
    model = provider.example_model
    collection = "docs-" + provider.prefix
    key = f"<your-{provider.prefix}-api-key>"
    image = "image" in provider.input_types and model.startswith("jinaai/")
    dims = 512 if image else 1024 if provider.prefix == "cohere" else 1536
    obj: dict[str, Any] = {"image": IMAGE_URL} if image else {"text": DOCUMENT_TEXT}
    obj = {**obj, "model": model}
    if image:
        obj["options"] = {"dimensions": dims}
    upsert = {"points": [{"id": 1, "vector": obj}]}
    base = f"{url}/collections/{collection}"
    sent = (
        f"api-key: {API_KEY_PLACEHOLDER}",
        f"{provider.key_header}: {key}",
        "Content-Type: application/json",
    )
    headers = " ".join(f'-H "{h}"' for h in sent)
    create = {"vectors": {"size": dims, "distance": "Cosine"}}
    http = "\n\n".join(
        f"# {comment}\ncurl -X {method} \"{target}\" \\\n  {headers} \\\n  -d '{json.dumps(body, indent=2)}'"
        for comment, method, target, body in (
            ("Create the collection", "PUT", base, create),
            (
                f"Upsert: {provider.name} embeds it with your key (sent per request, never stored)",
                "PUT",
                base + "/points?wait=true",
                upsert,
            ),
        )
    )
    cls = "Image" if image else "Document"
    data = f"image={_q(IMAGE_URL)}" if image else f"text={_q(DOCUMENT_TEXT)}"
    options = f'\n                options={{"dimensions": {dims}}},' if image else ""
    python = f"""from qdrant_client import QdrantClient, models
from qdrant_client.context_headers import headers

client = QdrantClient(url={_q(url)}, api_key={_q(API_KEY_PLACEHOLDER)}, cloud_inference=True)
client.create_collection(
    {_q(collection)},
    vectors_config=models.VectorParams(size={dims}, distance=models.Distance.COSINE),
)

# Every request made inside the block carries your {provider.name} key (or put it in `options`).
with headers({{{_q(provider.key_header)}: {_q(key)}}}):
    client.upsert(
        {_q(collection)},
        points=[
            models.PointStruct(id=1, vector=models.{cls}(
                {data},
                model={_q(model)},{options}
            )),
        ],
    )
"""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    port = "" if parts.port else f"\n  port: {443 if parts.scheme == 'https' else 80},"
    typescript = f"""import {{ QdrantClient }} from "@qdrant/js-client-rest";

const client = new QdrantClient({{
  url: {_q(origin)},{port}
  prefix: {_q(parts.path)},
  apiKey: {_q(API_KEY_PLACEHOLDER)},
  headers: {{ {_q(provider.key_header)}: {_q(key)} }},  // your {provider.name} key, sent with each request
}});

await client.createCollection({_q(collection)}, {_js(create)});

await client.upsert({_q(collection)}, {{
  wait: true,
  points: [{{ id: 1, vector: {_js(obj, 2)} }}],
}});
"""
    return Snippets(
        model=model,
        collection=collection,
        vector_note=f"dense, {dims} dims, cosine",
        http=http,
        python=python,
        typescript=typescript,
    )
