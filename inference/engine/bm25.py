"""Qdrant's server-side BM25 model (``qdrant/bm25``), computed here exactly as Qdrant v1.19 computes it.

Qdrant embeds BM25 inside the server instead of calling its inference service. It reads the request's
``options`` into a ``Bm25Config`` (src/common/inference/inference_input.rs, lib/api/src/rest/schema.rs),
runs the text through the token pipeline of its full-text index (lib/segment/src/index/field_index/
full_text_index/tokenizers) and turns the tokens into a sparse vector with lib/bm25/src/lib.rs. This module
mirrors each of those steps, so that a client gets the same indices, values and error messages as from
a Qdrant server:

* tokenizer: ``word`` splits on every character that Rust's ``char::is_alphanumeric`` rejects,
  ``whitespace`` on Rust's ``char::is_whitespace``; ``prefix`` emits Qdrant's prefix n-grams;
* per token, in Qdrant's order: ASCII folding (opt-in) -> lowercase (default on) -> stopword removal ->
  Snowball stemming -> min/max length filter (length in characters);
* token id = ``abs(murmur3_32(utf8(token), seed 0) as i32)``, the same as fastembed's ``abs(mmh3.hash(t))``;
* document side: ``tf = n*(k+1) / (n + k*(1 - b + b*|d|/avg_len))`` with ``|d|`` the number of tokens left
  after the pipeline, computed in f64 (with a fused multiply-add, as Rust's ``mul_add``) and rounded to f32;
* query side: the sorted unique token ids, each with value 1.0.

Stopword lists come from ``{model_dir}/{language}.txt`` (one word per line) instead of the lists compiled
into Qdrant; a language without a file simply has no stopwords.
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

import mmh3
from py_rust_stemmers import SnowballStemmer

from .runner import options_or_empty
from .types import EmbedRequest, EmbedResult, InputType, InvalidInput, Kind, ModelSpec, SparseVector

__all__ = ["Bm25Config", "Bm25Runner", "parse_bm25_options", "token_id"]

DEFAULT_K = 1.2
DEFAULT_B = 0.75
DEFAULT_AVG_LEN = 256.0
DEFAULT_LANGUAGE = "english"  # Qdrant's DEFAULT_LANGUAGE in src/common/inference/bm25_inference.rs

# serde's variant order of segment's TokenizerType; it is part of the "unknown variant" error text.
TOKENIZERS = ("prefix", "whitespace", "word", "multilingual")

# segment's `Language` (stopword languages): snake_case names and their serde aliases.
STOPWORD_LANGUAGES: dict[str, str] = {
    "arabic": "ar",
    "azerbaijani": "az",
    "basque": "eu",
    "bengali": "bn",
    "catalan": "ca",
    "chinese": "zh",
    "danish": "da",
    "dutch": "nl",
    "english": "en",
    "finnish": "fi",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hinglish": "hi-en",
    "hungarian": "hu",
    "indonesian": "id",
    "italian": "it",
    "japanese": "jp",
    "kazakh": "kk",
    "nepali": "ne",
    "norwegian": "no",
    "portuguese": "pt",
    "romanian": "ro",
    "russian": "ru",
    "slovene": "sl",
    "spanish": "es",
    "swedish": "sv",
    "tajik": "tg",
    "turkish": "tr",
}

# segment's `SnowballLanguage` (stemmer languages): names and serde aliases.
SNOWBALL_LANGUAGES: dict[str, str] = {
    "arabic": "ar",
    "armenian": "hy",
    "danish": "da",
    "dutch": "nl",
    "english": "en",
    "finnish": "fi",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hungarian": "hu",
    "italian": "it",
    "norwegian": "no",
    "portuguese": "pt",
    "romanian": "ro",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "tamil": "ta",
    "turkish": "tr",
}


def _with_aliases(names: Mapping[str, str]) -> dict[str, str]:
    """Every accepted spelling (name or alias) -> the canonical name, as serde's `alias` attributes allow."""
    accepted = {name: name for name in names}
    accepted.update({alias: name for name, alias in names.items()})
    return accepted


_STOPWORD_LANGUAGE_NAMES = _with_aliases(STOPWORD_LANGUAGES)
_SNOWBALL_LANGUAGE_NAMES = _with_aliases(SNOWBALL_LANGUAGES)
_STOPWORD_VARIANTS = tuple(STOPWORD_LANGUAGES)
_SNOWBALL_VARIANTS = tuple(SNOWBALL_LANGUAGES)

# Serde messages of the two untagged enums: every shape error inside them collapses into this text.
_STOPWORDS_MISMATCH = "data did not match any variant of untagged enum StopwordsInterface"
_STEMMER_MISMATCH = "data did not match any variant of untagged enum StemmingAlgorithm"

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_CACHE_SIZE = 256  # distinct option sets kept parsed; requests of one client repeat the same few


# --------------------------------------------------------------------------------------------------------
# Unicode tables. Python's str predicates differ from Rust's `char` ones, and Qdrant's results depend on
# the Rust ones, so the differences are spelled out here.
# --------------------------------------------------------------------------------------------------------

