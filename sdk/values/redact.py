"""Secret redaction: which keys name a secret, and which text looks like one.

Two independent checks, both applied by :mod:`spanflow.values.serialize` before a value leaves the process:

* **Keys** (dict keys, model and dataclass field names, parameter names). A key is split into
  lowercase words at ``_``, ``-``, ``.``, spaces and camelCase boundaries (``X-Api-Key`` ->
  ``x api key``, ``accessToken`` -> ``access token``); it names a secret when

  - its words, joined without separators, contain one of :data:`DEFAULT_SECRET_KEYS` or a
    user-supplied key (``api_key``, ``apiKey`` and ``API-KEY`` all contain ``apikey``);
  - one of its words is ``auth``, ``oauth``, ``jwt``, ``csrf`` or ``xsrf`` (so ``auth`` and
    ``basic_auth`` match but ``author`` does not);
  - it is an environment-variable style name ending in ``_KEY`` (``OPENAI_KEY``; lowercase
    ``cache_key`` is a cache key);
  - its last word is ``pass``, ``pwd`` or ``session`` (``db_pass`` but not ``pass_rate``;
    ``session_id`` is a conversation id in most pipelines and is kept);
  - its last word ends in ``token`` (``token``, ``access_token``, ``x-api-token``, ``csrftoken``)
    unless the word before says it is a tokenizer or counting term (``eos_token``,
    ``max_token``, ``next_token``); ``tokens``, ``max_tokens``, ``token_count`` never match.

* **Values**: :data:`DEFAULT_SECRET_PATTERNS` (plus user patterns) are searched in text. When a
  pattern has capturing groups, only the groups are replaced, so context stays readable:
  ``Bearer [REDACTED]``, ``https://user:[REDACTED]@host``, ``password=[REDACTED]``. Every
  string of every recorded value goes through this, so it is built to be cheap: a built-in
  pattern only runs on text containing one of its literal parts (one scan finds them all),
  and verdicts on short strings are cached. User patterns run on every string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "DEFAULT_SECRET_PATTERNS",
    "REDACTED",
    "Redactor",
]

REDACTED: Final = "[REDACTED]"

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "api_key",
    "apikey",
    "api-key",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "authorization",
    "cookie",
    "set-cookie",
    "private_key",
    "credential",
    "access_key",
    "signing_key",
    "encryption_key",
    "session_key",
    "session_token",
)
"""Substrings of a key's separator-free lowercase form (see the module docstring for the
word rules that cover ``token``, ``auth`` and ``session``)."""

# Words that name a secret wherever they stand in a key.
_SECRET_WORDS: Final = frozenset({"auth", "oauth", "jwt", "csrf", "xsrf"})
# Words that name a secret only as the last word of a key.
_SECRET_LAST_WORDS: Final = frozenset({"pass", "pwd", "session"})
# "<word>_token" where <word> makes it a tokenizer, pagination or counting term, not a credential.
_NOT_CREDENTIAL_TOKEN: Final = frozenset(
    {
        "bos", "eos", "pad", "unk", "sep", "cls", "mask", "stop", "special", "start", "end",
        "next", "prev", "previous", "page", "continuation", "max", "min", "num", "total",
        "input", "output", "prompt", "completion", "first", "last", "new",
    }
)  # fmt: skip

_CHARS = r"[A-Za-z0-9._~+/-]"
# Where a vendor key may start: not inside a word or number. Unlike \b, an underscore before
# it counts as a start, so "key_sk-proj-..." and "token=ghp_..." are both found.
_START = r"(?<![A-Za-z0-9])"
# Value groups never start at an earlier replacement, so redacting twice changes nothing.
_FRESH = r"(?!\[REDACTED\])"
_SCHEME = r"(?i:basic|bearer|digest|token|negotiate)"
# (pattern, triggers): a pattern only runs on text whose lowercase form contains one of its
# triggers, literal parts of the pattern itself. One scan for all triggers is much cheaper than
# running every pattern over every string, and most strings contain none.
_DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # "Authorization: Basic dXNlcjpwYXNz" and the like in free text (headers logged as text).
    (
        r"\b(?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?"
        rf"(?:{_SCHEME}\s+)?(?!{_SCHEME}\s)({_FRESH}[^\s\"',;]{{6,}})",
        ("authorization",),
    ),
    # A header value on its own, as in [("Authorization", "Basic dXNlcjpwYXNz")]: the whole
    # string is scheme + credential, with an uppercase letter, digit or symbol in it.
    (
        rf"^\s*{_SCHEME}\s+((?=\S*[A-Z0-9+/=])[A-Za-z0-9._~+/-]{{8,}}=*)\s*$",
        ("basic", "bearer", "token", "digest", "negotiate"),
    ),
    # "Bearer <token>": the token must have a digit or punctuation, so prose stays untouched.
    (rf"\b(?i:bearer)\s+((?={_CHARS}*[0-9_~+/-]){_CHARS}{{8,}}=*)", ("bearer",)),
    # OpenAI / Anthropic style keys: sk-..., sk-proj-..., sk-ant-api03-...
    (rf"{_START}sk-[A-Za-z0-9_-]{{20,}}", ("sk-",)),
    # AWS access key ids.
    (rf"{_START}(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{{16}}\b", ("akia", "asia", "abia", "acca")),
    # GitHub tokens.
    (
        rf"{_START}(?:gh[pousr]_[A-Za-z0-9]{{30,}}|github_pat_[A-Za-z0-9_]{{30,}})",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    # Slack tokens.
    (rf"{_START}xox[abeoprs]-[A-Za-z0-9-]{{10,}}", ("xox",)),
    # Google API keys, Stripe secret keys, Hugging Face tokens.
    (rf"{_START}AIza[0-9A-Za-z_-]{{35}}", ("aiza",)),
    (rf"{_START}[rs]k_(?:live|test)_[0-9A-Za-z]{{16,}}", ("k_live_", "k_test_")),
    (rf"{_START}hf_[A-Za-z0-9]{{30,}}", ("hf_",)),
    # JSON Web Tokens (header.payload.signature, the first two base64url JSON objects).
    (rf"{_START}eyJ[A-Za-z0-9_-]{{4,}}\.eyJ[A-Za-z0-9_-]{{4,}}\.[A-Za-z0-9_-]*", ("eyj",)),
    # PEM private keys, to the END line or, when cut, to the end of the text.
    (
        r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z ]*PRIVATE KEY-----|[\s\S]*)",
        ("private key",),
    ),
    # Passwords in URLs: scheme://user:password@host.
    (rf"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:\"']*:({_FRESH}[^\s/?#@\"']+)@", ("://",)),
    # Query parameters that carry credentials: ?token=..., &sig=..., OAuth's ?code=...
    (
        rf"[?&](?i:token|key|sig|signature|code|auth)=({_FRESH}[^&#\s\"'<>]+)",
        ("token", "key", "sig", "code", "auth"),
    ),
    # key=value / key: value with a secret-named key (query strings, reprs, config text).
    (
        r"(?<![A-Za-z0-9])(?:(?i:pass(?:word|wd|phrase)|pwd|secret(?:[_-]?(?:access[_-]?)?key)?"
        r"|api[_-]?key|(?:access|refresh|id|auth|api|bearer|session|csrf)[_-]?token"
        r"|private[_-]?key|client[_-]?secret)"
        # Environment-variable style names: OPENAI_KEY=..., MY_SERVICE_TOKEN: ...
        # (starting where no name character precedes: from inside a run of them, every start
        # would scan the rest of the run again, quadratic time on a long one)
        r"|(?<![A-Za-z0-9_])[A-Z][A-Z0-9_]*_(?:KEY|SECRET|TOKEN|PASSWORD|PASS|PWD))"
        rf"[\"']?\s*[:=]\s*(?:\"({_FRESH}[^\"\\\r\n]+)\"|'({_FRESH}[^'\\\r\n]+)'"
        rf"|({_FRESH}[^\s\"'&,;)}}\]\\]+))",
        ("pass", "pwd", "secret", "key", "token"),
    ),
)
DEFAULT_SECRET_PATTERNS: tuple[str, ...] = tuple(pattern for pattern, _ in _DEFAULT_RULES)
"""Regular expressions for secret-shaped text (compiled with ``re.ASCII``); capturing groups
mark the part to replace."""

_ENV_NAME: Final = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM: Final = re.compile(r"[^a-z0-9]+")
_KEY_CACHE_SIZE: Final = 4096
_TEXT_CACHE_SIZE: Final = 2048
_TEXT_CACHE_CHARS: Final = 48
# Containers nested deeper than this are replaced whole (a walk must end somewhere).
_MAX_DEPTH: Final = 32
# Attribute values redaction leaves as they are.
_SCALARS: Final = frozenset({int, float, bool, type(None)})


def _words(key: str) -> list[str]:
    return [w for w in _NON_ALNUM.split(_CAMEL.sub("_", key).lower()) if w]


def _compile(pattern: str | re.Pattern[str], flags: int = 0) -> re.Pattern[str]:
    try:
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
    except (re.error, TypeError) as exc:
        raise ConfigurationError(
            f"redaction pattern {pattern!r} is not a valid regular expression ({exc}); "
            "pass a Python `re` pattern string"
        ) from exc
    if not isinstance(compiled.pattern, str):
        raise ConfigurationError(f"redaction pattern {pattern!r} must match str, not bytes")
    if compiled.fullmatch("") is not None:
        raise ConfigurationError(
            f"redaction pattern {compiled.pattern!r} matches the empty string, so it would "
            "redact everywhere; make it require at least one character"
        )
    return compiled


def _trie(words: Iterable[str]) -> str:
    """One regex for many literals, shaped as a trie so each position tests few branches."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


