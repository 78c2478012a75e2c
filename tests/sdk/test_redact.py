"""Secret keys and secret-shaped text: what is replaced, what must stay readable."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spanflow.errors import ConfigurationError
from spanflow.values.redact import (
    _DEFAULT_RULES,
    DEFAULT_SECRET_KEYS,
    DEFAULT_SECRET_PATTERNS,
    REDACTED,
    Redactor,
)

SECRET_KEYS = [
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "x-api-token",
    "accessToken",
    "csrftoken",
    "GITHUB_TOKEN",
    "api_key",
    "apikey",
    "api-key",
    "apiKey",
    "X-Api-Key",
    "OPENAI_API_KEY",
    "password",
    "db_password",
    "passwd",
    "passphrase",
    "db_pass",
    "pwd",
    "secret",
    "client_secret",
    "AWS_SECRET_ACCESS_KEY",
    "aws_access_key_id",
    "authorization",
    "Authorization",
    "HTTP_AUTHORIZATION",
    "proxy-authorization",
    "auth",
    "basic_auth",
    "x-auth",
    "oauth",
    "jwt",
    "cookie",
    "Cookie",
    "set-cookie",
    "Set-Cookie",
    "session",
    "aiohttp_session",
    "session_token",
    "private_key",
    "privateKey",
    "ssh_private_key_path",
    "credentials",
    "credential",
    "signing_key",
]

PLAIN_KEYS = [
    "max_tokens",
    "max_new_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "token_count",
    "tokenCount",
    "num_tokens",
    "tokens",
    "tokenizer",
    "token_type",
    "eos_token",
    "pad_token",
    "bos_token",
    "next_token",
    "page_token",
    "max_token",
    "author",
    "authors",
    "authored_by",
    "authority",
    "session_id",
    "query",
    "k",
    "model",
    "temperature",
    "key",
    "keys",
    "monkey",
    "passage",
    "compass",
    "bypass",
    "pass_rate",
    "",
    "__",
]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys(redactor: Redactor, key: str) -> None:
    assert redactor.is_secret_key(key)


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys(redactor: Redactor, key: str) -> None:
    assert not redactor.is_secret_key(key)


def test_key_verdicts_are_cached_and_stable(redactor: Redactor) -> None:
    for _ in range(3):
        assert redactor.is_secret_key("access_token")
        assert not redactor.is_secret_key("max_tokens")
    assert redactor.redact_key("access_token") is redactor.redact_key("access_token")


def test_key_text_holding_a_secret_is_redacted(redactor: Redactor) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 4
    text, secret, hit = redactor.redact_key(key)
    assert hit and not secret
    assert text == REDACTED


def test_user_keys_are_added_to_the_defaults() -> None:
    r = Redactor(keys=["ssn", "Card-Number"])
    assert r.is_secret_key("user_ssn")
    assert r.is_secret_key("SSN")
    assert r.is_secret_key("card_number")
    assert r.is_secret_key("cardNumber")
    assert r.is_secret_key("password")
    assert not r.is_secret_key("query")


def test_defaults_can_be_dropped() -> None:
    r = Redactor(keys=["ssn"], defaults=False)
    assert r.is_secret_key("ssn")
    assert not r.is_secret_key("password")
    assert not r.is_secret_key("token")
    text = "Authorization: Bearer abc123def456 sk-proj-" + "x" * 30
    assert r.redact_text(text) == (text, False)


def test_default_key_list_is_covered(redactor: Redactor) -> None:
    for key in DEFAULT_SECRET_KEYS:
        assert redactor.is_secret_key(key), key
        assert redactor.is_secret_key(f"my_{key}_value"), key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc123def456ghi", "Authorization: Bearer [REDACTED]"),
        ("curl -H 'Bearer eyJhbGciOi.x-y_z'", "curl -H 'Bearer [REDACTED]'"),
        ("BEARER tok_12345678", "BEARER [REDACTED]"),
        ("Basic dXNlcjpwYXNz", "Basic [REDACTED]"),
        ("Bearer abcdefGHIJKL", "Bearer [REDACTED]"),
        (" Digest Zm9vOmJhcg== ", " Digest [REDACTED] "),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
        ('{"authorization": "opaque-value"}', '{"authorization": "[REDACTED]"}'),
        ("key=sk-proj-abcdefghijklmnopqrstuvwxyz012345", "key=[REDACTED]"),
        ("use sk-ant-api03-abcdefghijklmnopqrstuv_wxyz-0123 now", "use [REDACTED] now"),
        ("sk-abcdefghijklmnopqrstuvwxyz", REDACTED),
        ("id AKIAIOSFODNN7EXAMPLE here", "id [REDACTED] here"),
        ("ghp_" + "a1" * 18, REDACTED),
        ("github_pat_" + "A1_" * 20, REDACTED),
        ("xoxb-123456789012-abcdef", REDACTED),
        ("AIza" + "B" * 35, REDACTED),
        ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", REDACTED),
        ("hf_" + "abcdEFGH1234" * 3, REDACTED),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_x", "jwt [REDACTED]"),
        ("https://user:hunter2@example.com/x", "https://user:[REDACTED]@example.com/x"),
        ("redis://:s3cr3t@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        ("https://x.io/cb?q=1&password=hunter2&x=2", "https://x.io/cb?q=1&password=[REDACTED]&x=2"),
        ("?access_token=abc.def&page=2", "?access_token=[REDACTED]&page=2"),
        ("/cb?code=4/0AX&state=s&token=t1", "/cb?code=[REDACTED]&state=s&token=[REDACTED]"),
        (
            "https://s3/x?X-Amz-Credential=a%2Fb&sig=abc",
            "https://s3/x?X-Amz-Credential=a%2Fb&sig=[REDACTED]",
        ),
        (
            "Config(api_key='k1', password='a b c')",
            "Config(api_key='[REDACTED]', password='[REDACTED]')",
        ),
        ('db_password = "x y"', 'db_password = "[REDACTED]"'),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=[REDACTED]"),
        ("client_secret: abcd", "client_secret: [REDACTED]"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nrest",
            "[REDACTED]\nrest",
        ),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN (cut here", REDACTED),
    ],
)
def test_secret_shaped_text(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact_text(text) == (expected, True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "refund please",
        "The bearer of bad news arrived.",
        "Bearer bonds are rarely issued",
        "Basic understanding",
        "basic instructions",
        "Token limitations",
        "max_tokens=512 tokens: 20 token_count=3",
        "input tokens: 42, output tokens: 7",
        "The password policy requires rotation",
        "a secret garden",
        "visit https://example.com/path?q=1",
        "email me at someone@example.com",
        "task-1234567890123456789012345 is done",
        "authorization is required",
        "sk-short",
        "see the key points",
        "what is the code? key=value pairs",
        "https://example.com/?page=2&sort=asc",
        "eos_token='</s>'",
        "SPEAKER: hello",
        "p@ss: yes",
    ],
)
def test_plain_text_is_untouched(redactor: Redactor, text: str) -> None:
    assert redactor.redact_text(text) == (text, False)


def test_redacting_twice_changes_nothing(redactor: Redactor) -> None:
    text = (
        "Authorization: Bearer abc123def456 https://u:pw12@h/x?password=p1&token=t&code=c "
        "api_key='k' secret: \"s v\" sk-" + "a" * 30
    )
    once, hit = redactor.redact_text(text)
    assert hit
    assert redactor.redact_text(once) == (once, False)


def test_short_text_cache_gives_the_same_answers(redactor: Redactor) -> None:
    secret = "pwd=hunter2"
    for _ in range(3):
        assert redactor.redact_text(secret) == ("pwd=[REDACTED]", True)
        assert redactor.redact_text("hello there") == ("hello there", False)


def test_user_patterns_add_to_defaults_and_replace_groups() -> None:
    r = Redactor(patterns=[r"EMP-\d{6}", re.compile(r"ssn=(\d{3}-\d{2}-\d{4})")])
    assert r.redact_text("id EMP-123456 ok") == ("id [REDACTED] ok", True)
    assert r.redact_text("ssn=123-45-6789;") == ("ssn=[REDACTED];", True)
    assert r.redact_text("pwd=x") == ("pwd=[REDACTED]", True)  # defaults still apply
    assert r.redact_text("a") == ("a", False)


def test_user_pattern_applies_to_very_short_text() -> None:
    r = Redactor(patterns=[r"\d"], defaults=False)
    assert r.redact_text("7") == (REDACTED, True)


def test_optional_groups_that_did_not_match_redact_the_whole_match() -> None:
    r = Redactor(patterns=[r"code:(\d+)?[A-Z]+"], defaults=False)
    assert r.redact_text("x code:ABC y") == (f"x {REDACTED} y", True)
    assert r.redact_text("x code:12AB y") == (f"x code:{REDACTED}AB y", True)


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [("(unclosed", "(unclosed"), ("a**", "a**"), ("x*", "empty string")],
)
def test_bad_patterns_are_configuration_errors(pattern: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        Redactor(patterns=[pattern])


def test_bytes_pattern_is_refused() -> None:
    bad: Any = re.compile(b"x+")
    with pytest.raises(ConfigurationError, match="str"):
        Redactor(patterns=[bad])


def test_a_single_string_instead_of_a_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="list"):
        Redactor(keys="ssn")
    with pytest.raises(ConfigurationError, match="list"):
        Redactor(patterns=r"\d+")


@pytest.mark.parametrize("key", ["", "--", 3])
def test_bad_keys_are_configuration_errors(key: object) -> None:
    with pytest.raises(ConfigurationError, match="redaction key"):
        Redactor(keys=[key])  # type: ignore[list-item]


def test_default_patterns_are_exported_and_sane() -> None:
    assert len(DEFAULT_SECRET_PATTERNS) == len(_DEFAULT_RULES)
    for pattern in DEFAULT_SECRET_PATTERNS:
        compiled = re.compile(pattern, re.ASCII)
        assert compiled.fullmatch("") is None
        assert not compiled.search(REDACTED)


@pytest.mark.parametrize("index", range(len(_DEFAULT_RULES)))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_match_of_a_default_pattern_is_redacted(index: int, data: st.DataObject) -> None:
    # The trigger pre-check must never hide a text the pattern itself would match.
    pattern = re.compile(_DEFAULT_RULES[index][0], re.ASCII)
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    redacted, hit = Redactor().redact_text(text)
    assert hit
    assert redacted != text or REDACTED in text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_redact_text_never_fails_and_is_idempotent(text: str) -> None:
    r = Redactor()
    once, _ = r.redact_text(text)
    assert r.redact_text(once) == (once, False)


@pytest.mark.parametrize("index", range(len(_DEFAULT_RULES)))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_pattern_match_inside_other_text_is_redacted(index: int, data: st.DataObject) -> None:
    pattern = re.compile(_DEFAULT_RULES[index][0], re.ASCII)
    around = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
    text = data.draw(around) + data.draw(st.from_regex(pattern, fullmatch=True)) + data.draw(around)
    if any(re.compile(p, re.ASCII).search(text) for p, _ in _DEFAULT_RULES):
        assert Redactor().redact_text(text)[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A word character before a vendor key is no word boundary, and no reason to keep it.
        ("key_sk-proj-Zq3vT9xLmW2aB7cD4eF6gH8iJ0k", "key_[REDACTED]"),
        ("token_ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token_[REDACTED]"),
        ("x_hf_abcdefghijklmnopqrstuvwxyz0123456", "x_[REDACTED]"),
        # Environment-variable assignments name their own secrets.
        ("OPENAI_KEY=Zq3vT9xLmW2aB7cD4", "OPENAI_KEY=[REDACTED]"),
        ("export MY_SERVICE_TOKEN='abcdefgh12'", "export MY_SERVICE_TOKEN='[REDACTED]'"),
        ("DB_PASSWORD: s3cr3t-pw", "DB_PASSWORD: [REDACTED]"),
    ],
)
def test_secrets_glued_to_words_and_env_assignments(
    redactor: Redactor, text: str, expected: str
) -> None:
    assert redactor.redact_text(text) == (expected, True)


@pytest.mark.parametrize(
    "key",
    [
        "OPENAI_KEY",
        "ANTHROPIC_API_KEY",
        "STRIPE_LIVE_KEY",
        "AWS_SECRET",
        "GH_TOKEN",
        "passwd",
        "pwd",
    ],
)
def test_environment_variable_style_keys(redactor: Redactor, key: str) -> None:
    assert redactor.is_secret_key(key)


@pytest.mark.parametrize("key", ["cache_key", "primary_key", "sort_key", "MAX_TOKENS", "task"])
def test_keys_that_only_look_like_env_secrets(redactor: Redactor, key: str) -> None:
    assert not redactor.is_secret_key(key)


KEY = "sk-proj-Zq3vT9xLmW2aB7cD4eF6gH8iJ0kLmNoPqRsTuVwXyZ"


@pytest.mark.parametrize("offset", range(-len(KEY) + 1, 1))
def test_redact_then_cut_leaves_no_part_of_a_secret(redactor: Redactor, offset: int) -> None:
    # Wherever the cut falls inside the key, nothing of it survives, head or tail.
    limit = 100
    head_text = "a " * ((limit + offset) // 2) + KEY + " tail"
    tail_text = "start " + KEY + " b" * ((limit + offset) // 2)
    for text, tail in ((head_text, False), (tail_text, True)):
        out = redactor.redact_cut(text, limit, tail=tail)
        assert len(out) <= limit
        assert not any(KEY[i : i + 6] in out for i in range(3, len(KEY) - 6))


# -- attributes from other libraries: keys, depth, size ----------------------------------------


def test_a_secret_in_an_attribute_key_is_redacted_at_every_level(redactor: Redactor) -> None:
    bearer = "Bearer abcdefghijklmnopqrstuvwxyz0123"
    clean = redactor.scrub_attributes({bearer: "v", "x": {bearer: "w"}, "plain": 1})
    assert clean == {"Bearer [REDACTED]": "v", "x": {"Bearer [REDACTED]": "w"}, "plain": 1}


def test_a_value_nested_past_the_walk_limit_is_replaced_whole(redactor: Redactor) -> None:
    nested: dict[str, Any] = {"password": "hunter2hunter2"}
    for _ in range(40):
        nested = {"a": nested}
    clean = redactor.scrub_attributes({"deep": nested, "shallow": {"password": "hunter2"}})
    assert clean is not None
    assert "hunter2" not in repr(clean)
    assert clean["shallow"] == {"password": REDACTED}
    # Walked down to the limit, then the rest is gone, never passed on unread.
    inner: Any = clean["deep"]
    for _ in range(33):
        inner = inner["a"]
    assert inner == REDACTED


def test_redaction_time_is_linear_on_long_name_like_runs(redactor: Redactor) -> None:
    # Each start inside the run used to rescan the rest of it: 40 kB took 2.4 s, 1 MB hours.
    # Not a benchmark: a bound a hundred times above what it takes now (~0.2 s).
    import time

    text = "A_KEY" * 200_000
    started = time.perf_counter()
    assert redactor.redact_text(text) == (text, False)
    assert time.perf_counter() - started < 20