# Code points Rust's `char::is_alphanumeric` accepts but Python's `str.isalnum` (Unicode 14) rejects:
# combining marks with the Other_Alphabetic property (Devanagari vowel signs, Arabic harakat, ...),
# circled/squared letters, and letters assigned after Unicode 14. Python's set is a subset of Rust's, so
# "Rust alphanumeric" = isalnum() or one of these. Derived by running every code point through Qdrant's own
# word tokenizer (qdrant-edge-py 0.9.0's Bm25) and comparing with str.isalnum().
_RUST_ONLY_ALPHANUMERIC = """
    345 363-36F 5B0-5BD 5BF 5C1-5C2 5C4-5C5 5C7 610-61A 64B-657 659-65F 670 6D6-6DC 6E1-6E4 6E7-6E8 6ED 711
    730-73F 7A6-7B0 816-817 81B-823 825-827 829-82C 88F 897 8D4-8DF 8E3-8E9 8F0-903 93A-93B 93E-94C 94E-94F
    955-957 962-963 981-983 9BE-9C4 9C7-9C8 9CB-9CC 9D7 9E2-9E3 A01-A03 A3E-A42 A47-A48 A4B-A4C A51 A70-A71
    A75 A81-A83 ABE-AC5 AC7-AC9 ACB-ACC AE2-AE3 AFA-AFC B01-B03 B3E-B44 B47-B48 B4B-B4C B56-B57 B62-B63 B82
    BBE-BC2 BC6-BC8 BCA-BCC BD7 C00-C04 C3E-C44 C46-C48 C4A-C4C C55-C56 C5C C62-C63 C81-C83 CBE-CC4 CC6-CC8
    CCA-CCC CD5-CD6 CDC CE2-CE3 CF3 D00-D03 D3E-D44 D46-D48 D4A-D4C D57 D62-D63 D81-D83 DCF-DD4 DD6 DD8-DDF
    DF2-DF3 E31 E34-E3A E4D EB1 EB4-EB9 EBB-EBC ECD F71-F83 F8D-F97 F99-FBC 102B-1036 1038 103B-103E
    1056-1059 105E-1060 1062-1064 1067-106D 1071-1074 1082-108D 108F 109A-109D 1712-1713 1732-1733
    1752-1753 1772-1773 17B6-17C8 1885-1886 18A9 1920-192B 1930-1938 1A17-1A1B 1A55-1A5E 1A61-1A74
    1ABF-1AC0 1ACC-1ACE 1B00-1B04 1B35-1B43 1B80-1B82 1BA1-1BA9 1BAC-1BAD 1BE7-1BF1 1C24-1C36 1C89-1C8A
    1DD3-1DF4 24B6-24E9 2DE0-2DFF A674-A67B A69E-A69F A7CB-A7CF A7D2 A7D4 A7DA-A7DC A7F1 A802 A80B
    A823-A827 A880-A881 A8B4-A8C3 A8C5 A8FF A926-A92A A947-A952 A980-A983 A9B4-A9BF A9E5 AA29-AA36 AA43
    AA4C-AA4D AA7B-AA7D AAB0 AAB2-AAB4 AAB7-AAB8 AABE AAEB-AAEF AAF5 ABE3-ABEA FB1E 10376-1037A 105C0-105F3
    10940-10959 10A01-10A03 10A05-10A06 10A0C-10A0F 10D24-10D27 10D40-10D65 10D69 10D6F-10D85 10EAB-10EAC
    10EC2-10EC7 10EFA-10EFC 11000-11002 11038-11045 11073-11074 11080-11082 110B0-110B8 110C2 11100-11102
    11127-11132 11145-11146 11180-11182 111B3-111BF 111CE-111CF 1122C-11234 11237 1123E-11241 112DF-112E8
    11300-11303 1133E-11344 11347-11348 1134B-1134C 11357 11362-11363 11380-11389 1138B 1138E 11390-113B5
    113B7-113C0 113C2 113C5 113C7-113CA 113CC-113CD 113D1 113D3 11435-11441 11443-11445 114B0-114C1
    115AF-115B5 115B8-115BE 115DC-115DD 11630-1163E 11640 116AB-116B5 116D0-116E3 1171D-1172A 1182C-11838
    11930-11935 11937-11938 1193B-1193C 11940 11942 119D1-119D7 119DA-119DF 119E4 11A01-11A0A 11A35-11A39
    11A3B-11A3E 11A51-11A5B 11A8A-11A97 11B60-11B67 11BC0-11BE0 11BF0-11BF9 11C2F-11C36 11C38-11C3E
    11C92-11CA7 11CA9-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D41 11D43 11D47 11D8A-11D8E 11D90-11D91
    11D93-11D96 11DB0-11DDB 11DE0-11DE9 11EF3-11EF6 11F00-11F10 11F12-11F3A 11F3E-11F40 11F50-11F59 1342F
    13441-13446 13460-143FA 16100-1612E 16130-16139 16D40-16D6C 16D70-16D79 16EA0-16EB8 16EBB-16ED3 16F4F
    16F51-16F87 16F8F-16F92 16FF0-16FF6 187F8-187FF 18CFF 18D09-18D1E 18D80-18DF2 1B132 1B155 1BC9E
    1CCF0-1CCF9 1D2C0-1D2D3 1DF25-1DF2A 1E000-1E006 1E008-1E018 1E01B-1E021 1E023-1E024 1E026-1E02A
    1E030-1E06D 1E08F 1E4D0-1E4EB 1E4F0-1E4F9 1E5D0-1E5ED 1E5F0-1E5FA 1E6C0-1E6DE 1E6E0-1E6F5 1E6FE-1E6FF
    1E947 1F130-1F149 1F150-1F169 1F170-1F189 2B739-2B73F 2CEA2-2CEAD 2EBF0-2EE5D 31350-33479
"""


def _is_number(char: str) -> bool:
    """Numeric but not alphabetic in Rust's terms (Nd, No); letter-numbers (Nl) count as alphabetic."""
    return unicodedata.category(char) in ("Nd", "No")


def _rust_only_class() -> str:
    """The regex character class of `_RUST_ONLY_ALPHANUMERIC`."""
    parts = []
    for item in _RUST_ONLY_ALPHANUMERIC.split():
        start, _, end = item.partition("-")
        first, last = int(start, 16), int(end or start, 16)
        parts.append(
            re.escape(chr(first)) if first == last else f"{re.escape(chr(first))}-{re.escape(chr(last))}"
        )
    return f"[{''.join(parts)}]"


# `[^\W_]` is exactly str.isalnum() (re's \w is isalnum() plus "_"). The alternation with the extra class
# is five times slower, so it only runs on the rare text that contains one of those characters.
_RUST_ONLY_RE = re.compile(_rust_only_class())
_ISALNUM_WORD_RE = re.compile(r"[^\W_]+")
_RUST_WORD_RE = re.compile(rf"(?:[^\W_]|{_RUST_ONLY_RE.pattern})+")


def split_words(text: str) -> list[str]:
    """Maximal runs of Rust-alphanumeric characters: Qdrant's `word` tokenizer before token processing."""
    pattern = _RUST_WORD_RE if _RUST_ONLY_RE.search(text) else _ISALNUM_WORD_RE
    return pattern.findall(text)