def _group_replacer(count: int) -> Callable[[re.Match[str]], str]:
    """Replace the groups of a match, or the whole match if none took part."""
    groups = range(1, count + 1)

    def replace(m: re.Match[str]) -> str:
        text = m.string
        start, end = m.span()
        pos = start
        parts: list[str] = []
        for g in groups:
            a, b = m.span(g)
            if a < pos:  # did not take part, or nested in a group already replaced
                continue
            parts.append(text[pos:a])
            parts.append(REDACTED)
            pos = b
        if not parts:
            return REDACTED
        parts.append(text[pos:end])
        return "".join(parts)

    return replace


class Redactor:
    """Decides which keys name secrets and replaces secret-shaped text.

    Args:
        keys: extra key substrings (case, ``_``, ``-`` and ``.`` are ignored when matching).
        patterns: extra regular expressions; a pattern with capturing groups has only its groups
            replaced, otherwise the whole match.
        defaults: keep the built-in keys, word rules and patterns (``False`` uses only yours).

    Raises:
        ConfigurationError: a key is empty or a pattern does not compile or matches "".
    """

    __slots__ = (
        "_always",
        "_args",
        "_key_cache",
        "_keys_re",
        "_min_len",
        "_text_cache",
        "_triggered",
        "_triggers",
        "_word_rules",
        "plain_keys",
        "plain_texts",
    )

    def __init__(
        self,
        *,
        keys: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] = (),
        defaults: bool = True,
    ) -> None:
        for name, given in (("keys", keys), ("patterns", patterns)):
            if isinstance(given, (str, re.Pattern)):
                raise ConfigurationError(
                    f"Redactor({name}=...) takes a list, not a single {name[:-1]}"
                )
        keys, patterns = tuple(keys), tuple(patterns)
        self._args = (keys, patterns, defaults)  # to rebuild it in another process
        substrings: list[str] = []
        for key in keys:
            if not isinstance(key, str) or not "".join(_words(key)):
                raise ConfigurationError(
                    f"redaction key {key!r} must be a non-empty string with a letter or digit"
                )
            substrings.append("".join(_words(key)))
        if defaults:
            substrings.extend("".join(_words(k)) for k in DEFAULT_SECRET_KEYS)
        self._keys_re = (
            re.compile("|".join(sorted({re.escape(s) for s in substrings}))) if substrings else None
        )
        self._word_rules = defaults
        self._key_cache: dict[str, tuple[str, bool, bool]] = {}
        self._text_cache: dict[str, tuple[str, bool]] = {}
        #: Keys seen so far that name no secret and hold no secret-shaped text, and short texts
        #: seen so far that hold none: a set lookup answers the common case on the hot path.
        #: Read-only outside this class.
        self.plain_keys: set[str] = set()
        self.plain_texts: set[str] = set()

        # Built-in patterns run only on text holding one of their triggers; yours always run.
        self._triggered: list[_Rule] = []
        triggers: set[str] = set()
        if defaults:
            for text, rule_triggers in _DEFAULT_RULES:
                # ASCII: case-insensitive parts must not match look-alikes such as "ſ" for "s",
                # which the lowercase trigger check would not see.
                compiled = _compile(text, re.ASCII)
                self._triggered.append(_rule(compiled, frozenset(rule_triggers)))
                triggers.update(rule_triggers)
        self._always = [_rule(_compile(pattern), frozenset()) for pattern in patterns]
        self._triggers = re.compile(_trie(triggers)) if triggers else None
        # Shorter text cannot hold a secret any built-in pattern recognises ("pwd=x").
        self._min_len = 1 if self._always else 5

    def __reduce__(self) -> tuple[Any, ...]:
        # The compiled rules hold closures; rebuild from the arguments instead (steps sent to
        # worker processes carry the caller's redaction settings this way).
        keys, patterns, defaults = self._args
        return (_rebuild, (keys, patterns, defaults))

    def is_secret_key(self, key: str) -> bool:
        """Whether values under ``key`` (a dict key, field or parameter name) are secrets."""
        return self.redact_key(key)[1]

    def redact_key(self, key: str) -> tuple[str, bool, bool]:
        """Classify a key once (cached).

        Returns:
            ``(text, is_secret, text_redacted)``: the key with secret-shaped text replaced,
            whether it names a secret, and whether its own text held one.
        """
        hit = self._key_cache.get(key)
        if hit is not None:
            return hit
        text, replaced = self.redact_text(key)
        info = (text, self._classify(key), replaced)
        cache = self._key_cache
        if len(cache) >= _KEY_CACHE_SIZE:
            cache.clear()
            self.plain_keys.clear()
        cache[key] = info
        if not (info[1] or replaced):
            self.plain_keys.add(key)
        return info

    def _classify(self, key: str) -> bool:
        words = _words(key)
        if not words:
            return False
        if self._keys_re is not None and self._keys_re.search("".join(words)):
            return True
        if not self._word_rules:
            return False
        last = words[-1]
        if last in _SECRET_LAST_WORDS or not _SECRET_WORDS.isdisjoint(words):
            return True
        if last == "key" and len(words) > 1 and _ENV_NAME.fullmatch(key):
            return True  # OPENAI_KEY, STRIPE_LIVE_KEY: environment variables name credentials
        if last.endswith("token"):
            return not (last == "token" and len(words) > 1 and words[-2] in _NOT_CREDENTIAL_TOKEN)
        return False

    def redact_text(self, text: str) -> tuple[str, bool]:
        """Replace secret-shaped substrings of ``text`` by :data:`REDACTED`.

        Returns:
            The text and whether anything was replaced.
        """
        n = len(text)
        if n < self._min_len:
            return text, False
        if n <= _TEXT_CACHE_CHARS:
            # Short strings repeat (roles, model names, statuses): remember their verdict.
            cached = self._text_cache.get(text)
            if cached is None:
                cached = self._redact(text)
                if len(self._text_cache) >= _TEXT_CACHE_SIZE:
                    self._text_cache.clear()
                    self.plain_texts.clear()
                self._text_cache[text] = cached
                if not cached[1]:
                    self.plain_texts.add(text)
            return cached
        return self._redact(text)

    def redact_cut(self, text: str, limit: int, *, tail: bool = False) -> str:
        """``text`` redacted, then cut to its first ``limit`` characters (its last with ``tail``).

        Redacting first means no cut falls inside a secret and leaves part of it in clear. Only a
        window several times ``limit`` is scanned, so huge text costs bounded time.
        """
        window = limit * 8 + 4096
        part = text[-window:] if tail else text[:window]
        clean = self.redact_text(part)[0]
        return clean[-limit:] if tail else clean[:limit]

    def scrub_attributes(
        self, attributes: Mapping[str, object], skip: frozenset[str] = frozenset()
    ) -> dict[str, object] | None:
        """OTel attributes with secrets replaced, or None when nothing had to change.

        A key that names a secret has its whole value replaced; strings (and strings in
        sequences) are redacted by shape. Keys in ``skip`` are left as they are (values spanflow
        made, already redacted when they were encoded).
        """
        out: dict[str, object] | None = None
        plain_keys, plain_texts = self.plain_keys, self.plain_texts
        for key, value in attributes.items():
            if key in skip:
                continue
            if key in plain_keys:
                # The common case in set lookups: a key and a short text already found plain.
                kind = type(value)
                if kind in _SCALARS or (kind is str and value in plain_texts):
                    continue
                clean = self._scrub_value(value, 0)
            else:
                text, secret, in_key = self.redact_key(key)
                clean = REDACTED if secret else self._scrub_value(value, 0)
                if in_key:  # the key's own text holds one: it is stored under the redacted text
                    if out is None:
                        out = dict(attributes)
                    del out[key]
                    out[text] = clean
                    continue
            if clean is not value and clean != value:
                if out is None:
                    out = dict(attributes)
                out[key] = clean
        return out

    def _scrub_value(self, value: object, depth: int) -> object:
        # Attribute values are strings, numbers and sequences of them; OTLP's received ones may
        # also nest key/value lists (dicts here). Unchanged values come back as the same object.
        if isinstance(value, str):
            return self.redact_text(value)[0]
        if not isinstance(value, (tuple, list, dict)):
            return value
        if depth > _MAX_DEPTH:
            return REDACTED  # not walked, so not known clean: nothing of it is kept
        if isinstance(value, dict):
            items: dict[object, object] = {}
            for k, v in value.items():
                if isinstance(k, str):
                    text, secret, _ = self.redact_key(k)
                    items[text] = REDACTED if secret else self._scrub_value(v, depth + 1)
                else:
                    items[k] = self._scrub_value(v, depth + 1)
            return value if items == value else items
        clean = [self._scrub_value(v, depth + 1) for v in value]
        if all(c is v for c, v in zip(clean, value, strict=True)):
            return value
        return tuple(clean) if isinstance(value, tuple) else clean

    def _redact(self, text: str) -> tuple[str, bool]:
        changed = False
        if self._triggers is not None:
            found = self._triggers.findall(text.lower())
            if found:
                for pattern, replace, triggers in self._triggered:
                    if not triggers.isdisjoint(found):
                        text, n = pattern.subn(replace, text)
                        changed = changed or n > 0
        for pattern, replace, _ in self._always:
            text, n = pattern.subn(replace, text)
            changed = changed or n > 0
        return text, changed


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str], frozenset[str]]


def _rule(pattern: re.Pattern[str], triggers: frozenset[str]) -> _Rule:
    n = pattern.groups
    return (pattern, _group_replacer(n) if n else _whole, triggers)


def _whole(_m: re.Match[str]) -> str:
    return REDACTED


def _rebuild(keys: tuple[str, ...], patterns: tuple[Any, ...], defaults: bool) -> Redactor:
    return Redactor(keys=keys, patterns=patterns, defaults=defaults)
