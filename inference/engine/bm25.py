"""Qdrant's server-side BM25 model (``qdrant/bm25``), computed by Qdrant's own code through qdrant-edge.

Qdrant embeds BM25 inside the server instead of calling its inference service: it reads the request's
``options`` as a ``Bm25Config`` (k, b, avg_len and the text-preprocessing fields of its full-text index)
and turns the text into a sparse vector. ``qdrant_edge.Bm25`` is that same Rust code, with Qdrant's
tokenizers, Snowball stemmers and built-in stopword lists, so this module only

* translates the JSON ``options`` into a ``qdrant_edge.Bm25Config``, refusing bad values with clear
  :class:`InvalidInput` messages (Qdrant's own texts for the k / b / avg_len range checks), and
* converts qdrant-edge's vectors into the engine's :class:`SparseVector`.

Document side: term-frequency weights ``n(k+1) / (n + k(1 - b + b|d|/avg_len))`` per token id
(``abs(murmur3_32(token))``). Query side: the unique token ids, each with weight 1.0.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from .types import EmbedRequest, EmbedResult, InputType, InvalidInput, Kind, ModelSpec, SparseVector

__all__ = ["Bm25Runner", "bm25_model", "count_words"]

# Distinct option sets kept as built models; one client's requests repeat the same few.
_CACHE_SIZE = 64

# The values of Qdrant's REST `tokenizer` field (serde snake_case names of segment's TokenizerType).
_TOKENIZERS: dict[str, qe.TokenizerType] = {
    "prefix": qe.TokenizerType.Prefix,
    "whitespace": qe.TokenizerType.Whitespace,
    "word": qe.TokenizerType.Word,
    "multilingual": qe.TokenizerType.Multilingual,
}

# Qdrant's serde aliases of its language enums: a language may be given by name or by this code.
_LANGUAGE_CODES = dict(
    pair.split("=")
    for pair in """
    ar=arabic hy=armenian az=azerbaijani eu=basque bn=bengali ca=catalan zh=chinese da=danish nl=dutch
    en=english fi=finnish fr=french de=german el=greek he=hebrew hi-en=hinglish hu=hungarian id=indonesian
    it=italian jp=japanese kk=kazakh ne=nepali no=norwegian pt=portuguese ro=romanian ru=russian sl=slovene
    es=spanish sv=swedish tg=tajik ta=tamil tr=turkish
    """.split()
)


def _language_table(enum: type) -> dict[str, Any]:
    """Every accepted spelling (lower-case name or code) -> member of a qdrant-edge language enum."""
    table = {name.lower(): getattr(enum, name) for name in dir(enum) if name[:1].isupper()}
    table.update({code: table[name] for code, name in _LANGUAGE_CODES.items() if name in table})
    return table


# Read from qdrant-edge itself, so the accepted languages always match the library that runs them.
_STOPWORD_LANGUAGES: dict[str, qe.Language] = _language_table(qe.Language)
_SNOWBALL_LANGUAGES: dict[str, qe.SnowballLanguage] = _language_table(qe.SnowballLanguage)

_WORD_RE = re.compile(r"\w+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def count_words(text: str) -> int:
    """The ``tokens`` that usage reports for a BM25 input: the number of ``\\w+`` words in the text.

    BM25 is a free model with no context window, so this is informational only; it is deliberately simple
    and independent of the tokenizer, stopword and length options.
    """
    return len(_WORD_RE.findall(text))


def _invalid(reason: str) -> InvalidInput:
    return InvalidInput(f"Invalid BM25 config: {reason}")


def _describe(value: Any) -> str:
    """A short rendering of a JSON value for error messages: scalars as JSON, containers by kind."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_tokenizer(value: Any) -> bool:
    return isinstance(value, str) and value in _TOKENIZERS  # names are case-sensitive, as in serde


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)  # JSON true is not a number