# Rust's `char::is_whitespace` (the White_Space property); unlike str.isspace() it excludes U+001C..U+001F.
_NON_WHITESPACE_RE = re.compile(
    "[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)

# Rust's `to_lowercase` knows capitals that Python 3.11's Unicode 14 tables do not (added in Unicode 16):
# Cyrillic TJE, some Latin letters, Garay and Kirat Rai. Found the same way as the table above.
_LOWERCASE_AFTER_UNICODE_14: dict[int, int] = {
    0x1C89: 0x1C8A,
    0xA7CB: 0x0264,
    0xA7CC: 0xA7CD,
    0xA7CE: 0xA7CF,
    0xA7D2: 0xA7D3,
    0xA7D4: 0xA7D5,
    0xA7DA: 0xA7DB,
    0xA7DC: 0x019B,
    **{upper: upper + 0x20 for upper in range(0x10D50, 0x10D66)},
    **{upper: upper + 0x1B for upper in range(0x16EA0, 0x16EB9)},
}


def rust_lowercase(token: str) -> str:
    """Rust's `str::to_lowercase`: Unicode lowercase mapping with the final-sigma rule, like str.lower().

    Checked for every code point against Qdrant's tokenizer; the one remaining difference is a final
    capital sigma right after a letter added after Unicode 14 (or U+0295), which Python does not see as
    cased.
    """
    lowered = token.lower()
    return lowered if lowered.isascii() else lowered.translate(_LOWERCASE_AFTER_UNICODE_14)


# Qdrant's ASCII folding (lib/segment/.../tokenizers/ascii_folding.rs, Lucene's ASCIIFoldingFilter list):
# replacement -> the characters folded to it. Characters not listed are kept. Checked character by character
# against qdrant-edge-py's Bm25 with ascii_folding on.
_ASCII_FOLDING: dict[str, str] = {
    '"': "\u00ab\u00bb\u201c\u201d\u201e\u2033\u2036\u275d\u275e\u276e\u276f\uff02",
    "2": "\u00b2\u2082\u2461\u24f6\u2777\u2781\u278b\uff12",
    "3": "\u00b3\u2083\u2462\u24f7\u2778\u2782\u278c\uff13",
    "1": "\u00b9\u2081\u2460\u24f5\u2776\u2780\u278a\uff11",
    "A": (
        "\u00c0\u00c1\u00c2\u00c3\u00c4\u00c5\u0100\u0102\u0104\u01cd\u01de\u01e0\u01fa\u0200"
        "\u0202\u0226\u023a\u1d00\u1e00\u1ea0\u1ea2\u1ea4\u1ea6\u1ea8\u1eaa\u1eac\u1eae\u1eb0"
        "\u1eb2\u1eb4\u1eb6\u24b6\uff21"
    ),
    "AE": "\u00c6\u01e2\u01fc\u1d01",
    "C": "\u00c7\u0106\u0108\u010a\u010c\u0187\u023b\u0297\u1d04\u1e08\u24b8\uff23",
    "E": (
        "\u00c8\u00c9\u00ca\u00cb\u0112\u0114\u0116\u0118\u011a\u018e\u0190\u0204\u0206\u0228"
        "\u0246\u1d07\u1e14\u1e16\u1e18\u1e1a\u1e1c\u1eb8\u1eba\u1ebc\u1ebe\u1ec0\u1ec2\u1ec4"
        "\u1ec6\u24ba\u2c7b\uff25"
    ),
    "I": (
        "\u00cc\u00cd\u00ce\u00cf\u0128\u012a\u012c\u012e\u0130\u0196\u0197\u01cf\u0208\u020a"
        "\u026a\u1d7b\u1e2c\u1e2e\u1ec8\u1eca\u24be\ua7fe\uff29"
    ),
    "D": ("\u00d0\u010e\u0110\u0189\u018a\u018b\u1d05\u1d06\u1e0a\u1e0c\u1e0e\u1e10\u1e12\u24b9\ua779\uff24"),
    "N": ("\u00d1\u0143\u0145\u0147\u014a\u019d\u01f8\u0220\u0274\u1d0e\u1e44\u1e46\u1e48\u1e4a\u24c3\uff2e"),
    "O": (
        "\u00d2\u00d3\u00d4\u00d5\u00d6\u00d8\u014c\u014e\u0150\u0186\u019f\u01a0\u01d1\u01ea"
        "\u01ec\u01fe\u020c\u020e\u022a\u022c\u022e\u0230\u1d0f\u1d10\u1e4c\u1e4e\u1e50\u1e52"
        "\u1ecc\u1ece\u1ed0\u1ed2\u1ed4\u1ed6\u1ed8\u1eda\u1edc\u1ede\u1ee0\u1ee2\u24c4\ua74a"
        "\ua74c\uff2f"
    ),
    "U": (
        "\u00d9\u00da\u00db\u00dc\u0168\u016a\u016c\u016e\u0170\u0172\u01af\u01d3\u01d5\u01d7"
        "\u01d9\u01db\u0214\u0216\u0244\u1d1c\u1d7e\u1e72\u1e74\u1e76\u1e78\u1e7a\u1ee4\u1ee6"
        "\u1ee8\u1eea\u1eec\u1eee\u1ef0\u24ca\uff35"
    ),
    "Y": ("\u00dd\u0176\u0178\u01b3\u0232\u024e\u028f\u1e8e\u1ef2\u1ef4\u1ef6\u1ef8\u1efe\u24ce\uff39"),
    "TH": "\u00de\ua766",
    "ss": "\u00df",
    "a": (
        "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u0101\u0103\u0105\u01ce\u01df\u01e1\u01fb\u0201"
        "\u0203\u0227\u0250\u0259\u025a\u1d8f\u1d95\u1e01\u1e9a\u1ea1\u1ea3\u1ea5\u1ea7\u1ea9"
        "\u1eab\u1ead\u1eaf\u1eb1\u1eb3\u1eb5\u1eb7\u2090\u2094\u24d0\u2c65\u2c6f\uff41"
    ),
    "ae": "\u00e6\u01e3\u01fd\u1d02",
    "c": "\u00e7\u0107\u0109\u010b\u010d\u0188\u023c\u0255\u1e09\u2184\u24d2\ua73e\ua73f\uff43",
    "e": (
        "\u00e8\u00e9\u00ea\u00eb\u0113\u0115\u0117\u0119\u011b\u01dd\u0205\u0207\u0229\u0247"
        "\u0258\u025b\u025c\u025d\u025e\u029a\u1d08\u1d92\u1d93\u1d94\u1e15\u1e17\u1e19\u1e1b"
        "\u1e1d\u1eb9\u1ebb\u1ebd\u1ebf\u1ec1\u1ec3\u1ec5\u1ec7\u2091\u24d4\u2c78\uff45"
    ),
    "i": (
        "\u00ec\u00ed\u00ee\u00ef\u0129\u012b\u012d\u012f\u0131\u01d0\u0209\u020b\u0268\u1d09"
        "\u1d62\u1d7c\u1d96\u1e2d\u1e2f\u1ec9\u1ecb\u2071\u24d8\uff49"
    ),
    "d": (
        "\u00f0\u010f\u0111\u018c\u0221\u0256\u0257\u1d6d\u1d81\u1d91\u1e0b\u1e0d\u1e0f\u1e11"
        "\u1e13\u24d3\ua77a\uff44"
    ),
    "n": (
        "\u00f1\u0144\u0146\u0148\u0149\u014b\u019e\u01f9\u0235\u0272\u0273\u1d70\u1d87\u1e45"
        "\u1e47\u1e49\u1e4b\u207f\u24dd\uff4e"
    ),
    "o": (
        "\u00f2\u00f3\u00f4\u00f5\u00f6\u00f8\u014d\u014f\u0151\u01a1\u01d2\u01eb\u01ed\u01ff"
        "\u020d\u020f\u022b\u022d\u022f\u0231\u0254\u0275\u1d16\u1d17\u1d97\u1e4d\u1e4f\u1e51"
        "\u1e53\u1ecd\u1ecf\u1ed1\u1ed3\u1ed5\u1ed7\u1ed9\u1edb\u1edd\u1edf\u1ee1\u1ee3\u2092"
        "\u24de\u2c7a\ua74b\ua74d\uff4f"
    ),
    "u": (
        "\u00f9\u00fa\u00fb\u00fc\u0169\u016b\u016d\u016f\u0171\u0173\u01b0\u01d4\u01d6\u01d8"
        "\u01da\u01dc\u0215\u0217\u0289\u1d64\u1d99\u1e73\u1e75\u1e77\u1e79\u1e7b\u1ee5\u1ee7"
        "\u1ee9\u1eeb\u1eed\u1eef\u1ef1\u24e4\uff55"
    ),
    "y": ("\u00fd\u00ff\u0177\u01b4\u0233\u024f\u028e\u1e8f\u1e99\u1ef3\u1ef5\u1ef7\u1ef9\u1eff\u24e8\uff59"),
    "th": "\u00fe\u1d7a\ua767",
    "G": ("\u011c\u011e\u0120\u0122\u0193\u01e4\u01e6\u01f4\u0262\u029b\u1e20\u24bc\ua77d\ua77e\uff27"),
    "g": ("\u011d\u011f\u0121\u0123\u01e5\u01e7\u01f5\u0260\u0261\u1d77\u1d79\u1d83\u1e21\u24d6\ua77f\uff47"),
    "H": "\u0124\u0126\u021e\u029c\u1e22\u1e24\u1e26\u1e28\u1e2a\u24bd\u2c67\u2c75\uff28",
    "h": (
        "\u0125\u0127\u021f\u0265\u0266\u02ae\u02af\u1e23\u1e25\u1e27\u1e29\u1e2b\u1e96\u24d7"
        "\u2c68\u2c76\uff48"
    ),
    "IJ": "\u0132",
    "ij": "\u0133",
    "J": "\u0134\u0248\u1d0a\u24bf\uff2a",
    "j": "\u0135\u01f0\u0237\u0249\u025f\u0284\u029d\u24d9\u2c7c\uff4a",
    "K": "\u0136\u0198\u01e8\u1d0b\u1e30\u1e32\u1e34\u24c0\u2c69\ua740\ua742\ua744\uff2b",
    "k": "\u0137\u0199\u01e9\u029e\u1d84\u1e31\u1e33\u1e35\u24da\u2c6a\ua741\ua743\ua745\uff4b",
    "q": "\u0138\u024b\u02a0\u24e0\ua757\ua759\uff51",
    "L": (
        "\u0139\u013b\u013d\u013f\u0141\u023d\u029f\u1d0c\u1e36\u1e38\u1e3a\u1e3c\u24c1\u2c60"
        "\u2c62\ua746\ua748\ua780\uff2c"
    ),
    "l": (
        "\u013a\u013c\u013e\u0140\u0142\u019a\u0234\u026b\u026c\u026d\u1d85\u1e37\u1e39\u1e3b"
        "\u1e3d\u24db\u2c61\ua747\ua749\ua781\uff4c"
    ),
    "OE": "\u0152\u0276",
    "oe": "\u0153\u1d14",
    "R": (
        "\u0154\u0156\u0158\u0210\u0212\u024c\u0280\u0281\u1d19\u1d1a\u1e58\u1e5a\u1e5c\u1e5e"
        "\u24c7\u2c64\ua75a\ua782\uff32"
    ),
    "r": (
        "\u0155\u0157\u0159\u0211\u0213\u024d\u027c\u027d\u027e\u027f\u1d63\u1d72\u1d73\u1d89"
        "\u1e59\u1e5b\u1e5d\u1e5f\u24e1\ua75b\ua783\uff52"
    ),
    "S": "\u015a\u015c\u015e\u0160\u0218\u1e60\u1e62\u1e64\u1e66\u1e68\u24c8\ua731\ua785\uff33",
    "s": (
        "\u015b\u015d\u015f\u0161\u017f\u0219\u023f\u0282\u1d74\u1d8a\u1e61\u1e63\u1e65\u1e67"
        "\u1e69\u1e9c\u1e9d\u24e2\ua784\uff53"
    ),
    "T": ("\u0162\u0164\u0166\u01ac\u01ae\u021a\u023e\u1d1b\u1e6a\u1e6c\u1e6e\u1e70\u24c9\ua786\uff34"),
    "t": (
        "\u0163\u0165\u0167\u01ab\u01ad\u021b\u0236\u0287\u0288\u1d75\u1e6b\u1e6d\u1e6f\u1e71"
        "\u1e97\u24e3\u2c66\uff54"
    ),
    "W": "\u0174\u01f7\u1d21\u1e80\u1e82\u1e84\u1e86\u1e88\u24cc\u2c72\uff37",
    "w": "\u0175\u01bf\u028d\u1e81\u1e83\u1e85\u1e87\u1e89\u1e98\u24e6\u2c73\uff57",
    "Z": "\u0179\u017b\u017d\u01b5\u021c\u0224\u1d22\u1e90\u1e92\u1e94\u24cf\u2c6b\ua762\uff3a",
    "z": (
        "\u017a\u017c\u017e\u01b6\u021d\u0225\u0240\u0290\u0291\u1d76\u1d8e\u1e91\u1e93\u1e95"
        "\u24e9\u2c6c\ua763\uff5a"
    ),
    "b": "\u0180\u0183\u0253\u1d6c\u1d80\u1e03\u1e05\u1e07\u24d1\uff42",
    "B": "\u0181\u0182\u0243\u0299\u1d03\u1e02\u1e04\u1e06\u24b7\uff22",
    "F": "\u0191\u1e1e\u24bb\ua730\ua77b\ua7fb\uff26",
    "f": "\u0192\u1d6e\u1d82\u1e1f\u1e9b\u24d5\ua77c\uff46",
    "hv": "\u0195",
    "M": "\u019c\u1d0d\u1e3e\u1e40\u1e42\u24c2\u2c6e\ua7fd\ua7ff\uff2d",
    "P": "\u01a4\u1d18\u1e54\u1e56\u24c5\u2c63\ua750\ua752\ua754\uff30",
    "p": "\u01a5\u1d71\u1d7d\u1d88\u1e55\u1e57\u24df\ua751\ua753\ua755\ua7fc\uff50",
    "V": "\u01b2\u0245\u1d20\u1e7c\u1e7e\u1efc\u24cb\ua75e\ua768\uff36",
    "DZ": "\u01c4\u01f1",
    "Dz": "\u01c5\u01f2",
    "dz": "\u01c6\u01f3\u02a3\u02a5",
    "LJ": "\u01c7",
    "Lj": "\u01c8",
    "lj": "\u01c9",
    "NJ": "\u01ca",
    "Nj": "\u01cb",
    "nj": "\u01cc",
    "HV": "\u01f6",
    "OU": "\u0222\u1d15",
    "ou": "\u0223",
    "db": "\u0238",
    "qp": "\u0239",
    "Q": "\u024a\u24c6\ua756\ua758\uff31",
    "m": "\u026f\u0270\u0271\u1d6f\u1d86\u1e3f\u1e41\u1e43\u24dc\uff4d",
    "v": "\u028b\u028c\u1d65\u1d8c\u1e7d\u1e7f\u24e5\u2c71\u2c74\ua75f\uff56",
    "ts": "\u02a6",
    "tc": "\u02a8",
    "ls": "\u02aa",
    "lz": "\u02ab",
    "ue": "\u1d6b",
    "x": "\u1d8d\u1e8b\u1e8d\u2093\u24e7\uff58",
    "X": "\u1e8a\u1e8c\u24cd\uff38",
    "SS": "\u1e9e",
    "LL": "\u1efa",
    "ll": "\u1efb",
    "-": "\u2010\u2011\u2012\u2013\u2014\u207b\u208b\uff0d",
    "'": "\u2018\u2019\u201a\u201b\u2032\u2035\u2039\u203a\u275b\u275c\uff07",
    "^": "\u2038\uff3e",
    "!!": "\u203c",
    "/": "\u2044\uff0f",
    "[": "\u2045\u2772\uff3b",
    "]": "\u2046\u2773\uff3d",
    "??": "\u2047",
    "?!": "\u2048",
    "!?": "\u2049",
    "*": "\u204e\uff0a",
    ";": "\u204f\uff1b",
    "%": "\u2052\uff05",
    "~": "\u2053\uff5e",
    "0": "\u2070\u2080\u24ea\u24ff\uff10",
    "4": "\u2074\u2084\u2463\u24f8\u2779\u2783\u278d\uff14",
    "5": "\u2075\u2085\u2464\u24f9\u277a\u2784\u278e\uff15",
    "6": "\u2076\u2086\u2465\u24fa\u277b\u2785\u278f\uff16",
    "7": "\u2077\u2087\u2466\u24fb\u277c\u2786\u2790\uff17",
    "8": "\u2078\u2088\u2467\u24fc\u277d\u2787\u2791\uff18",
    "9": "\u2079\u2089\u2468\u24fd\u277e\u2788\u2792\uff19",
    "+": "\u207a\u208a\uff0b",
    "=": "\u207c\u208c\uff1d",
    "(": "\u207d\u208d\u2768\u276a\uff08",
    ")": "\u207e\u208e\u2769\u276b\uff09",
    "10": "\u2469\u24fe\u277f\u2789\u2793",
    "11": "\u246a\u24eb",
    "12": "\u246b\u24ec",
    "13": "\u246c\u24ed",
    "14": "\u246d\u24ee",
    "15": "\u246e\u24ef",
    "16": "\u246f\u24f0",
    "17": "\u2470\u24f1",
    "18": "\u2471\u24f2",
    "19": "\u2472\u24f3",
    "20": "\u2473\u24f4",
    "(1)": "\u2474",
    "(2)": "\u2475",
    "(3)": "\u2476",
    "(4)": "\u2477",
    "(5)": "\u2478",
    "(6)": "\u2479",
    "(7)": "\u247a",
    "(8)": "\u247b",
    "(9)": "\u247c",
    "(10)": "\u247d",
    "(11)": "\u247e",
    "(12)": "\u247f",
    "(13)": "\u2480",
    "(14)": "\u2481",
    "(15)": "\u2482",
    "(16)": "\u2483",
    "(17)": "\u2484",
    "(18)": "\u2485",
    "(19)": "\u2486",
    "(20)": "\u2487",
    "1.": "\u2488",
    "2.": "\u2489",
    "3.": "\u248a",
    "4.": "\u248b",
    "5.": "\u248c",
    "6.": "\u248d",
    "7.": "\u248e",
    "8.": "\u248f",
    "9.": "\u2490",
    "10.": "\u2491",
    "11.": "\u2492",
    "12.": "\u2493",
    "13.": "\u2494",
    "14.": "\u2495",
    "15.": "\u2496",
    "16.": "\u2497",
    "17.": "\u2498",
    "18.": "\u2499",
    "19.": "\u249a",
    "20.": "\u249b",
    "(a)": "\u249c",
    "(b)": "\u249d",
    "(c)": "\u249e",
    "(d)": "\u249f",
    "(e)": "\u24a0",
    "(f)": "\u24a1",
    "(g)": "\u24a2",
    "(h)": "\u24a3",
    "(i)": "\u24a4",
    "(j)": "\u24a5",
    "(k)": "\u24a6",
    "(l)": "\u24a7",
    "(m)": "\u24a8",
    "(n)": "\u24a9",
    "(o)": "\u24aa",
    "(p)": "\u24ab",
    "(q)": "\u24ac",
    "(r)": "\u24ad",
    "(s)": "\u24ae",
    "(t)": "\u24af",
    "(u)": "\u24b0",
    "(v)": "\u24b1",
    "(w)": "\u24b2",
    "(x)": "\u24b3",
    "(y)": "\u24b4",
    "(z)": "\u24b5",
    "<": "\u276c\u2770\uff1c",
    ">": "\u276d\u2771\uff1e",
    "{": "\u2774\uff5b",
    "}": "\u2775\uff5d",
    "((": "\u2e28",
    "))": "\u2e29",
    "TZ": "\ua728",
    "tz": "\ua729",
    "AA": "\ua732",
    "aa": "\ua733",
    "AO": "\ua734",
    "ao": "\ua735",
    "AU": "\ua736",
    "au": "\ua737",
    "AV": "\ua738\ua73a",
    "av": "\ua739\ua73b",
    "AY": "\ua73c",
    "ay": "\ua73d",
    "OO": "\ua74e",
    "oo": "\ua74f",
    "VY": "\ua760",
    "vy": "\ua761",
    "ff": "\ufb00",
    "fi": "\ufb01",
    "fl": "\ufb02",
    "ffi": "\ufb03",
    "ffl": "\ufb04",
    "st": "\ufb06",
    "!": "\uff01",
    "#": "\uff03",
    "$": "\uff04",
    "&": "\uff06",
    ",": "\uff0c",
    ".": "\uff0e",
    ":": "\uff1a",
    "?": "\uff1f",
    "@": "\uff20",
    "\\": "\uff3c",
    "_": "\uff3f",
}

_FOLD_MAP: dict[int, str] = {ord(char): ascii for ascii, chars in _ASCII_FOLDING.items() for char in chars}


def fold_to_ascii(token: str) -> str:
    """Fold accented Latin letters and look-alike symbols to ASCII ("café" -> "cafe"), as Qdrant does."""
    if token.isascii():
        return token
    return token.translate(_FOLD_MAP)


def token_id(token: str) -> int:
    """Qdrant's sparse index of a token: murmur3_32 (seed 0) of its UTF-8 bytes, read as i32, absolute value.

    Equal to fastembed's ``abs(mmh3.hash(token))``.
    """
    return abs(mmh3.hash(token.encode("utf-8"), 0, True))


# --------------------------------------------------------------------------------------------------------
# Reading `options` the way serde reads them into Qdrant's Bm25Config. Qdrant reports a bad option as
# `Invalid BM25 config: {err:#?}` of a serde_json::Error, so the messages below are serde's texts.
# --------------------------------------------------------------------------------------------------------


class _SerdeError(Exception):
    """A deserialization failure carrying serde's message (before Qdrant wraps it)."""


_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_ABSENT = object()  # an enum given as a bare string has no payload (unlike {"variant": payload})


def _as_json_float(value: int) -> float:
    """serde_json parses an integer literal that fits neither u64 nor i64 as an f64."""
    try:
        return float(value)
    except OverflowError:
        raise _SerdeError("number out of range") from None  # (inferred) serde_json's parse-time error


def _rust_float(value: float) -> str:
    """Rust's `Display` of an f64: shortest round-trip digits, never an exponent, no trailing ".0"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


def _ryu(value: float) -> str:
    """ryu's formatting of an f64, which serde_json uses for floats in its error messages ("1.0", "1e20")."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    assert isinstance(exponent, int)
    length = len(digits)
    kk = length + exponent  # position of the decimal point relative to the first digit
    if exponent >= 0 and kk <= 16:
        return f"{sign}{digits}{'0' * exponent}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    mantissa = digits if length == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{mantissa}e{kk - 1}"


_DEBUG_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def _rust_debug_str(text: str) -> str:
    """Rust's `{:?}` of a str: quoted, with quotes, backslashes and unprintable characters escaped.

    Grapheme extenders are escaped like Rust does; Python has no Grapheme_Extend table, so combining marks
    (Mn, Me) plus ZWNJ and the halfwidth kana voicing marks stand in for it (inferred, close enough for an
    error message).
    """
    out = ['"']
    for char in text:
        if char in _DEBUG_ESCAPES:
            out.append(_DEBUG_ESCAPES[char])
        elif not char.isprintable() or _is_grapheme_extend(char):
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _is_grapheme_extend(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me") or char in "\u200c\uff9e\uff9f"


def _unexpected(value: Any) -> str:
    """serde's `Unexpected` description of a JSON value, as serde_json prints it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        if _I64_MIN <= value <= _U64_MAX:
            return f"integer `{value}`"
        return f"floating point `{_ryu(_as_json_float(value))}`"
    if isinstance(value, float):
        return f"floating point `{_ryu(value)}`"
    if isinstance(value, str):
        return f"string {_rust_debug_str(value)}"
    if isinstance(value, (list, tuple)):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    raise _SerdeError(f"unsupported option value of type {type(value).__name__}")  # (inferred) not JSON


def _invalid_type(value: Any, expected: str) -> _SerdeError:
    return _SerdeError(f"invalid type: {_unexpected(value)}, expected {expected}")


def _one_of(names: Sequence[str]) -> str:
    """serde's `OneOf` list in "unknown variant" messages."""
    quoted = [f"`{name}`" for name in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def _de_f64(value: Any) -> float:
    """`NotNan<f64>` from a JSON value (k, b, avg_len): any JSON number, never NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid_type(value, "f64")
    number = (
        float(value) if isinstance(value, float) or _I64_MIN <= value <= _U64_MAX else _as_json_float(value)
    )
    if math.isnan(number):
        raise _SerdeError("invalid value: floating point `NaN`, expected float (but not NaN)")
    return number


def _de_unit_enum(value: Any, accepted: Mapping[str, str], variants: Sequence[str]) -> str:
    """A serde enum of unit variants: a bare string, or a single-key map {"variant": null}.

    `accepted` maps every spelling (names and aliases) to the canonical name; `variants` is what serde
    lists in its "unknown variant" message.
    """
    payload: Any = _ABSENT
    if isinstance(value, str):
        name = value
    elif isinstance(value, dict):
        if len(value) != 1:
            raise _SerdeError("invalid value: map, expected map with a single key")
        ((name, payload),) = value.items()
    else:
        raise _invalid_type(value, "string or map")
    if name not in accepted:
        raise _SerdeError(f"unknown variant `{name}`, expected {_one_of(variants)}")
    if payload is not _ABSENT and payload is not None:
        raise _invalid_type(payload, "unit")
    return accepted[name]


def _de_opt_bool(value: Any) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _invalid_type(value, "a boolean")
    return value


def _de_opt_string(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_type(value, "a string")
    return value


def _de_opt_usize(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and _I64_MIN <= value <= _U64_MAX:
        if value < 0:
            raise _SerdeError(f"invalid value: integer `{value}`, expected usize")
        return value
    raise _invalid_type(value, "usize")


def _de_struct_fields(value: Any, fields: Sequence[str]) -> list[Any]:
    """A serde struct from a map (unknown keys ignored) or a sequence (fields by position).

    Missing fields come back as `_ABSENT`; the caller decides whether they default or fail.
    """
    if isinstance(value, dict):
        return [value.get(field, _ABSENT) for field in fields]
    if isinstance(value, (list, tuple)):
        if len(value) > len(fields):
            raise _SerdeError("trailing elements")  # collapsed into the untagged-enum message anyway
        return [*value, *([_ABSENT] * (len(fields) - len(value)))]
    raise _SerdeError("expected a struct")


@dataclass(frozen=True)
class StopwordsSpec:
    """Qdrant's `StopwordsInterface`: predefined languages (canonical names) plus custom words."""

    languages: tuple[str, ...] = ()
    custom: tuple[str, ...] = ()


def _de_stopwords(value: Any) -> StopwordsSpec | None:
    """`Option<StopwordsInterface>`: a language string, or {"languages": [...], "custom": [...]}."""
    if value is None:
        return None
    try:  # untagged: first variant Language(Language) ...
        return StopwordsSpec(languages=(_de_unit_enum(value, _STOPWORD_LANGUAGE_NAMES, _STOPWORD_VARIANTS),))
    except _SerdeError:
        pass
    # ... then Set(StopwordsSet { languages: Option<BTreeSet<Language>>, custom: Option<BTreeSet<String>> })
    try:
        languages, custom = _de_struct_fields(value, ("languages", "custom"))
        names: list[str] = []
        if languages is not _ABSENT and languages is not None:
            if not isinstance(languages, (list, tuple)):
                raise _SerdeError("expected a sequence")
            names = [_de_unit_enum(item, _STOPWORD_LANGUAGE_NAMES, _STOPWORD_VARIANTS) for item in languages]
        words: list[str] = []
        if custom is not _ABSENT and custom is not None:
            if not isinstance(custom, (list, tuple)) or not all(isinstance(word, str) for word in custom):
                raise _SerdeError("expected a sequence of strings")
            words = list(custom)
        return StopwordsSpec(languages=tuple(sorted(set(names))), custom=tuple(sorted(set(words))))
    except _SerdeError:
        raise _SerdeError(_STOPWORDS_MISMATCH) from None


@dataclass(frozen=True)
class StemmerSpec:
    """Qdrant's `StemmingAlgorithm`: Snowball in a language (canonical name), None for `{"type": "none"}`."""

    language: str | None


def _de_stemmer(value: Any) -> StemmerSpec | None:
    """`Option<StemmingAlgorithm>`: {"type": "snowball", "language": ...} or {"type": "none"}."""
    if value is None:
        return None
    try:  # untagged: Snowball(SnowballParams { type: "snowball", language: SnowballLanguage }) ...
        kind, language = _de_struct_fields(value, ("type", "language"))
        if kind is _ABSENT or language is _ABSENT:
            raise _SerdeError("missing field")
        _de_unit_enum(kind, {"snowball": "snowball"}, ("snowball",))
        return StemmerSpec(language=_de_unit_enum(language, _SNOWBALL_LANGUAGE_NAMES, _SNOWBALL_VARIANTS))
    except _SerdeError:
        pass
    try:  # ... then Disabled(DisabledStemmerParams { type: "none" })
        (kind,) = _de_struct_fields(value, ("type",))
        if kind is _ABSENT:
            raise _SerdeError("missing field")
        _de_unit_enum(kind, {"none": "none"}, ("none",))
        return StemmerSpec(language=None)
    except _SerdeError:
        raise _SerdeError(_STEMMER_MISMATCH) from None


@dataclass(frozen=True)
class Bm25Config:
    """The parsed `options` of one request: Qdrant's `Bm25Config` with its text-preprocessing fields.

    ``None`` means "not given" (Qdrant's ``Option`` fields); the defaults are applied when the token
    pipeline is built, exactly where Qdrant applies them.
    """

    k: float = DEFAULT_K
    b: float = DEFAULT_B
    avg_len: float = DEFAULT_AVG_LEN
    tokenizer: str = "word"
    language: str | None = None
    lowercase: bool | None = None
    ascii_folding: bool | None = None
    stopwords: StopwordsSpec | None = None
    stemmer: StemmerSpec | None = None
    min_token_len: int | None = None
    max_token_len: int | None = None


# The flattened TextPreprocessingConfig fields and their readers.
_TEXT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "language": _de_opt_string,
    "lowercase": _de_opt_bool,
    "ascii_folding": _de_opt_bool,
    "stopwords": _de_stopwords,
    "stemmer": _de_stemmer,
    "min_token_len": _de_opt_usize,
    "max_token_len": _de_opt_usize,
}


def parse_bm25_options(options: dict[str, Any] | None) -> Bm25Config:
    """Read a request's ``options`` into a :class:`Bm25Config`, raising :class:`InvalidInput` like Qdrant.

    Follows serde's order: ``k``, ``b``, ``avg_len`` and ``tokenizer`` are read as they come, the other keys
    afterwards (they belong to the flattened ``TextPreprocessingConfig``). Keys Qdrant does not know are
    ignored, as Qdrant ignores them (its Bm25Config has no ``deny_unknown_fields``). Then the parameters are
    checked like ``bm25::Bm25Params::validate`` (lib/bm25/src/lib.rs): k, then b, then avg_len.
    """
    values: dict[str, Any] = {}
    rest: list[tuple[str, Any]] = []
    try:
        for key, value in options_or_empty(options).items():
            if key in ("k", "b", "avg_len"):
                values[key] = _de_f64(value)
            elif key == "tokenizer":
                values[key] = _de_unit_enum(value, {name: name for name in TOKENIZERS}, TOKENIZERS)
            else:
                rest.append((key, value))
        for key, value in rest:
            reader = _TEXT_FIELDS.get(key)
            if reader is not None:
                values[key] = reader(value)
    except _SerdeError as exc:
        raise InvalidInput(
            f"Invalid BM25 config: Error({_rust_debug_str(str(exc))}, line: 0, column: 0)"
        ) from None
    config = Bm25Config(**values)
    if not math.isfinite(config.k) or config.k < 0.0:
        raise InvalidInput(f"BM25 k1 must be finite and >= 0, got {_rust_float(config.k)}")
    if not math.isfinite(config.b) or not 0.0 <= config.b <= 1.0:
        raise InvalidInput(f"BM25 b must be finite and in [0.0, 1.0], got {_rust_float(config.b)}")
    if not math.isfinite(config.avg_len) or config.avg_len <= 0.0:
        raise InvalidInput(f"BM25 avg_doc_len must be finite and > 0, got {_rust_float(config.avg_len)}")
    _check_stemmer_available(config)
    return config


def _language_from_str(text: str, accepted: Mapping[str, str]) -> str | None:
    """Qdrant's `Language::from_str` / `SnowballLanguage::from_str`: the text parsed as a JSON string, then
    matched against the enum (names and aliases, case-sensitive); None when it is not a known language."""
    try:
        decoded = json.loads(f'"{text}"')
    except ValueError:
        return None
    return accepted.get(decoded) if isinstance(decoded, str) else None


def _stemmer_language(config: Bm25Config) -> str | None:
    """The Snowball language the pipeline stems with, or None (Qdrant's `Stemmer` choice)."""
    if config.stemmer is not None:
        return config.stemmer.language  # {"type": "none"} -> None: explicit opt-out of the default
    # No stemmer given: the language's default Snowball stemmer, if it has one (Stemmer::try_default_...).
    language = DEFAULT_LANGUAGE if config.language is None else config.language
    return _language_from_str(language, _SNOWBALL_LANGUAGE_NAMES)


@functools.cache
def _stemmer_supported(language: str) -> bool:
    """Whether py_rust_stemmers has this Snowball algorithm (it wraps Qdrant's `rust-stemmers` crate, but
    0.1.8 lacks Armenian)."""
    try:
        SnowballStemmer(language)
    except ValueError:
        return False
    return True


def _check_stemmer_available(config: Bm25Config) -> None:
    """Refuse a stemmer Qdrant has and py_rust_stemmers has not, rather than return different vectors.

    (inferred) Qdrant has no such error; the message is ours.
    """
    language = _stemmer_language(config)
    if language is not None and not _stemmer_supported(language):
        raise InvalidInput(f"BM25 stemmer for language {language} is not supported by this server.")


# --------------------------------------------------------------------------------------------------------
# The token pipeline and the BM25 weights.
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pipeline:
    """Qdrant's `Tokenizer` + `TokensProcessor` for one configuration, plus the BM25 parameters."""

    tokenizer: str
    lowercase: bool
    ascii_folding: bool
    stopwords: frozenset[str]
    stemmer: Any  # a py_rust_stemmers.SnowballStemmer, or None
    min_token_len: int | None
    max_token_len: int | None
    k: float
    b: float
    avg_len: float

    def split(self, text: str) -> list[str]:
        """The raw pieces the tokenizer cuts the text into, before any per-token processing.

        `word` (and `prefix`) cut at every non-alphanumeric character, `whitespace` at whitespace.
        `multilingual` segments with charabia in Qdrant (script detection, dictionary segmentation of
        Chinese/Japanese/Thai, lossy normalization that strips accents); that cannot be reproduced here, so
        it falls back to `word` pieces without the purely numeric ones, which charabia's path also drops
        (inferred: equal for plain unaccented Latin-script text, different for accents and CJK).
        """
        if self.tokenizer == "whitespace":
            return _NON_WHITESPACE_RE.findall(text)
        pieces = split_words(text)
        if self.tokenizer == "multilingual":
            return [piece for piece in pieces if not all(_is_number(char) for char in piece)]
        return pieces

    def _process(self, token: str, check_max_len: bool) -> str | None:
        """TokensProcessor::process_token: fold -> lowercase -> stopwords -> stem -> length filter."""
        if not token:
            return None
        if self.ascii_folding:
            token = fold_to_ascii(token)
        if self.lowercase:
            token = rust_lowercase(token)
        if token in self.stopwords:
            return None
        if self.stemmer is not None:
            token = self.stemmer.stem_word(token)
        if self.min_token_len is not None and len(token) < self.min_token_len:
            return None
        if check_max_len and self.max_token_len is not None and len(token) > self.max_token_len:
            return None
        return token

    def document_tokens(self, pieces: Sequence[str]) -> list[str]:
        """Tokens of a document (Qdrant's `tokenize_doc`)."""
        if self.tokenizer != "prefix":
            return [t for t in (self._process(p, True) for p in pieces) if t is not None]
        # Prefix: every prefix of each processed word from min_token_len (default 1) to max_token_len chars;
        # a word no longer than the current length is emitted whole and ends the loop.
        tokens: list[str] = []
        low = 1 if self.min_token_len is None else self.min_token_len
        high = self.max_token_len
        for piece in pieces:
            word = self._process(piece, False)
            if word is None:
                continue
            n = low
            while high is None or n <= high:
                if n < len(word):
                    tokens.append(word[:n])
                    n += 1
                else:
                    tokens.append(word)
                    break
        return tokens

    def query_tokens(self, pieces: Sequence[str]) -> list[str]:
        """Tokens of a query (Qdrant's `tokenize_query`)."""
        if self.tokenizer != "prefix":
            return self.document_tokens(pieces)
        # Prefix queries keep stopwords (a typed prefix may be the start of a longer word) and truncate to
        # max_token_len instead of dropping longer words.
        tokens: list[str] = []
        for piece in pieces:
            word = fold_to_ascii(piece) if self.ascii_folding else piece
            if self.lowercase:
                word = rust_lowercase(word)
            if self.stemmer is not None:
                word = self.stemmer.stem_word(word)
            if self.min_token_len is not None and len(word) < self.min_token_len:
                continue
            tokens.append(word if self.max_token_len is None else word[: self.max_token_len])
        return tokens

    def document_vector(self, tokens: Sequence[str]) -> SparseVector:
        """BM25 term-frequency weights of a document (lib/bm25's `embed_document`)."""
        if not tokens:
            return SparseVector(indices=[], values=[])
        k, b = self.k, self.b
        length_norm = 1.0 - b + b * len(tokens) / self.avg_len
        weight_of_count: dict[int, float] = {}
        weights: dict[int, float] = {}
        for token, count in Counter(tokens).items():
            weight = weight_of_count.get(count)
            if weight is None:
                n = float(count)
                weight = _to_f32(n * (k + 1.0) / _fma(k, length_norm, n))
                weight_of_count[count] = weight
            # Two tokens with the same hash: the later one wins, as in Qdrant's BTreeMap insert (rare).
            weights[token_id(token)] = weight
        indices = sorted(weights)
        return SparseVector(indices=indices, values=[weights[i] for i in indices])

    @staticmethod
    def query_vector(tokens: Sequence[str]) -> SparseVector:
        """Unique token ids, sorted, each 1.0 (lib/bm25's `embed_query`)."""
        indices = sorted({token_id(token) for token in tokens})
        return SparseVector(indices=indices, values=[1.0] * len(indices))


def _fma(a: float, b: float, c: float) -> float:
    """a*b + c rounded once, like Rust's `f64::mul_add` (math.fma arrives only in Python 3.13).

    Exact integer arithmetic on the floats' ratios, then one correctly rounded int/int division.
    """
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return a * b + c  # same IEEE result as a fused operation when an input is infinite or NaN
    a_num, a_den = a.as_integer_ratio()
    b_num, b_den = b.as_integer_ratio()
    c_num, c_den = c.as_integer_ratio()
    numerator = a_num * b_num * c_den + c_num * a_den * b_den
    try:
        return numerator / (a_den * b_den * c_den)
    except OverflowError:
        return math.copysign(math.inf, numerator)


def _to_f32(value: float) -> float:
    """Round to the nearest f32 (Rust's `as f32`: Qdrant stores sparse values as f32)."""
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _LruCache(Generic[_K, _V]):
    """A small thread-safe LRU map: parsed configs repeat across requests, but their number is unbounded."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, key: _K, create: Callable[[], _V]) -> _V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = create()  # outside the lock: building may read files; a duplicate build is harmless
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class Bm25Runner:
    """Runs ``qdrant/bm25`` for the engine: Qdrant-identical sparse vectors, no model weights.

    ``model_dir`` holds the stopword lists as ``<language>.txt``. Thread-safe; parsed options, token
    pipelines, stopword lists and stemmers are cached.

    Usage counts ``tokens`` as the number of raw pieces the tokenizer cut the text into (words for the
    ``word``/``prefix`` tokenizers, whitespace-separated chunks for ``whitespace``), counted before
    stopword and length filtering and before prefix expansion: that is the text the model processed,
    and it does not change with the stopword or length options.
    """

    def __init__(self, spec: ModelSpec, model_dir: Path) -> None:
        self.spec = spec
        self.model_dir = Path(model_dir)
        self._configs: _LruCache[str, Bm25Config] = _LruCache(_CACHE_SIZE)
        self._pipelines: _LruCache[Bm25Config, _Pipeline] = _LruCache(_CACHE_SIZE)
        self._stopword_files: dict[str, frozenset[str]] = {}
        self._stemmers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def check(self, request: EmbedRequest) -> None:
        """Refuse non-text input and invalid options (parsed once per distinct options, then cached)."""
        if request.input_type is not InputType.TEXT or not isinstance(request.data, str):
            raise InvalidInput(f"Only text input is supported for {request.model}.")
        if _SURROGATE_RE.search(request.data):
            # Python's json accepts "\ud800" escapes that serde_json (and so Qdrant) refuses as a request.
            raise InvalidInput("Text contains an unpaired Unicode surrogate.")  # (inferred) our wording
        self._config(request.options)

    def embed(self, requests: Sequence[EmbedRequest]) -> list[EmbedResult]:
        """One sparse vector per request, in order (documents: BM25 tf weights; queries: 1.0 per token)."""
        results = []
        for request in requests:
            self.check(request)
            pipeline = self._pipeline(self._config(request.options))
            pieces = pipeline.split(request.data)
            if request.kind is Kind.QUERY:
                vector = pipeline.query_vector(pipeline.query_tokens(pieces))
            else:
                vector = pipeline.document_vector(pipeline.document_tokens(pieces))
            results.append(EmbedResult(vector=vector, tokens=len(pieces)))
        return results

    def _config(self, options: dict[str, Any] | None) -> Bm25Config:
        try:
            key = json.dumps(options or {}, sort_keys=True, allow_nan=True)
        except (TypeError, ValueError):
            return parse_bm25_options(options)  # not JSON-like: parse (and most likely refuse) uncached
        return self._configs.get_or_create(key, lambda: parse_bm25_options(options))

    def _pipeline(self, config: Bm25Config) -> _Pipeline:
        return self._pipelines.get_or_create(config, lambda: self._build_pipeline(config))

    def _build_pipeline(self, config: Bm25Config) -> _Pipeline:
        """Qdrant's `build_tokens_processor`: apply the defaults and resolve stopwords and the stemmer."""
        lowercase = True if config.lowercase is None else config.lowercase
        language = DEFAULT_LANGUAGE if config.language is None else config.language
        stopwords = config.stopwords
        if stopwords is None:
            # No stopwords given: the language's list. An unknown language (Qdrant documents "none" for
            # this) means no stopwords and no default stemmer; Qdrant accepts it with a deprecation warning.
            default = _language_from_str(language, _STOPWORD_LANGUAGE_NAMES)
            stopwords = StopwordsSpec(languages=(default,)) if default else StopwordsSpec()
        words: set[str] = set()
        for name in stopwords.languages:
            words.update(self._stopword_file(name))
        words.update(stopwords.custom)
        if lowercase:  # Qdrant lowercases the lists only when tokens are lowercased too
            words = {rust_lowercase(word) for word in words}
        stem_language = _stemmer_language(config)
        return _Pipeline(
            tokenizer=config.tokenizer,
            lowercase=lowercase,
            ascii_folding=bool(config.ascii_folding),
            stopwords=frozenset(words),
            stemmer=None if stem_language is None else self._stemmer(stem_language),
            min_token_len=config.min_token_len,
            max_token_len=config.max_token_len,
            k=config.k,
            b=config.b,
            avg_len=config.avg_len,
        )

    def _stopword_file(self, language: str) -> frozenset[str]:
        """The words of `{model_dir}/{language}.txt`; none when the file is missing (no list installed)."""
        with self._lock:
            cached = self._stopword_files.get(language)
        if cached is not None:
            return cached
        try:
            text = (self.model_dir / f"{language}.txt").read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        words = frozenset(line.strip() for line in text.splitlines() if line.strip())
        with self._lock:
            self._stopword_files[language] = words
        return words

    def _stemmer(self, language: str) -> Any:
        with self._lock:
            stemmer = self._stemmers.get(language)
            if stemmer is None:
                stemmer = self._stemmers[language] = SnowballStemmer(language)
            return stemmer