def _is_usize(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64  # Rust's usize


def _field(options: dict[str, Any], name: str, valid: Callable[[Any], bool], expected: str) -> Any:
    """The option `name`, or None when absent or null (Qdrant's ``Option`` fields); refused if not valid."""
    value = options.get(name)
    if value is not None and not valid(value):
        raise _invalid(f"{name} must be {expected}, got {_describe(value)}")
    return value


def _number(options: dict[str, Any], name: str) -> float | None:
    """k / b / avg_len: a JSON number. Unlike the other fields they are not ``Option``s in Qdrant, so an
    explicit null is refused too."""
    if name not in options:
        return None
    value = options[name]
    if not _is_number(value):
        raise _invalid(f"{name} must be a number, got {_describe(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond f64, which serde_json refuses too
        raise _invalid(f"{name} is out of range, got {_describe(value)}") from None


def _language(table: dict[str, Any], name: Any, what: str) -> Any:
    """Look a language name up (case-sensitive, like Qdrant's serde names and aliases)."""
    if not isinstance(name, str):
        raise _invalid(f"{what} must be a string, got {_describe(name)}")
    member = table.get(name)
    if member is None:
        raise _invalid(f"unknown {what} {_describe(name)}")
    return member


def _stopwords(value: Any) -> qe.Language | qe.StopwordsSet | None:
    """``"english"`` (a language's list) or ``{"languages": [...], "custom": [...]}`` (both optional)."""
    if value is None:
        return None
    if isinstance(value, str):
        return _language(_STOPWORD_LANGUAGES, value, "stopwords language")
    if not isinstance(value, dict):
        expected = 'a language name or {"languages": [...], "custom": [...]}'
        raise _invalid(f"stopwords must be {expected}, got {_describe(value)}")
    lists: dict[str, list[str]] = {}
    for key in ("languages", "custom"):
        items = value.get(key)
        items = [] if items is None else items
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise _invalid(f"stopwords.{key} must be an array of strings, got {_describe(items)}")
        lists[key] = items
    languages = {_language(_STOPWORD_LANGUAGES, name, "stopwords language") for name in lists["languages"]}
    return qe.StopwordsSet(languages=languages, custom=set(lists["custom"]))


def _stemmer(value: Any) -> qe.SnowballParams | qe.DisabledStemmer | None:
    """``{"type": "snowball", "language": "english"}`` or ``{"type": "none"}`` (no stemming)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        expected = '{"type": "snowball", "language": ...} or {"type": "none"}'
        raise _invalid(f"stemmer must be {expected}, got {_describe(value)}")
    kind = value.get("type")
    if kind == "none":
        return qe.DisabledStemmer()
    if kind == "snowball":
        return qe.SnowballParams(_language(_SNOWBALL_LANGUAGES, value.get("language"), "stemmer language"))
    raise _invalid(f'stemmer type must be "snowball" or "none", got {_describe(kind)}')


def _config(options: dict[str, Any]) -> qe.Bm25Config:
    """Qdrant's REST ``Bm25Config`` JSON as a ``qdrant_edge.Bm25Config``. Keys Qdrant does not know are
    ignored, as Qdrant ignores them (its Bm25Config has no ``deny_unknown_fields``)."""
    if not isinstance(options, dict):
        raise _invalid(f"options must be an object, got {_describe(options)}")
    tokenizer = _field(
        options, "tokenizer", _is_tokenizer, f"one of {', '.join(map(json.dumps, _TOKENIZERS))}"
    )
    language = _field(options, "language", _is_str, "a string")
    stopwords = _stopwords(options.get("stopwords"))
    stemmer = _stemmer(options.get("stemmer"))
    if language == "none":
        # Qdrant documents "none" for language-neutral text: no stopword list and no default stemmer.
        # qdrant-edge refuses it as a language, so say the same thing with its explicit settings.
        language = None
        stopwords = qe.StopwordsSet() if stopwords is None else stopwords
        stemmer = qe.DisabledStemmer() if stemmer is None else stemmer
    try:
        return qe.Bm25Config(
            k=_number(options, "k"),
            b=_number(options, "b"),
            avg_len=_number(options, "avg_len"),
            tokenizer=None if tokenizer is None else _TOKENIZERS[tokenizer],
            language=language,
            lowercase=_field(options, "lowercase", _is_bool, "true or false"),
            ascii_folding=_field(options, "ascii_folding", _is_bool, "true or false"),
            stopwords=stopwords,
            stemmer=stemmer,
            min_token_len=_field(options, "min_token_len", _is_usize, "a non-negative integer"),
            max_token_len=_field(options, "max_token_len", _is_usize, "a non-negative integer"),
        )
    except ValueError as exc:  # e.g. "k must not be NaN" (JSON has no NaN, but Python's json accepts it)
        raise _invalid(str(exc)) from None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_model(options_json: str) -> qe.Bm25:
    # lru_cache is thread-safe; two threads may build the same model at once, which is harmless. Errors
    # are not cached, so a bad option set is re-parsed each time (cheap, and it is refused anyway).
    config = _config(json.loads(options_json))
    try:
        return qe.Bm25(config)
    except ValueError as exc:
        message = str(exc)
        # The k / b / avg_len range errors are lib/bm25's own texts ("BM25 k1 must be finite and >= 0,
        # got -1"), exactly what a Qdrant server answers; anything else (an unknown `language`) is wrapped.
        raise (InvalidInput(message) if message.startswith("BM25 ") else _invalid(message)) from None


def bm25_model(options: dict[str, Any] | None) -> qe.Bm25:
    """The qdrant-edge BM25 model for a request's ``options`` (Qdrant's REST ``Bm25Config`` JSON).

    Built once per distinct options (compared order-free) and kept in a small LRU cache. Raises
    :class:`InvalidInput` for options Qdrant would refuse.
    """
    try:
        key = json.dumps({} if options is None else options, sort_keys=True)
    except (TypeError, ValueError):
        raise _invalid("options must be a JSON object") from None
    return _cached_model(key)


def _text_of(request: EmbedRequest) -> str:
    """The request's text; refuses anything else."""
    if request.input_type is not InputType.TEXT or not isinstance(request.data, str):
        raise InvalidInput(f"Only text input is supported for {request.model}.")
    if _SURROGATE_RE.search(request.data):
        # Python's json accepts "\ud800" escapes that Qdrant refuses; qdrant-edge cannot encode them.
        raise InvalidInput("Text contains an unpaired Unicode surrogate.")
    return request.data


def _sparse(vector: qe.SparseVector) -> SparseVector:
    # qdrant-edge already returns unique ascending indices; sorting keeps the engine's contract explicit.
    pairs = sorted(zip(vector.indices, vector.values, strict=True))
    return SparseVector(indices=[index for index, _ in pairs], values=[float(value) for _, value in pairs])


class Bm25Runner:
    """Runs ``qdrant/bm25`` for the engine: Qdrant's own BM25 (via qdrant-edge), no model weights.

    ``model_dir`` is accepted for the :class:`~inference.engine.runner.ModelRunner` contract but not read:
    Qdrant's stopword lists and stemmers are built into qdrant-edge. Thread-safe.

    ``EmbedResult.tokens`` is :func:`count_words` of the text (the usage count for this free model).
    """

    def __init__(self, spec: ModelSpec, model_dir: Path) -> None:
        self.spec = spec

    def check(self, request: EmbedRequest) -> None:
        """Refuse non-text input and options Qdrant would refuse (the model is built and cached here)."""
        _text_of(request)
        bm25_model(request.options)

    def embed(self, requests: Sequence[EmbedRequest], *, alone: bool = False) -> list[EmbedResult]:
        """One sparse vector per request, in order: BM25 tf weights for documents, 1.0 per query token."""
        results = []
        for request in requests:
            text = _text_of(request)
            model = bm25_model(request.options)
            vector = model.embed_query(text) if request.kind is Kind.QUERY else model.embed_document(text)
            results.append(EmbedResult(vector=_sparse(vector), tokens=count_words(text)))
        return results
