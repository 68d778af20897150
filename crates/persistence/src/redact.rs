//! The shared redaction policy (decision 9): every store passes text and JSON through it before
//! writing, so no secret reaches the disk whatever field it arrives in.
//!
//! Text goes through two passes.
//!
//! 1. **Key shapes**, found anywhere in a token, also glued to the word before them
//!    (`AWS_KEY_AKIA…`, `token_ghp_…`, `x_sk-ant-…`): AWS access key ids, GitHub, GitLab, Slack
//!    (tokens and webhook URLs), Stripe, Google (API keys, OAuth client secrets and access
//!    tokens), OpenAI, Anthropic, Hugging Face, npm, PyPI, SendGrid, age, DigitalOcean,
//!    Shopify, Twilio, Mailgun, Telegram bot, Atlassian, Grafana, Databricks, Groq and xAI keys,
//!    Stripe webhook secrets, Discord bot tokens, JWTs (header
//!    and payload `{"…` or `{ …`, base64url: `eyJ`, `eyI`, `eyA`), PEM private keys of every
//!    kind and PGP private key blocks (the whole block, to the end of the text when its END
//!    line is missing), PuTTY key files, the private members of a JSON Web Key (`d`, `p`, `q`,
//!    `dp`, `dq`, `qi`, `k` of an object with `kty`; `oth` too in parsed JSON), the user and password of a URL (`scheme://user:password@host` keeps
//!    `scheme://` and `@host`; the password may hold any character but blanks, quotes and
//!    `<>`, `@` included: it runs to the last `@` before the host; `host:8080/path@x` is a port
//!    and a path), and the credential after `Basic` / `Bearer`. The reference is gitleaks'
//!    common rules. Prefixes that are also
//!    ordinary text (`sk-` in `task-…`, `sk_test_` in `task_test_…`, `re_` in `score_…`) count
//!    only at the start of a word: after anything but a letter or digit (`_`, `-`, a space, a
//!    quote), or after an escape (`\n`, `%3D`); `sk-`, `sk_live_`… glued to a word count
//!    also when what follows is random as generated keys are (mixing upper case, lower case
//!    and digits, changing between them often: `risk-AssessmentFramework2024` keeps its
//!    words). `key-` after `-` or `.` is a name's last word (`cache-key-<md5>`). A
//!    `Basic`/`Bearer` credential must look like one (see below).
//! 2. **Values under secret-like names**: `api_key`, `password`, `passwd`, `pwd`, `passphrase`,
//!    `secret`, `token`, `auth`, `authorization`, `auth_header`, `credential(s)`, `creds`,
//!    `private_key`, `secret_key`, `access_key`, `signing_key`, `encryption_key`,
//!    `master_key`, `deploy_key`, `ssh_key`, `account_key` (Azure's `AccountKey=`), `cookie`,
//!    `session`, `session_id`, `session_key`, `bearer`, `jwt`, `otp_seed` (`totp_seed`),
//!    `key_data` (kubeconfig's `client-key-data`), `storepass`, `keypass` (Java's keytool),
//!    `mnemonic`, `seed_phrase`, `recovery_phrase` (a wallet's words), with
//!    any prefix (`DB_PASSWORD`,
//!    `client_secret`, `x-api-key`, `--password`) but nothing after the name (`password_hash`,
//!    `max_tokens` and `author` are not secret names; `primary_key`, `public_key`, `key_id`
//!    are not either). `pass` is one too, but only as a word of its own (`pass`, `DB_PASS`,
//!    `smtpPass`, never `compass` or `bypass`), and in text only with `=`, quoted, in an
//!    element, or before `:` when lower-case or part of a longer key: test runners write
//!    `PASS: test_name` and prose says `pass the tests`. What is replaced depends on how the
//!    value is written:
//!    * quoted (`"…"`, `'…'`, `` `…` ``): everything up to the closing quote, across lines;
//!      a string not closed within 8 KiB runs to the end of the text. Quotes escaped to any
//!      depth delimit strings of that depth (`\"…\"` in JSON text, `\\\"…\\\"` in JSON text
//!      inside JSON text), and the name may be quoted the same way;
//!    * `<name>value</name>` (XML, HTML, also `<ns:name>` and CDATA): the element's text, when
//!      a closing tag ends it (so `Option<Token>` in code is not an element); and
//!      `key="ApiKey" value="…"`: the `value` attribute after a quoted secret name;
//!    * `name=value` (no space around the sign): one token, up to white space, or to a `,` `;`
//!      `&` that another `key=` follows (`password=a&user=b`);
//!    * `name: value`, `name = value` (space around the sign): everything to the end of the line
//!      (`password: correct horse battery staple`), but not past the closing quote when the
//!      whole pair sits in a quoted string (`-H 'Authorization: Basic …'`), nor past a space,
//!      `,`, `;` or `&` that another `key:` / `key=` follows (`password: a b user: c`), nor a
//!      closing bracket or quote the value did not open (`{password: x}`). Cookies are all
//!      secret, so a `cookie` value is not cut at the next `key=`; nor is an
//!      `Authorization:` (or `Proxy-Authorization:`) header's, whatever its scheme (`Digest
//!      username="a", response="…"`, `AWS4-HMAC-SHA256 Credential=…, Signature=…`), with or
//!      without a space after the `:`, and a quoted parameter in it (`response="…"`) does
//!      not end the quoted string the header sits in;
//!    * `name value`, `name is value` or `name to value` (no sign; `<-` is one, as `=`): only
//!      when the one-token value looks like a
//!      credential — at least 6 characters with a letter, and a digit, a symbol (other than
//!      `-` `.` `_` `'` and brackets), an upper-case letter right after a lower-case one, or at
//!      least 24 characters. So `password hunter2` loses `hunter2`, while `password reset
//!      flow`, `token usage`, `secret sauce`, `token 128000` and `credentials task_test` are
//!      prose and stay. A quoted value without a sign counts when it looks like a credential
//!      or holds several words (`password is "correct horse"`).
//!
//!    A value written with a sign or in quotes is a secret whatever it looks like, except
//!    `null`, `true`, `false`, `yes`, `no`, `on` and `off`, and code that computes a value
//!    rather than holds one: a type after `name:` (`password: str)`, [`TYPE_ANNOTATION`]), a
//!    reference alone (`$DB_PASSWORD`, `${{ secrets.TOKEN }}`, `$(gh auth token)`,
//!    [`reference_len`]) and a call without a literal ([`computes_value`]). A password typed
//!    at a prompt a script waits for is one too ([`PROMPTED`]).
//!
//!    **A value on the lines below its name.** When nothing but a line break (or a YAML block
//!    indicator, `|`, `>-`…) follows the sign, the value is on the next line that is not
//!    blank: a quoted value there (pretty-printed JSON) to its closing quote; if that line is
//!    indented more than the name's line, it and every following line that is blank or
//!    indented more (a YAML block scalar, a continued or nested value); otherwise only a
//!    single word alone on its line (`password=` then `Hunter2`), so that a sentence under a
//!    heading (`Password:` then `The reset flow…`) or the next `key:` stays. Line breaks count
//!    as written or escaped inside a string (`\n`, `\\n`), and the lines of a string end with
//!    it.
//!
//! **Command lines and signed URLs.** Some secrets have no name before them: the argument of a
//! tool's password flag (`mysql -pX`, `sshpass -p X`, `redis-cli -a X`, `curl -u user:X`,
//! `htpasswd -b file user X`, Oracle's `sqlplus user/X@db`…), SQL's `IDENTIFIED BY 'X'`, and a
//! URL's `sig=` or
//! `X-Amz-Signature=` (see [`TOOLS`] and [`ARGV_PATTERN`]). A command is read word by word to
//! its end, quotes and line continuations understood (also escaped, in JSON text), and so is a
//! list of arguments, parsed or written as text (`["sshpass", "-p", "X"]`). A here-document
//! given to a program that reads a password on stdin (`sudo -S … <<EOF`, `cat <<EOF | chpasswd`)
//! loses its lines, and a login's call its positional password (`login("bob", "X")`,
//! `getConnection(url, "bob", "X")`, `connect("db.example.com", "bob", "X")`). A property
//! list's `<key>password</key>` names the element after it.
//!
//! **Escapes.** Text holding `%XX` or `\u00XX` escapes or character references (`&lt;`,
//! `&quot;`, `&#112;`, `&#x3D;`) of ASCII is also read with them decoded (three rounds, so
//! `%253D` and `&amp;lt;` decode whole): what that reading finds is replaced in the text as
//! written, escapes and all (`password%3D[REDACTED]`, `{"\u0070assword": "[REDACTED]"}`,
//! `https%3A%2F%2F[REDACTED]%40host`); escapes elsewhere stay as they are.
//!
//! JSON: every string is redacted as text, and so is every object key (a key holding a key
//! shape becomes `[REDACTED]`). Keys without secrets keep their names; a redacted key that
//! would take a name already in its object gets the first free `#2`, `#3`… after it
//! (`[REDACTED]`, `[REDACTED]#2`), so no value is lost.
//! Every value under a secret-named key is replaced whatever its type, except `null` and
//! booleans ([`is_secret_key`]; token *counts* such as `totalTokens` are not secret). A name
//! may also be a value: in an object whose `name` or `key` member (any case) holds a secret
//! name, the `value`, `values`, `val` and `data` members are secrets too (`{"name":
//! "DB_PASSWORD", "value": "…"}` in Kubernetes and GitHub Actions, `{"Key": "password",
//! "Value": "…"}` in AWS tags); in an array, the string or number right after a flag that
//! names a secret is one (`["--password", "…"]`). Only a flag (leading dashes) names the next
//! item: a bare word in a list is data (tags `["auth", "token", "expiry"]`, a search's words).
//! Such a name is one word of at most 64 name characters, so sentences are not names (and
//! `-p`, often a port, is not a secret name). A list of two in a list whose first names a
//! secret (`[["X-Api-Key", "…"]]`, headers as pairs) has its second replaced when it is a
//! number or looks like a credential (pairs of words stay). A member named `key` alone is
//! judged as its parent's name with `_key` after it when its value looks like a credential
//! (`{"openai": {"key": "…"}}` as `openai_key`; `{"cache": {"key": …}}` stays), in parsed
//! JSON only. JSON written as text is read the
//! same way: a quoted flag and a comma, as an item of a list (after `[` or `,`), the first of
//! such a pair, or a quoted secret name as the value of a `name`/`key` member, name the next
//! item (a string or number) or a `value`-like member right before or after it, quoted the same
//! way at any depth of escaping; and in YAML, a `name:`/`key:` entry whose value is a secret's
//! name makes the `value`-like entries of its mapping secrets, before or after it (Kubernetes
//! env lists, also in a JSON string). After a quoted name and `:`, an array or object is the
//! value whole, also pretty-printed over several lines.
//!
//! The policy is idempotent — redacting redacted text or JSON changes nothing — because the
//! stores hash what they write and may pass it through the policy again. Everything runs on the
//! `regex` crate (linear time) and bounded scans, and text with nothing that could start a
//! secret (or an escape) costs one scan.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

#[doc(hidden)]
pub mod corpus;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The names whose values are secrets, `_` standing for an optional separator (`api_key` also
/// matches `apikey`, `api-key`, `API Key`, `apiKey`).
const SECRET_NAMES: [&str; 66] = [
    "api_key",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "auth",
    "authorization",
    "auth_header",
    "credential",
    "credentials",
    "creds",
    "private_key",
    "secret_key",
    "access_key",
    "signing_key",
    "encryption_key",
    "master_key",
    "deploy_key",
    "ssh_key",
    "account_key",
    "cookie",
    "session",
    "session_id",
    "session_key",
    "bearer",
    "jwt",
    "otp_seed",
    "key_data",
    "storepass",
    "keypass",
    "passwords",
    "secrets",
    "api_keys",
    "passphrases",
    "private_keys",
    "pswd",
    "passcode",
    "pword",
    "mnemonic",
    "seed_phrase",
    "recovery_phrase",
    "requirepass",
    "masterauth",
    "sessid",
    "passwort",
    "kennwort",
    "contrasena",
    "contraseña",
    "senha",
    "wachtwoord",
    "haslo",
    "hasło",
    "losenord",
    "lösenord",
    "salasana",
    "mot_de_passe",
    "пароль",
    "密码",
    "パスワード",
    "비밀번호",
    "密碼",
    "口令",
    "şifre",
    "पासवर्ड",
];

/// Short names, secret only as a word of its own: the whole name or after a separator (`pw`,
/// `DB_PW`, `root-pw`, a Wi-Fi network's `psk`), never inside a word or a random string
/// (`…PyPw47=` in base64).
const SHORT_NAMES: [&str; 2] = ["pw", "psk"];
/// A personal access token's short name, in capitals only (`GH_PAT`, `AZURE_DEVOPS_EXT_PAT`):
/// `pat` in lower case is a pattern's name in code.
const UPPER_SHORT_NAME: &str = "PAT";

/// Words that may follow a secret name and keep it one (`API_KEY_PROD`, `GITHUB_TOKEN_RO`,
/// `SECRET_KEY_BASE`, `password_old`), as may a number (`password1`, `TOKEN_2`): which
/// environment, access or version of the secret it is. Any other word after the name makes
/// another name (`token_count`, `password_hash`, `session_timeout`).
const QUALIFIERS: [&str; 33] = [
    "prod",
    "production",
    "dev",
    "development",
    "staging",
    "stage",
    "stg",
    "test",
    "testing",
    "qa",
    "uat",
    "live",
    "sandbox",
    "local",
    "ro",
    "rw",
    "read",
    "write",
    "readonly",
    "admin",
    "root",
    "old",
    "new",
    "prev",
    "previous",
    "current",
    "next",
    "primary",
    "secondary",
    "backup",
    "base",
    "main",
    "default",
];

/// The words before a final `key` that name a key of another kind (a database's, a cache's, a
/// keyboard's, a public one): `primary_key`, `sortKey`, `cache-key`, `ssh_public_key`. Any other
/// word before it names a secret (`OPENAI_KEY`, `licenseKey`, `DD_APP_KEY`).
const NOT_SECRET_KEYS: [&str; 46] = [
    "primary",
    // CloudFormation's `ParameterKey`, whose value is a parameter's name.
    "parameter",
    "foreign",
    "sort",
    "partition",
    "range",
    "hash",
    "cache",
    "idempotency",
    "routing",
    "object",
    "s3",
    "lookup",
    "unique",
    "shard",
    "row",
    "group",
    "dedup",
    "dedupe",
    "message",
    "translation",
    "i18n",
    "map",
    "index",
    "join",
    "cluster",
    "distribution",
    "composite",
    "natural",
    "surrogate",
    "candidate",
    "public",
    "pub",
    "query",
    "data",
    "hot",
    "tab",
    "enter",
    "escape",
    "esc",
    "arrow",
    "shortcut",
    "modifier",
    "ctrl",
    "shift",
    "space",
];

/// A name that is also the end of common words (`compass`, `bypass`): secret only as a whole
/// word, at the start of the name or after a separator (`pass`, `DB_PASS`, `smtp-pass`, and in
/// a JSON key `dbPass`). See [`pass_names_a_value`] for the signs it needs in text.
const WORD_NAME: &str = "pass";

/// Names a JSON key may also start with to be secret (`passwordHash`, `secretValue`).
const SECRET_NAME_PREFIXES: [&str; 2] = ["password", "secret"];

/// Key shapes. Each alternative is a named group; [`judge_shape`] decides what to replace.
const SHAPES_PATTERN: &str = concat!(
    // PEM private keys of every kind and PGP private key blocks, with or without END; PuTTY's
    // key files (`.ppk`), from the first line to the MAC that ends them.
    r"(?P<pem>-----BEGIN[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----(?s:.*?)",
    r"(?:-----END[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----|\z)",
    r"|PuTTY-User-Key-File-[0-9]+:(?s:.*?)(?:Private-MAC:[ \t]*[0-9A-Fa-f]+|\z))",
    // Slack webhooks: the whole URL.
    r"|(?P<webhook>(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}",
    // Discord, Microsoft Teams and Zapier webhooks: the whole URL too.
    r"|(?:https?://)?(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{40,}",
    // A host label is at most 63 characters: an unbounded run here kept every search of a
    // run of letters and digits going to its end (`a_key_shapes_search_stops_near_its_match`).
    r"|(?:https?://)?[A-Za-z0-9-]{1,63}\.webhook\.office\.com/webhookb2/[A-Za-z0-9@-]{30,}/IncomingWebhook/[A-Za-z0-9]{20,}/[A-Za-z0-9-]{20,}",
    r"|(?:https?://)?hooks\.zapier\.com/hooks/catch/[0-9]{3,}/[A-Za-z0-9]{5,})",
    // URL credentials: the user and password between `://` and the last `@` before the host
    // (the password may hold any character but blanks and quotes, `@` too).
    r"|://(?P<userinfo>[^\s/?#@\[\]:]*:[^\s@`'\x22<>]*(?:@[^\s@/?#`'\x22<>]*)*)@",
    // A token alone as the user (`https://<token>@github.com/org/repo`).
    r"|://(?P<usertoken>[A-Za-z0-9_.~-]{20,256})@",
    // Prefixes found anywhere.
    r"|(?P<anywhere>",
    r"sk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_-]{20,}",
    r"|(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}",
    r"|gh[pousr]_[A-Za-z0-9]{30,}",
    r"|github_pat_[A-Za-z0-9_]{20,}",
    r"|gl(?:pat|ptt|dt|rt|cbt|ffct|ft|imt|agent|oas|soat)-[A-Za-z0-9_-]{20,}",
    r"|GR1348941[A-Za-z0-9_-]{20,}",
    r"|xox[abposre]-[A-Za-z0-9-]{10,}",
    r"|xapp-[0-9]-[A-Za-z0-9-]{10,}",
    r"|AIza[A-Za-z0-9_-]{35}",
    r"|GOCSPX-[A-Za-z0-9_-]{20,}",
    r"|ya29\.[A-Za-z0-9_-]{20,}",
    r"|hf_[A-Za-z0-9]{30,}",
    r"|api_org_[A-Za-z0-9]{30,}",
    r"|npm_[A-Za-z0-9]{30,}",
    r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}",
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",
    // JWTs: header and payload are base64url of JSON objects, so both start with `{` and a
    // quote (`eyJ`, `eyI`) or a blank (`eyA`).
    r"|ey[JIA][A-Za-z0-9_-]{10,}\.ey[JIA][A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*",
    r"|AGE-SECRET-KEY-1[A-Z0-9]{58}",
    // DigitalOcean, Shopify, Twilio, Mailgun, Telegram bots, Atlassian, Grafana, Databricks.
    r"|do[opr]_v1_[a-f0-9]{64}",
    r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",
    r"|SK[0-9a-fA-F]{32}",
    r"|key-[a-f0-9]{32}",
    r"|[0-9]{8,10}:A[A-Za-z0-9_-]{34}",
    r"|ATATT3[A-Za-z0-9_=-]{50,}",
    r"|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}",
    r"|dapi[a-f0-9]{32}",
    // Stripe webhook signing secrets, Groq and xAI keys, Discord bot tokens (the user id in
    // base64, a time stamp, an HMAC).
    r"|whsec_[A-Za-z0-9+/=]{24,}",
    r"|gsk_[A-Za-z0-9]{48,}",
    r"|xai-[A-Za-z0-9]{32,}",
    r"|[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}",
    // HashiCorp Vault, Docker Hub, Postman, Linear, Sentry, New Relic, Supabase, PlanetScale,
    // Replicate, Perplexity, Notion, Square, Doppler, Pulumi, Fly.io, Dynatrace, Heroku and
    // Terraform Cloud tokens.
    r"|hv[sb]\.[A-Za-z0-9_-]{24,}",
    r"|dckr_pat_[A-Za-z0-9_-]{20,}",
    r"|PMAK-[a-f0-9]{24}-[a-f0-9]{34}",
    r"|lin_api_[A-Za-z0-9]{40}",
    r"|sntry[su]_[A-Za-z0-9+/=_-]{40,}",
    r"|NRAK-[A-Za-z0-9]{27}",
    r"|sbp_[a-f0-9]{40}",
    r"|pscale_(?:pw|tkn|oauth)_[A-Za-z0-9_.-]{32,}",
    r"|r8_[A-Za-z0-9]{37}",
    r"|pplx-[A-Za-z0-9]{48}",
    r"|ntn_[A-Za-z0-9]{40,}",
    r"|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}",
    r"|dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9._-]{40,}",
    r"|pul-[a-f0-9]{40}",
    r"|fo1_[A-Za-z0-9_-]{43}",
    r"|dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}",
    r"|HRKU-[A-Za-z0-9_-]{58,}",
    r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}",
    // LangSmith, Pinecone, Fireworks, Figma, Grafana Cloud, Neon, Render, Resend, Notion's
    // integration secrets, 1Password service accounts, Mapbox secret tokens, JFrog, Alibaba
    // Cloud, Tencent Cloud, Yandex OAuth, Meta access tokens, AWS session tokens, Braintree,
    // Azure AD client secrets. Those whose prefix ends a word elsewhere (`re_`, `fw_`…) count
    // only at a word's start ([`GLUE_SENSITIVE`]).
    r"|lsv2_(?:pt|sk)_[A-Za-z0-9_]{20,}",
    r"|pcsk_[A-Za-z0-9_]{20,}",
    r"|fw_[A-Za-z0-9]{20,}",
    r"|figd_[A-Za-z0-9_-]{30,}",
    r"|glc_[A-Za-z0-9+/]{32,}={0,2}",
    r"|napi_[A-Za-z0-9]{30,}",
    r"|rnd_[A-Za-z0-9]{20,}",
    r"|re_[A-Za-z0-9]{8}_[A-Za-z0-9]{20,}",
    r"|secret_[A-Za-z0-9]{43}",
    r"|ops_eyJ[A-Za-z0-9+/=_-]{50,}",
    r"|sk\.eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{10,}",
    r"|AKCp[A-Za-z0-9]{60,}",
    r"|LTAI[A-Za-z0-9]{12,}",
    r"|AKID[A-Za-z0-9]{13,}",
    r"|y0_[A-Za-z0-9_-]{40,}",
    r"|EAA[A-Za-z0-9]{80,}",
    r"|(?:FwoGZXIvYXdzE|IQoJb3JpZ2luX2Vj)[A-Za-z0-9+/=]{40,}",
    r"|access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}",
    r"|[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}",
    r")",
    // Prefixes that are also ordinary text: OpenAI (`sk-`, `sk-proj-`…) and Stripe.
    // Bounded, so that looking again inside a rejected one stays linear.
    // A PEM private key in base64 (`-----BEGIN` encoded: Kubernetes' `tls.key`, `…_B64=`),
    // crates.io and NuGet API keys, BIP-32 extended private keys.
    r"|(?P<encoded>LS0tLS1CRUdJTi[A-Za-z0-9+/=]{20,}|cio[A-Za-z0-9]{32}|oy2[a-z0-9]{43}",
    r"|[xtyz]prv[1-9A-HJ-NP-Za-km-z]{100,112})",
    r"|(?P<generic>sk-[A-Za-z0-9_-]{20,300}|[sr]k_(?:live|test|prod)_[A-Za-z0-9]{20,300})",
    // The credential after an HTTP authentication scheme.
    r"|(?i-u:basic|bearer|auth[ \t]+plain)[ \t]+(?P<credential>[A-Za-z0-9._~+/=-]{8,})",
);

/// A login written without a scheme (`admin:S3cret@db.internal:5432`, a Go DSN's
/// `root:pw@tcp(host)`): a user, a password without blanks, quotes or `/`, `@` and the host's
/// first character (`[` of an IPv6 address too); [`bare_userinfo`] judges it. The user is bounded: text of user characters with no `:` (a
/// chain of dotted tokens) would otherwise keep every search running to its end.
///
/// A key shape that [`redact_shapes`] looks for beside [`SHAPES`], not among its alternatives:
/// its counted runs of common characters make a lazy DFA of many states, and in one pattern
/// with the others the states multiply — the union outgrew the DFA's cache on ordinary text,
/// which was then scanned some 25 times slower. Matches compare as alternatives of one
/// pattern would: the leftmost, and at one start this one (no alternative before it in
/// `SHAPES` can start where it does: a private key starts with dashes and a blank, a webhook
/// or a URL's login at a scheme and `/`).
///
/// Whether the user has a letter (a run of digits is a time, not a user) is [`bare_userinfo`]'s
/// to check: in the pattern, a letter somewhere in a counted run doubles the states of every
/// count.
const BARE_LOGIN_PATTERN: &str =
    r"[A-Za-z0-9._~%!$&*+-]{1,129}:[^\s@/`'\x22<>]{1,256}@[A-Za-z0-9\[]";

/// A line of a PostgreSQL password file (`~/.pgpass`, `PGPASSFILE`):
/// `host:port:database:user:password`, a field `*` for any, `\:` and `\\` escaped. The port
/// (a server's: 1000 to 99999, or `*`), a database and a user without `/`, and the password
/// ending its line tell it from other colon-separated text (`grep -n`'s `file:line:text`, log
/// lines); [`pgpass_password`] judges the rest. Looked for beside [`SHAPES`], as [`BARE_LOGIN`] is.
const PGPASS_PATTERN: &str = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|(?:\\:|[A-Za-z0-9._/*-]){1,128}):(?:[1-9][0-9]{3,4}|\*):(?:\\.|[^\s:\\/]){1,64}:(?:\\.|[^\s:\\/]){1,64}:(?:\\.|[^\s:\\\x22'`]){1,256}";

/// A secret-like name, its closing quote if it is quoted (escaped to any depth: `"`, `\"`,
/// `\\\"`…), and what separates it from its value (`>` for an XML element, `<password>`).
fn names_pattern() -> String {
    let names: Vec<String> = SECRET_NAMES.iter().map(|n| n.replace('_', "[ _.-]?")).collect();
    // The word name at the start, after a separator, or capitalised after a lower-case letter
    // or digit (`dbPass`), as [`ends_with_word_name`] judges keys.
    let (first, rest) = WORD_NAME.split_at(1);
    let upper = first.to_ascii_uppercase();
    // A name ending in `key` after another word (`OPENAI_KEY`, `licenseKey`), judged by
    // [`names_another_key`]; then the qualifiers that keep a name secret (`API_KEY_PROD`).
    let qualifiers = QUALIFIERS.join("|");
    let capitalised: Vec<String> =
        QUALIFIERS.iter().map(|q| q[..1].to_ascii_uppercase() + &q[1..]).collect();
    let capitalised = capitalised.join("|");
    let short = SHORT_NAMES.join("|");
    format!(
        r#"(?i-u)(?P<name>[A-Za-z0-9_.-]*?(?:{}|(?:\b|[ _.-]){WORD_NAME}|(?-i:[a-z0-9]{upper}){rest}|(?:\b|[ _.-])(?:{short}|(?-i:{UPPER_SHORT_NAME}))|[A-Za-z0-9][_-]key|(?-i:[a-z0-9]K)ey)(?:[_.-]?[0-9]{{1,4}}|[_.-](?:{qualifiers})|(?-i:{capitalised}))*)(?P<close>\\*["'`]\]?)?(?:[ \t]*\[[A-Za-z0-9 _.,:*/-]*\])?(?P<sep>[ \t]*(?::=|=>|<-|[:=]|：)[ \t]*|[ \t]*,[ \t]*|[ \t]+(?:(?:is|was):?[ \t]+|to[ \t]+)?|>|\()"#,
        names.join("|")
    )
}

/// A `name` or `key` entry whose value may name a secret (`name: DB_PASSWORD`, `"Key":
/// "password"`, quoted to any depth), or a property list's `<key>` element naming one
/// (`<key>password</key>`): where [`sibling_values`] starts. Only the key and the start of its
/// value are matched; [`names_a_secret`] judges the whole value.
fn siblings_pattern() -> String {
    let names: Vec<String> = SECRET_NAMES.iter().map(|n| n.replace('_', "[_.-]?")).collect();
    let names = format!("[A-Za-z0-9_./:-]{{0,64}}?(?:{}|{WORD_NAME})", names.join("|"));
    format!(
        r#"(?i-u)\b(?:name|key|variable|var|parameterkey|parametername|optionname)\\*["']?[ \t]*[:=][ \t]*\\*["']?{names}|(?-i:{PLIST_KEY})[ \t]*{names}"#
    )
}

/// The start tag of a property list's key (Apple's plist: `<key>password</key>` and then the
/// value's element, `<string>…</string>`).
const PLIST_KEY: &str = "<key>";

/// Escapes that write an ASCII character another way: `%3D` (URLs, form bodies), `\u0070`
/// (JSON, JavaScript) and character references (`&lt;`, `&quot;`, `&#61;`, `&#x3D;`: HTML and
/// XML, a page or a config file quoted in a transcript). Text holding them is also matched with
/// them decoded ([`Decoded`]).
const ESCAPES_PATTERN: &str = r"%[0-7][0-9A-Fa-f]|\\[uU]00[0-7][0-9A-Fa-f]|&(?:(?i:lt|gt|quot|apos|amp)|#0{0,4}[0-9]{1,3}|#[xX]0{0,4}[0-9A-Fa-f]{1,2});";
static ESCAPES: LazyLock<Regex> = LazyLock::new(|| compile(ESCAPES_PATTERN));

static SHAPES: LazyLock<Regex> = LazyLock::new(|| compile_with(SHAPES_PATTERN, SHAPES_DFA_CACHE));
static BARE_LOGIN: LazyLock<Regex> = LazyLock::new(|| compile(BARE_LOGIN_PATTERN));
static PGPASS: LazyLock<Regex> = LazyLock::new(|| compile(PGPASS_PATTERN));
static NAMES: LazyLock<Regex> = LazyLock::new(|| compile(&names_pattern()));
static SIBLINGS: LazyLock<Regex> = LazyLock::new(|| compile(&siblings_pattern()));

/// The member every JSON Web Key has, its key type (`"kty": "RSA"`).
const JWK_TYPE: &str = "kty";
/// The members of a JSON Web Key that hold its private part (RFC 7518: `d`, the RSA primes and
/// exponents, a symmetric key's `k`, further primes' `oth`).
const JWK_PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];
/// A private member of a JSON Web Key written as text, quoted at any depth, its value a
/// base64url string (group `jwk`): read in text that holds [`JWK_TYPE`].
static JWK_MEMBER: LazyLock<Regex> = LazyLock::new(|| {
    compile(r#"\\*"(?:d|p|q|dp|dq|qi|k)\\*"[ \t]*:[ \t]*\\*"(?P<jwk>[A-Za-z0-9_-]{16,})"#)
});

/// What a script types after a password prompt it waits for: `expect('Password:')` then
/// `sendline('…')` (pexpect), `expect "Password:"` then `send "…\r"` (Expect), `wait_for`,
/// `read_until`: the string sent (group `sent`) within the next line.
static PROMPTED: LazyLock<Regex> = LazyLock::new(|| {
    compile(concat!(
        r#"(?-u:\b)(?:expect(?:_exact)?|wait_?for|read_?until|waitForPrompt)[ \t(]*\\*['"][^'"\n]*"#,
        r#"(?i:assword|assphrase|passcode)[^'"\n]*\\*['"][^\n]*?(?:\r?\n|\\+n)[ \t]*"#,
        r#"(?:[^\n]*?[^A-Za-z0-9_\n])?(?:sendline|send|send_keys|write|writeln)[ \t(]*"#,
        r#"(?P<sent>\\*'[^'\n]*'|\\*"[^"\n]*")"#,
    ))
});

/// The strings typed at password prompts in `text` ([`PROMPTED`]), without their quotes.
fn prompted_values(text: &str) -> Vec<Range<usize>> {
    if !text.contains("send") && !text.contains("write") {
        return Vec::new();
    }
    let mut found = Vec::new();
    for c in PROMPTED.captures_iter(text) {
        let Some(sent) = c.name("sent") else { continue };
        let inner = unquote(text, sent.range());
        let typed = text[inner.clone()].trim_end_matches("\\r").trim_end_matches("\\n");
        if !typed.is_empty() && typed != REDACTED && !typed.starts_with('$') {
            found.push(inner.start..inner.start + typed.len());
        }
    }
    found
}

/// A YAML list item that is a flag, then the next item (group `item`): a container's `args:` or
/// `command:` (`- --requirepass` then `- S3cret`), each maybe quoted, the lines maybe broken by
/// escapes. [`flag_items`] keeps those whose flag names a secret.
static FLAG_ITEM: LazyLock<Regex> = LazyLock::new(|| {
    compile(concat!(
        r#"(?:(?m:^)|\\+n)[ \t]*-[ \t]+(?:\\*["'])?(?P<flag>--?[A-Za-z][A-Za-z0-9_.-]{0,63})(?:\\*["'])?[ \t]*"#,
        r#"(?:\r?\n|\\+n)[ \t]*-[ \t]+(?P<item>\\*'[^'\n]*'|\\*"[^"\n]*"|[^\s'"\\]+)"#,
    ))
});

/// A Terraform variable named by a secret's name (`variable "db_password" {`), and its
/// `default` on one of the lines after (group `default`).
static TERRAFORM_DEFAULT: LazyLock<Regex> = LazyLock::new(|| {
    compile(concat!(
        r#"(?-u:\b)variable[ \t]+\\*"(?P<name>[A-Za-z0-9_-]{1,64})\\*"[ \t]*\{[^}]*?"#,
        r#"(?:\r?\n|\\+n)[ \t]*default[ \t]*=[ \t]*(?P<default>\\*"[^"\n]*"|[^\s}\\]+)"#,
    ))
});

/// Whether `text` may hold a YAML list item that is a flag ([`FLAG_ITEM`]), at one look.
fn lists_flags(text: &str) -> bool {
    ["- -", "- \"-", "- '-", "- \\"].iter().any(|s| text.contains(s))
}

/// Values that YAML flag lists ([`FLAG_ITEM`]) and Terraform variables ([`TERRAFORM_DEFAULT`])
/// name by a secret's name, without their quotes.
fn flag_items(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    if lists_flags(text) {
        for c in FLAG_ITEM.captures_iter(text) {
            if let (Some(flag), Some(item)) = (c.name("flag"), c.name("item")) {
                if names_a_secret(flag.as_str()) {
                    found.push(unquote(text, item.range()));
                }
            }
        }
    }
    if text.contains("variable") {
        for c in TERRAFORM_DEFAULT.captures_iter(text) {
            if let (Some(name), Some(value)) = (c.name("name"), c.name("default")) {
                if names_a_secret(name.as_str()) {
                    found.push(unquote(text, value.range()));
                }
            }
        }
    }
    found
        .retain(|r| !r.is_empty() && &text[r.clone()] != REDACTED && !is_literal(&text[r.clone()]));
    found
}

/// What follows a C# auto-property's name up to its initial value: `{ get; set; } = `,
/// `{ get; }`, `{ get; init; }`, `{ get; private set; }`.
static AUTO_PROPERTY: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"^\{[ \t]*get;[ \t]*(?:(?:private[ \t]+|protected[ \t]+)?(?:set|init);[ \t]*)?\}[ \t]*=[ \t]*",
    )
});

/// What `echo` or `printf` writes into a file whose name is a secret's (`echo S3cret >
/// /run/secrets/db_password`, `printf '%s' S3cret > ~/.vault_pass.txt`): the text (group
/// `written`), when [`is_secret_file`] judges the file (group `file`).
static WRITTEN: LazyLock<Regex> = LazyLock::new(|| {
    compile(concat!(
        r#"(?:\\[nrt]|(?-u:\b))"#,
        r#"(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+\\*['"]%s\\*['"])?)[ \t]+"#,
        r#"(?P<written>\\*'[^'\n]*'|\\*"[^"\n]*"|[^\s'";|&>]+)[ \t]*>>?[ \t]*(?P<file>[^\s|;&'"]{1,256})"#,
    ))
});

/// Whether a file's name says it holds a secret: its last part, without its extension
/// (`db_password`, `.vault_pass.txt`, `api-token`, `creds.txt`).
fn is_secret_file(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path).trim_start_matches('.');
    let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
    !stem.is_empty() && is_secret_key(stem)
}

/// The texts written into secret-named files in `text` ([`WRITTEN`]), without their quotes.
fn written_secrets(text: &str) -> Vec<Range<usize>> {
    if !text.contains('>') {
        return Vec::new();
    }
    let mut found = Vec::new();
    for c in WRITTEN.captures_iter(text) {
        let (Some(written), Some(file)) = (c.name("written"), c.name("file")) else { continue };
        let inner = unquote(text, written.range());
        if is_secret_file(file.as_str())
            && !inner.is_empty()
            && !text[inner.clone()].starts_with('$')
        {
            found.push(inner);
        }
    }
    found
}

/// The private parts of the JSON Web Keys written in `text` ([`JWK_MEMBER`]), when it holds
/// one's key type.
fn jwk_values(text: &str) -> Vec<Range<usize>> {
    if !text.contains(JWK_TYPE) {
        return Vec::new();
    }
    JWK_MEMBER.captures_iter(text).filter_map(|c| c.name("jwk")).map(|m| m.range()).collect()
}

/// Whether a reading of `text` can find anything: one of the policy's patterns matches.
///
/// Each pattern scans on its own, each with its lazy DFA's cache. One pattern of them all
/// would scan once, but its DFA's states are the product of theirs: on varied text (this
/// repository's sources, a line at a time) it cleared its 2 MB cache hundreds of times and
/// took 20 times as long as the patterns one after another, which each fit theirs
/// (`the_policys_patterns_fit_their_lazy_dfa_caches` in the tests).
fn may_hold_secret(text: &str) -> bool {
    (text.contains(JWK_TYPE) && JWK_MEMBER.is_match(text))
        || (lists_flags(text) && FLAG_ITEM.is_match(text))
        || (text.contains('>') && WRITTEN.is_match(text))
        || SHAPES.is_match(text)
        || NAMES.is_match(text)
        || SIBLINGS.is_match(text)
        || ARGV.is_match(text)
        || (text.contains('@') && BARE_LOGIN.is_match(text))
        || (text.contains(':') && PGPASS.is_match(text))
}

/// The cache of each pattern's lazy DFA, the most it grows to (per thread that scans): four
/// times the `regex` crate's default, so that the states varied text needs fit with room to
/// spare (`the_policys_patterns_fit_their_lazy_dfa_caches`). A DFA whose cache fills is
/// cleared and rebuilt as it goes, and after a few clears gives way to a slower engine.
const DFA_CACHE: usize = 8 << 20;
/// [`DFA_CACHE`] of [`SHAPES`], twice as large: its many vendors' runs of a counted length
/// (`[A-Z0-9]{16}`, `{58}`…), live at once over a run of letters and digits, take the most
/// states, and this repository's own lines alone came near half of 8 MiB.
const SHAPES_DFA_CACHE: usize = 16 << 20;

fn compile(pattern: &str) -> Regex {
    compile_with(pattern, DFA_CACHE)
}

/// [`compile`] with a lazy DFA cache of `cache` bytes.
fn compile_with(pattern: &str, cache: usize) -> Regex {
    regex::RegexBuilder::new(pattern)
        .dfa_size_limit(cache)
        .build()
        .unwrap_or_else(|e| unreachable!("redaction pattern is valid: {e}"))
}

/// How far a quoted value is looked at for its closing quote; a value not closed within it is
/// redacted to the end of the text. Also how far back a line's start is looked for.
const REACH: usize = 8 * 1024;

/// How many times text is read again after a reading replaced something (see [`redact_text`]).
const REREADS: usize = 4;

/// Scrubs secrets out of free text. Text without secrets comes back borrowed and unchanged.
///
/// Redacting twice changes nothing: text in which a reading replaced something is read again
/// until a reading finds nothing more. A replacement can change what a value around it is
/// judged to be: the blank that ended a value may be inside a secret replaced across it, and
/// text whose escapes hid a secret is read both as written and decoded, each reading judging
/// what the other replaced (`"ApiKey" %3D[REDACTED]`).
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let mut clean = redact_pass(text);
    for _ in 0..REREADS {
        let Cow::Owned(once) = &clean else { break };
        match redact_pass(once) {
            Cow::Borrowed(_) => break,
            Cow::Owned(again) => clean = Cow::Owned(again),
        }
    }
    clean
}

/// One reading of [`redact_text`].
fn redact_pass(text: &str) -> Cow<'_, str> {
    if !may_hold_secret(text) && !ESCAPES.is_match(text) {
        return Cow::Borrowed(text);
    }
    let hidden = match escaped_secrets(text) {
        // Only an escape may have let it through.
        Some(hidden) if hidden.is_empty() && !may_hold_secret(text) => {
            return Cow::Borrowed(text);
        }
        Some(hidden) => hidden,
        None => Vec::new(),
    };
    // Values no name beside them marks: named by a sibling, or a command line's argument.
    let mut apart = sibling_values(text);
    apart.extend(argv_values(text));
    apart.extend(jwk_values(text));
    apart.extend(prompted_values(text));
    apart.extend(flag_items(text));
    apart.extend(written_secrets(text));
    if hidden.is_empty() && apart.is_empty() {
        let (shaped, _) = redact_shapes(text);
        return match redact_names(&shaped).0 {
            Cow::Borrowed(_) => shaped,
            Cow::Owned(clean) => Cow::Owned(clean),
        };
    }
    // Escapes hid a secret, or a value is named by a sibling (which may come before its
    // name): replace what either reading finds, in the text as written.
    let mut ranges = secret_ranges(text);
    ranges.extend(apart);
    ranges.extend(hidden);
    ranges.sort_unstable_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut rewriter = Rewriter::new(text);
    let mut pending: Option<Range<usize>> = None;
    for range in ranges {
        match &mut pending {
            Some(p) if range.start < p.end => p.end = p.end.max(range.end),
            _ => {
                if let Some(p) = pending.replace(range) {
                    rewriter.replace(p);
                }
            }
        }
    }
    if let Some(p) = pending {
        rewriter.replace(p);
    }
    rewriter.finish().0
}

/// The secrets that the reading of `text` with its escapes decoded finds, as ranges of `text`
/// (they may overlap what the text as written shows); `None` when nothing in it decodes.
fn escaped_secrets(text: &str) -> Option<Vec<Range<usize>>> {
    let decoded = Decoded::of(text)?;
    if !may_hold_secret(&decoded.text) {
        return Some(Vec::new());
    }
    let mut ranges = secret_ranges(&decoded.text);
    ranges.extend(sibling_values(&decoded.text));
    ranges.extend(argv_values(&decoded.text));
    ranges.extend(jwk_values(&decoded.text));
    ranges.extend(prompted_values(&decoded.text));
    ranges.extend(flag_items(&decoded.text));
    ranges.extend(written_secrets(&decoded.text));
    Some(ranges.into_iter().map(|r| decoded.source(r.start)..decoded.source(r.end)).collect())
}

/// Text read with the escapes of [`ESCAPES_PATTERN`] that write a printable ASCII character, a
/// tab or a line break decoded, again while that makes new ones (`%253D` is `%3D` is `=`, up
/// to three rounds).
struct Decoded {
    text: String,
    /// The escapes each round decoded, the last round last.
    rounds: Vec<Vec<Escape>>,
}

/// An escape decoded: the offset of its character in the round's output, and where the escape
/// is in the round's input.
#[derive(Debug, Clone, Copy)]
struct Escape {
    out: usize,
    source: usize,
    len: usize,
}

impl Decoded {
    /// `text` decoded, or `None` when nothing in it decodes.
    fn of(text: &str) -> Option<Self> {
        let (mut decoded, escapes, mut again) = decode_once(text)?;
        let mut rounds = vec![escapes];
        while again && rounds.len() < 3 {
            let Some((next, escapes, more)) = decode_once(&decoded) else { break };
            (decoded, again) = (next, more);
            rounds.push(escapes);
        }
        Some(Self { text: decoded, rounds })
    }

    /// The offset in the text as written of the offset `at` of the decoded text (an escape's
    /// character maps to the whole escape).
    fn source(&self, mut at: usize) -> usize {
        for escapes in self.rounds.iter().rev() {
            let before = escapes.partition_point(|e| e.out < at);
            if let Some(e) = before.checked_sub(1).map(|k| escapes[k]) {
                at = e.source + e.len + (at - e.out - 1);
            }
        }
        at
    }
}

/// The character an escape of [`ESCAPES_PATTERN`] writes, when it is one byte.
fn escaped_byte(escape: &str) -> Option<u8> {
    let Some(reference) = escape.strip_prefix('&') else {
        // `%XX` or `\u00XX`: the last two characters are the hexadecimal code.
        return u8::from_str_radix(&escape[escape.len() - 2..], 16).ok();
    };
    let reference = reference.trim_end_matches(';');
    let code = match reference.strip_prefix('#') {
        Some(hex) if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16).ok()?,
        Some(decimal) => decimal.parse().ok()?,
        None => match reference.to_ascii_lowercase().as_str() {
            "lt" => u32::from(b'<'),
            "gt" => u32::from(b'>'),
            "quot" => u32::from(b'"'),
            "apos" => u32::from(b'\''),
            _ => u32::from(b'&'),
        },
    };
    u8::try_from(code).ok()
}

/// One round of [`Decoded::of`]: the text, its escapes, and whether it decoded a `%`, `\` or
/// `&` (which may start an escape of the next round). `None` when nothing decodes.
fn decode_once(text: &str) -> Option<(String, Vec<Escape>, bool)> {
    let b = text.as_bytes();
    let (mut out, mut escapes, mut again) = (Vec::new(), Vec::new(), false);
    let mut copied = 0;
    for found in ESCAPES.find_iter(text) {
        let Some(c) = escaped_byte(found.as_str())
            .filter(|c| matches!(c, b' '..=b'~' | b'\t' | b'\n' | b'\r'))
        else {
            continue;
        };
        out.extend_from_slice(&b[copied..found.start()]);
        escapes.push(Escape { out: out.len(), source: found.start(), len: found.len() });
        out.push(c);
        again |= matches!(c, b'%' | b'\\' | b'&');
        copied = found.end();
    }
    if escapes.is_empty() {
        return None;
    }
    out.extend_from_slice(&b[copied..]);
    // Only ASCII replaced ASCII, so the bytes are still UTF-8.
    String::from_utf8(out).ok().map(|out| (out, escapes, again))
}

/// Every range of `text` that the two passes replace, in `text`'s offsets (a value the second
/// pass finds around a shape the first replaced covers that shape whole).
fn secret_ranges(text: &str) -> Vec<Range<usize>> {
    let (shaped, shapes) = redact_shapes(text);
    let (_, values) = redact_names(&shaped);
    let back = |at: usize, end: bool| {
        // The last replacement that starts at or before `at` in the shaped text.
        let k = shapes.partition_point(|e| e.out_start <= at);
        let Some(e) = k.checked_sub(1).map(|k| &shapes[k]) else { return at };
        let out_end = e.out_start + REDACTED.len();
        if at >= out_end {
            e.source.end + (at - out_end)
        } else if end && at > e.out_start {
            e.source.end
        } else {
            e.source.start
        }
    };
    let mut ranges: Vec<Range<usize>> = shapes.iter().map(|e| e.source.clone()).collect();
    ranges.extend(values.iter().map(|e| back(e.source.start, false)..back(e.source.end, true)));
    ranges
}

/// Scrubs secrets out of a JSON value, in place: strings, object keys, and every value under a
/// secret-named key.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = redact_text(s) {
                *s = clean;
            }
        }
        Value::Array(items) => redact_array(items),
        Value::Object(map) => redact_object(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The members of an object that may name the value of a sibling (`{"name": "DB_PASSWORD",
/// "value": "…"}` in Kubernetes and GitHub Actions, `{"Key": "password", "Value": "…"}` in
/// AWS tags, `{"ParameterKey": "DbPassword", "ParameterValue": "…"}` in CloudFormation,
/// `{"OptionName": …, "Value": …}` in Elastic Beanstalk, `{"variable": …, "value": …}`), and
/// the siblings they name; matched whatever their case.
const PAIR_NAMES: [&str; 7] =
    ["name", "key", "variable", "var", "ParameterKey", "ParameterName", "OptionName"];
const PAIR_VALUES: [&str; 5] = ["value", "values", "val", "data", "ParameterValue"];

/// Whether a string written where a name goes (a pair's `name`, an element of an array)
/// names a secret: a single word of name characters, 64 bytes at most, that [`is_secret_key`]
/// judges secret, after any leading dashes (`--password`, `-api-key`). Sentences and other
/// text are not names, so `["reset the token", "next"]` keeps its items.
fn names_a_secret(text: &str) -> bool {
    let name = text.trim_start_matches('-');
    !name.is_empty()
        && text.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':'))
        && is_secret_key(name)
}

/// Whether a JSON string names a secret as written or as redacted (so that redacting again
/// finds no name the first redaction did not).
fn string_names_a_secret(value: &Value) -> bool {
    value.as_str().is_some_and(|s| names_a_secret(s) || names_a_secret(&redact_text(s)))
}

/// An array: every item redacted, and the string or number right after a flag that names a
/// secret (`["--password", "hunter2"]`) replaced as a secret key's value would be. Only a flag
/// (an item with leading dashes) names the next item: a bare word is data in a list of words
/// (`["auth", "token", "expiry"]` as tags, a search's words), not a name. An item that is a
/// pair, a list of two whose first names a secret (`[["X-Api-Key", "…"], …]`, headers or a
/// map's entries as lists), has its second replaced too.
fn redact_array(items: &mut [Value]) {
    let mut after_name = false;
    for item in items.iter_mut() {
        let names =
            item.as_str().is_some_and(|s| s.starts_with('-')) && string_names_a_secret(item);
        match item {
            Value::String(s) if after_name && s != REDACTED => *s = REDACTED.to_owned(),
            Value::Number(_) if after_name => *item = Value::String(REDACTED.to_owned()),
            // A pair in a list (`[["X-Api-Key", "…"]]`: headers, a map's entries).
            Value::Array(pair) if is_secret_pair(pair) => {
                redact_json(&mut pair[0]);
                pair[1] = Value::String(REDACTED.to_owned());
            }
            _ => redact_json(item),
        }
        after_name = names;
    }
    redact_argv_items(items);
}

/// A command line written as a list (`["mysql", "-pS3cret"]`, `["sshpass", "-p", "…"]`, a
/// container's `command`): after an item that names a [`Tool`], the items are its arguments,
/// read by [`secret_args`]; a secret number becomes `[REDACTED]`.
fn redact_argv_items(items: &mut [Value]) {
    let tools: Vec<(usize, ToolKind)> = items
        .iter()
        .enumerate()
        .filter_map(|(k, item)| Some((k, Tool::named(item.as_str()?)?)))
        .collect();
    for (k, kind) in tools {
        let texts: Vec<String> = items[k + 1..]
            .iter()
            .take(MAX_ARGS)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            })
            .collect();
        let args: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (at, secret) in secret_args(kind, &args) {
            match &mut items[k + 1 + at] {
                Value::String(text) => text.replace_range(secret, REDACTED),
                number => *number = Value::String(REDACTED.to_owned()),
            }
        }
    }
}

/// Whether a list is a pair whose first names a secret and whose second is one: a number, or
/// a string that looks like a credential ([`looks_like_credential`]), so that pairs of words
/// (`["Authorization", "Accept"]`, `["token", "refresh"]`) stay.
fn is_secret_pair(pair: &[Value]) -> bool {
    pair.len() == 2
        && string_names_a_secret(&pair[0])
        && match &pair[1] {
            Value::Number(_) => true,
            Value::String(s) => s != REDACTED && looks_like_credential(s),
            _ => false,
        }
}

/// Whether an object holds a name-like member ([`PAIR_NAMES`]) whose string names a secret:
/// then its value-like members ([`PAIR_VALUES`]) are secrets.
fn names_its_value(map: &Map<String, Value>) -> bool {
    map.iter().any(|(k, v)| {
        PAIR_NAMES.iter().any(|n| k.eq_ignore_ascii_case(n)) && string_names_a_secret(v)
    })
}

fn is_pair_value(key: &str) -> bool {
    PAIR_VALUES.iter().any(|n| key.eq_ignore_ascii_case(n))
}

/// A redacted copy of a JSON value.
pub fn redacted_json(value: &Value) -> Value {
    let mut copy = value.clone();
    redact_json(&mut copy);
    copy
}

/// Whether a JSON key names a secret: `api_key`, `apiKey`, `password`, `clientSecret`,
/// `accessToken`, `Authorization`, `private_key`, `pwd`, `sessionId`… but not a count such as
/// `totalTokens` or `max_tokens`. Case and separators do not matter; the name must end the key
/// (`password_hash` is not secret), except that a key starting with `password` or `secret` is.
pub fn is_secret_key(key: &str) -> bool {
    // The key's first ASCII letters and digits, lower-cased, without allocating (it runs for
    // every key of every JSON object).
    const KEEP: usize = 16;
    let mut head = [0u8; KEEP];
    let mut len = 0;
    for b in key.bytes().filter(u8::is_ascii_alphanumeric).take(KEEP) {
        head[len] = b.to_ascii_lowercase();
        len += 1;
    }
    let head = &head[..len];
    (SECRET_NAME_PREFIXES.iter().any(|p| head.starts_with(p.as_bytes()))
        && !METADATA_WORDS.iter().any(|w| last_word(key).eq_ignore_ascii_case(w)))
        || ends_with_secret_name(without_qualifiers(key))
}

/// Last words of a key that starts with a secret's name (`password_min_length`,
/// `secretsFound`, `passwordChangedAt`, `secret_path`, `secretName`) that say something about
/// the secret, not what it is: the value is no secret, as in text, where only a name that ends
/// with a secret's counts. `passwordHash` and `secretValue` stay secret.
const METADATA_WORDS: [&str; 29] = [
    "length", "len", "min", "max", "count", "found", "at", "time", "date", "updated", "created",
    "changed", "version", "path", "file", "dir", "policy", "enabled", "required", "expiry",
    "expires", "age", "rotation", "strength", "type", "kind", "format", "name", "ref",
];

/// The last word of a name: after its last `_`, `-`, `.` or blank, or where its last
/// upper-case letter follows a lower-case one (`secretsFound`: `Found`).
fn last_word(name: &str) -> &str {
    let b = name.as_bytes();
    let start = (1..b.len())
        .rev()
        .find(|&i| {
            matches!(b[i - 1], b'_' | b'-' | b'.' | b' ')
                || (b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase())
        })
        .unwrap_or(0);
    &name[start..]
}

/// Whether a name, its qualifiers taken off ([`without_qualifiers`]), ends with a secret name:
/// a listed one ([`ends_with_listed_name`]), or `key` after a word that does not name another
/// kind of key ([`names_another_key`]).
fn ends_with_secret_name(name: &str) -> bool {
    ends_with_listed_name(name) || names_another_key(name) == Some(false)
}

/// Whether `name` ends with one of [`SECRET_NAMES`] (separators and case aside), or with
/// [`WORD_NAME`] or one of [`SHORT_NAMES`] as a word of its own.
fn ends_with_listed_name(name: &str) -> bool {
    const KEEP: usize = 16;
    let mut tail = [0u8; KEEP];
    let mut len = 0;
    for b in name.bytes().rev().filter(u8::is_ascii_alphanumeric).take(KEEP) {
        len += 1;
        tail[KEEP - len] = b.to_ascii_lowercase();
    }
    let tail = &tail[KEEP - len..];
    static NAMES: LazyLock<Vec<Vec<u8>>> =
        LazyLock::new(|| SECRET_NAMES.iter().map(|n| n.replace('_', "").into_bytes()).collect());
    NAMES.iter().any(|n| tail.ends_with(n))
        || ends_with_word_name(name)
        || ends_with_short_name(name)
        || (!name.is_ascii() && {
            // Names in other scripts (`пароль`, `contraseña`), whole words of their own.
            let lower = name.to_lowercase();
            SECRET_NAMES.iter().filter(|n| !n.is_ascii()).any(|n| lower.ends_with(n))
        })
}

/// Whether a secret name found in text is one to read the value of: not one that names another
/// kind of key (`primary_key: id`), and, without a sign (`name value`), only a listed name as
/// written: a name with qualifiers (`password_old`) or one ending in `key` after another word
/// (`stripe_key`) needs a sign or quotes to name a value.
fn names_a_value_in_text(name: &str, sep: Sep) -> bool {
    let base = without_qualifiers(name);
    let listed = ends_with_listed_name(base);
    if !listed && names_another_key(base) != Some(false) {
        return false;
    }
    sep != Sep::Bare || (base.len() == name.len() && listed)
}

/// Whether `name` is one of [`SHORT_NAMES`] (or [`UPPER_SHORT_NAME`], in capitals) or ends with
/// it after a character other than a letter or digit (`DB_PW`, `root-pw`, `GH_PAT`).
fn ends_with_short_name(name: &str) -> bool {
    let b = name.as_bytes();
    let ends = |short: &str, case: bool| {
        let s = short.as_bytes();
        b.len() >= s.len()
            && if case {
                &b[b.len() - s.len()..] == s
            } else {
                b[b.len() - s.len()..].eq_ignore_ascii_case(s)
            }
            && (b.len() == s.len() || !b[b.len() - s.len() - 1].is_ascii_alphanumeric())
    };
    SHORT_NAMES.iter().any(|s| ends(s, false)) || ends(UPPER_SHORT_NAME, true)
}

/// For a name ending in `key` after another word (`OPENAI_KEY`, `sortKey`, `app-key`; not a
/// file's `server.key`, which error lines name): whether
/// that word names another kind of key ([`NOT_SECRET_KEYS`]). `None` for any other name.
fn names_another_key(name: &str) -> Option<bool> {
    let b = name.as_bytes();
    let at = b.len().checked_sub(3).filter(|&at| b[at..].eq_ignore_ascii_case(b"key"))?;
    let before = at.checked_sub(1).map(|i| b[i])?;
    let end = match before {
        b'_' | b'-' => at - 1,
        c if b[at] == b'K' && (c.is_ascii_lowercase() || c.is_ascii_digit()) => at,
        _ => return None,
    };
    // The word before: back to a separator, or to its capital in camel case.
    let start = b[..end]
        .iter()
        .rposition(|c| !c.is_ascii_alphanumeric() || c.is_ascii_uppercase() && b[at] == b'K')
        .map_or(0, |i| if b[i].is_ascii_alphanumeric() { i } else { i + 1 });
    let word = &name[start..end];
    if word.is_empty() {
        return None;
    }
    Some(NOT_SECRET_KEYS.iter().any(|w| word.eq_ignore_ascii_case(w)))
}

/// `name` without the qualifiers and numbers after its last secret word
/// ([`QUALIFIERS`]: `API_KEY_PROD` → `API_KEY`, `password1` → `password`, `apiKeyProd` →
/// `apiKey`).
fn without_qualifiers(name: &str) -> &str {
    let mut name = name;
    loop {
        let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
        let trimmed = &name[..name.len() - digits];
        let trimmed = if digits > 0 {
            trimmed.strip_suffix(['_', '.', '-']).unwrap_or(trimmed)
        } else {
            trimmed
        };
        let word = trimmed.bytes().rev().take_while(u8::is_ascii_alphabetic).count();
        let run = &trimmed.as_bytes()[trimmed.len() - word..];
        // In camel case the last word starts at its capital (`apiKeyProd` → `Prod`).
        let mixed = run.iter().any(u8::is_ascii_lowercase);
        let word = match run.iter().rposition(u8::is_ascii_uppercase) {
            Some(capital) if capital > 0 && mixed => word - capital,
            _ => word,
        };
        let (rest, last) = trimmed.split_at(trimmed.len() - word);
        let camel = last.len() > 1
            && last.as_bytes()[0].is_ascii_uppercase()
            && last.bytes().skip(1).all(|c| c.is_ascii_lowercase());
        let qualifier = QUALIFIERS.iter().any(|q| last.eq_ignore_ascii_case(q));
        let next = match rest.strip_suffix(['_', '.', '-']) {
            Some(before) if qualifier && !before.is_empty() => before,
            None if qualifier && camel && !rest.is_empty() => rest,
            // A camel-case qualifier takes its capital with it (`apiKeyProd`).
            _ if qualifier && camel && !rest.is_empty() => rest,
            _ => trimmed,
        };
        let next = if next.len() == name.len() { return name } else { next };
        if next.is_empty() {
            return name;
        }
        name = next;
    }
}

/// Whether `key` ends with [`WORD_NAME`] as a word of its own: the whole key, after a
/// character other than a letter or digit (`DB_PASS`), or capitalised after a lower-case
/// letter or digit (`dbPass`), but not inside a word (`compass`, `bypass`, `DBPASS`).
fn ends_with_word_name(key: &str) -> bool {
    let k = key.as_bytes();
    let Some(at) = k.len().checked_sub(WORD_NAME.len()) else { return false };
    if !k[at..].eq_ignore_ascii_case(WORD_NAME.as_bytes()) {
        return false;
    }
    match at.checked_sub(1).map(|i| k[i]) {
        None => true,
        Some(before) if !before.is_ascii_alphanumeric() => true,
        Some(before) => {
            k[at].is_ascii_uppercase() && (before.is_ascii_lowercase() || before.is_ascii_digit())
        }
    }
}

/// Whether a [`WORD_NAME`] found in text names the value after it: with `=` (`pass=…`,
/// `DB_PASS = …`), quoted (`"pass": …`), in an element (`<pass>`), or before `:` when it is
/// lower-case (`pass: …` in YAML) or part of a longer key (`smtpPass:`, `SMTP_PASS:`). Test
/// runners write `PASS: test_name`, `--- PASS: TestName` and `Pass: 12`, and prose says `pass
/// the tests`: without a sign, or alone and capitalised before an unquoted `:`, it is not a
/// name.
fn pass_names_a_value(name: &str, pair: &str, parsed: NamePair) -> bool {
    let at = name.len() - WORD_NAME.len();
    let word = &name.as_bytes()[at..];
    let compound = at
        .checked_sub(1)
        .is_some_and(|i| matches!(name.as_bytes()[i], b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'));
    let colon = !pair[name.len()..].contains('=') && parsed.sep != Sep::Element;
    match parsed.sep {
        Sep::Bare => false,
        _ if parsed.quoted || !colon => true,
        _ => word == WORD_NAME.as_bytes() || compound,
    }
}

fn redact_object(map: &mut Map<String, Value>) {
    redact_object_under(map, None);
}

/// Whether a member of an object that is `parent`'s value is a secret named only by its parent
/// (`{"openai": {"key": "…"}}`): the member is named `key` alone, `PARENT_key` would be a secret's
/// name ([`is_secret_key`]: not `{"primary": {"key": …}}` nor `{"cache": {"key": …}}`; a parent
/// that ends in `key` itself, `{"sortKey": {"key": …}}`, is judged as it is), and
/// its value looks like a credential ([`looks_like_credential`]), so that a translation's or a
/// setting's `key` (`"theme"`) stays. An object in an array has no parent: AWS tags'
/// `[{"Key": …, "Value": …}]` keep theirs.
fn named_by_parent(parent: Option<&str>, key: &str, value: &Value) -> bool {
    key.eq_ignore_ascii_case("key")
        && value.as_str().is_some_and(looks_like_credential)
        && parent.is_some_and(|p| {
            // A parent that is a key's name itself (`sortKey`) is judged as it is.
            let named_key =
                p.len() >= 3 && p.as_bytes()[p.len() - 3..].eq_ignore_ascii_case(b"key");
            p.len() <= 64
                && is_secret_key(&if named_key { p.to_owned() } else { format!("{p}_key") })
        })
}

/// Whether an object's member is the environment's working directory ([`is_working_directory`]).
fn is_working_directory_entry(key: &str, value: &Value) -> bool {
    value.as_str().is_some_and(|v| is_working_directory(key, v))
}

/// [`redact_object`] of the object that is `parent`'s value (None: the top, or an array's item).
fn redact_object_under(map: &mut Map<String, Value>, parent: Option<&str>) {
    let named = names_its_value(map);
    // A JSON Web Key's private members.
    let jwk = map.get(JWK_TYPE).is_some_and(Value::is_string);
    let private = |key: &str| jwk && JWK_PRIVATE.contains(&key);
    if map.keys().all(|k| matches!(redact_text(k), Cow::Borrowed(_))) {
        for (key, value) in map.iter_mut() {
            let secret = (is_secret_key(key) && !is_working_directory_entry(key, value))
                || (named && is_pair_value(key))
                || private(key)
                || named_by_parent(parent, key, value);
            redact_entry(secret, key, value);
        }
        return;
    }
    let renamed: Vec<Option<String>> = map
        .keys()
        .map(|k| match redact_text(k) {
            Cow::Owned(clean) => Some(clean),
            Cow::Borrowed(_) => None,
        })
        .collect();
    // Keys without secrets keep their names; a redacted key takes the first free name of
    // `[REDACTED]`, `[REDACTED]#2`, `[REDACTED]#3`… so that no value is lost.
    let mut taken: HashSet<String> =
        map.keys().zip(&renamed).filter(|(_, r)| r.is_none()).map(|(k, _)| k.clone()).collect();
    let old = std::mem::take(map);
    for ((key, mut value), clean) in old.into_iter().zip(renamed) {
        let secret = (is_secret_key(&key) && !is_working_directory_entry(&key, &value))
            || clean.as_deref().is_some_and(is_secret_key)
            || (named && is_pair_value(&key))
            || private(&key)
            || named_by_parent(parent, &key, &value);
        redact_entry(secret, clean.as_deref().unwrap_or(&key), &mut value);
        let name = match clean {
            None => key,
            Some(clean) => {
                let mut name = clean.clone();
                let mut n = 2;
                while taken.contains(&name) {
                    name = format!("{clean}#{n}");
                    n += 1;
                }
                taken.insert(name.clone());
                name
            }
        };
        map.insert(name, value);
    }
}

/// Redacts the value of the object entry named `key`. Under a secret name every string and
/// number is replaced, at any depth, but objects and arrays keep their shape (and their keys,
/// judged as any key is): an agent named `auth` keeps an output that still reads back as one.
fn redact_entry(secret_name: bool, key: &str, value: &mut Value) {
    if !secret_name {
        return match value {
            Value::Object(map) => redact_object_under(map, Some(key)),
            _ => redact_json(value),
        };
    }
    match value {
        Value::String(s) if s == REDACTED => {}
        Value::String(_) | Value::Number(_) => *value = Value::String(REDACTED.to_owned()),
        Value::Array(items) => items.iter_mut().for_each(|item| redact_entry(true, key, item)),
        Value::Object(map) => {
            redact_object(map);
            map.values_mut().for_each(|item| redact_entry(true, key, item));
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Builds the output of a pass: the text with some ranges replaced by [`REDACTED`].
struct Rewriter<'a> {
    text: &'a str,
    out: String,
    copied: usize,
    edits: Vec<Edit>,
}

/// One range a [`Rewriter`] replaced.
#[derive(Debug, Clone)]
struct Edit {
    /// The range of the input.
    source: Range<usize>,
    /// Where its [`REDACTED`] starts in the output.
    out_start: usize,
}

impl<'a> Rewriter<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, out: String::new(), copied: 0, edits: Vec::new() }
    }

    /// Replaces `range` (at or after everything replaced so far), unless it is already
    /// redacted: [`REDACTED`], or markers with nothing but punctuation between them (what
    /// two replacements leave of a quote or sign that stood between them).
    fn replace(&mut self, range: Range<usize>) {
        if already_redacted(&self.text[range.clone()]) {
            return;
        }
        self.out.push_str(&self.text[self.copied..range.start]);
        self.edits.push(Edit { source: range.clone(), out_start: self.out.len() });
        self.out.push_str(REDACTED);
        self.copied = range.end;
    }

    /// [`replace`](Self::replace), or, for a range that starts inside the last one replaced,
    /// that replacement extended to cover it.
    fn replace_or_extend(&mut self, range: Range<usize>) {
        match self.edits.last_mut() {
            Some(last) if range.start < last.source.end => {
                if range.end > last.source.end {
                    last.source.end = range.end;
                    self.copied = range.end;
                }
            }
            _ => self.replace(range),
        }
    }

    /// The output, and what was replaced.
    fn finish(mut self) -> (Cow<'a, str>, Vec<Edit>) {
        if self.edits.is_empty() {
            return (Cow::Borrowed(self.text), self.edits);
        }
        self.out.push_str(&self.text[self.copied..]);
        (Cow::Owned(self.out), self.edits)
    }
}

/// Whether `text` holds a [`REDACTED`] and no letter or digit outside one.
fn already_redacted(text: &str) -> bool {
    text.contains(REDACTED)
        && !text.split(REDACTED).any(|rest| rest.chars().any(char::is_alphanumeric))
}

/// How far before the end of a shape another one that runs past it is looked for: longer
/// than any shape's prefix.
const GLUED_REACH: usize = 64;

/// Pass 1: key shapes.
fn redact_shapes(text: &str) -> (Cow<'_, str>, Vec<Edit>) {
    type Judge = fn(&str, Range<usize>) -> Option<Range<usize>>;
    let mut at = 0;
    // At one start every pattern's match is judged (a key shape may be a `.pgpass` line's
    // host), but no login starts inside a `.pgpass` line read as one (its password may hold
    // `@`, and its fields read as a user and a password).
    let mut patterns: [(Leftmost<'_>, Judge); 3] = [
        (Leftmost::new(&PGPASS, text, text.contains(':')), pgpass_password),
        (Leftmost::new(&BARE_LOGIN, text, text.contains('@')), bare_userinfo),
        (Leftmost::new(&SHAPES, text, true), judge_shape),
    ];
    // What each reading accepted, replaced at the end in order: a match may accept less than
    // it spans (a `.pgpass` line's password), and a later match inside it more.
    let mut accepted: Vec<Range<usize>> = Vec::new();
    // The end of the last `.pgpass` line read as one: no login starts inside it.
    let mut pgpass_line_end = 0;
    while at < text.len() {
        let found: Vec<(usize, Range<usize>, Judge)> = patterns
            .iter_mut()
            .enumerate()
            .filter_map(|(k, (pattern, judge))| pattern.at(at).map(|m| (k, m, *judge)))
            .collect();
        let Some(start) = found.iter().map(|(_, m, _)| m.start).min() else { break };
        // Not a secret here: look again from the next character, so a shape that starts
        // inside what was looked at is still found.
        let mut next = next_char(text, start);
        for (k, m, judge) in found.into_iter().filter(|(_, m, _)| m.start == start) {
            if k == 1 && start < pgpass_line_end {
                continue;
            }
            let end = m.end;
            let Some(range) = judge(text, m) else { continue };
            if k == 0 {
                pgpass_line_end = end;
            }
            if range.start == start {
                // What starts inside the secret is replaced with it, except another shape
                // that runs past its end (a key glued to another took its prefix): look again
                // from a little before the end, so each byte is looked at a bounded number of
                // times.
                let mut back = range.end.saturating_sub(GLUED_REACH);
                while !text.is_char_boundary(back) {
                    back -= 1;
                }
                next = next.max(back);
            }
            accepted.push(range);
        }
        at = next;
    }
    accepted.sort_unstable_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut rewriter = Rewriter::new(text);
    let mut pending: Option<Range<usize>> = None;
    for range in accepted {
        match &mut pending {
            Some(p) if range.start <= p.end => p.end = p.end.max(range.end),
            _ => {
                if let Some(p) = pending.replace(range) {
                    rewriter.replace(p);
                }
            }
        }
    }
    if let Some(p) = pending {
        rewriter.replace(p);
    }
    rewriter.finish()
}

/// The leftmost match of a pattern at or after a position that only grows ([`redact_shapes`]'s
/// `at`). It is looked for again only once the position has passed the match found: until then
/// it stays the leftmost (a search from further on sees the same text, and no match starts
/// between), and after a search found none, none is left. Each search reads from the position
/// to the match's end, or to the end of the text; without this, every step of a text dense in
/// rejected matches of one pattern (`12:30@` repeated) read the rest of the text for the other.
struct Leftmost<'t> {
    regex: &'static Regex,
    text: &'t str,
    next: Option<Range<usize>>,
    done: bool,
}

impl<'t> Leftmost<'t> {
    /// `looked_for`: whether the text can hold a match at all.
    fn new(regex: &'static Regex, text: &'t str, looked_for: bool) -> Self {
        Self { regex, text, next: None, done: !looked_for }
    }

    fn at(&mut self, at: usize) -> Option<Range<usize>> {
        if !self.done && self.next.as_ref().is_none_or(|m| m.start < at) {
            self.next = self.regex.find_at(self.text, at).map(|m| m.range());
            self.done = self.next.is_none();
            #[cfg(test)]
            tests::SHAPE_SCAN.with(|scanned| {
                let end = self.next.as_ref().map_or(self.text.len(), |m| m.end);
                scanned.set(scanned.get() + (end - at));
            });
        }
        self.next.clone()
    }
}

/// What part of a shape match is the secret, if it is one. The alternatives of [`SHAPES`]
/// start differently, so the first characters tell which one matched; only an Anthropic key
/// and a generic `sk-` key share a prefix, and for those the capture groups decide.
fn judge_shape(text: &str, whole: Range<usize>) -> Option<Range<usize>> {
    let s = &text[whole.clone()];
    let starts_with = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    if let Some(userinfo) = s.strip_prefix("://") {
        // A user alone is a token when it looks like one: random letters and digits
        // (`ssh://git@`, `deploy@`, a long name of letters stay).
        if !userinfo.contains(':') {
            let user = &userinfo[..userinfo.len() - 1];
            let token = user.bytes().any(|b| b.is_ascii_digit())
                && user.bytes().any(|b| b.is_ascii_alphabetic());
            return token.then(|| whole.start + 3..whole.end - 1);
        }
        // `host:8080/path/@scope`: a port and a path, not a user and a password.
        let password = userinfo.split_once(':').map_or("", |(_, p)| p).as_bytes();
        let port = password.iter().take_while(|b| b.is_ascii_digit()).count();
        if port > 0 && matches!(password.get(port), Some(b'/' | b'?' | b'#')) {
            return None;
        }
        return Some(whole.start + 3..whole.end - 1);
    }
    let scheme = if starts_with("basic") {
        5
    } else if starts_with("bearer") {
        6
    } else {
        0
    };
    if scheme > 0 {
        let credential = s[scheme..].trim_start_matches([' ', '\t']);
        let glued = glued_to_word(text, whole.start);
        return (!glued && looks_like_credential(credential))
            .then(|| whole.end - credential.len()..whole.end);
    }
    let generic = if s.starts_with("sk-ant-") {
        SHAPES.captures_at(text, whole.start).is_some_and(|c| c.name("generic").is_some())
    } else {
        ["sk-", "sk_", "rk_"].iter().any(|p| s.starts_with(p))
    };
    if generic {
        // What follows the prefix words (`sk-proj-`, `sk_live_`…).
        let tail = GENERIC_PREFIXES.iter().find_map(|p| s.strip_prefix(p)).unwrap_or(s);
        if !starts_a_word(text, whole.start) && !looks_random(tail) {
            return None;
        }
        // The pattern's tail is bounded; a longer key goes to its end all the same.
        let stripe = s.as_bytes().get(2) == Some(&b'_');
        let rest = text[whole.end..]
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || (!stripe && matches!(b, b'_' | b'-')))
            .count();
        return Some(whole.start..whole.end + rest);
    }
    if GLUE_SENSITIVE.iter().any(|p| s.starts_with(p)) && !starts_a_word(text, whole.start) {
        return None;
    }
    // `cache-key-<md5>`, `etag.key-…`: a hyphenated name's last word, not Mailgun's key.
    if s.starts_with("key-") && text[..whole.start].ends_with(['-', '.']) {
        return None;
    }
    Some(whole)
}

/// Whether a key's tail is random letters and digits, as generated keys are, rather than words
/// written in camel case (`risk-AssessmentFramework2024`): it mixes upper case, lower case and
/// digits, and changes between them at least once every three characters (random base 62
/// changes at about 6 of 10; words only where one ends).
fn looks_random(tail: &str) -> bool {
    let class = |b: u8| match b {
        b'A'..=b'Z' => 1,
        b'a'..=b'z' => 2,
        b'0'..=b'9' => 3,
        _ => 0,
    };
    let b = tail.as_bytes();
    let changes = b.windows(2).filter(|w| class(w[0]) != class(w[1])).count();
    b.iter().any(u8::is_ascii_uppercase)
        && b.iter().any(u8::is_ascii_lowercase)
        && b.iter().any(u8::is_ascii_digit)
        && changes * 3 >= b.len()
}

/// Whether a key's prefix at `at` starts a word: nothing that continues one is before it
/// ([`glued_to_word`]), or only an escape is (`\nsk-…` in JSON text, `%3Dsk-…` in a URL).
fn starts_a_word(text: &str, at: usize) -> bool {
    let before = &text.as_bytes()[..at];
    let escaped_break = matches!(before, [.., b'\\', b'n' | b'r' | b't']);
    let percent =
        matches!(before, [.., b'%', h, l] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit());
    !glued_to_word(text, at) || escaped_break || percent
}

/// Key prefixes that also end words and identifiers (`compare_…`, `firmwarefw_…`) or stand
/// inside base64 (`…ggLTAI…`): a key only at the start of a word.
const GLUE_SENSITIVE: [&str; 11] =
    ["re_", "fw_", "rnd_", "glc_", "napi_", "secret_", "y0_", "EAA", "pcsk_", "LTAI", "AKID"];

/// For a match of [`BARE_LOGIN`], what of it is the secret: the user and the password.
///
/// A password that looks like a credential makes it a login whatever the user (`12345:…` too).
/// A URI scheme or a name an e-mail address follows (`mailto:`, `email:`, `from:`…) never does.
/// A plain password (`admin:letmein@db.example.com`, `postgres:postgres@localhost`) does when
/// the user has a letter and is not a name an account follows (`user:alice@example.com`) and
/// what follows `@` is a host: `localhost`, a dotted name or address,
/// a bracketed IPv6 address, a name with a port, or a Go DSN's `tcp(…)`. A time (`12:30@cafe`) and a word before
/// `@` and a word (`note:call@noon`) are no login. Neither is an image reference, whose `@` is
/// followed by a digest (`nginx:1.25-alpine@sha256:…`).
fn bare_userinfo(text: &str, whole: Range<usize>) -> Option<Range<usize>> {
    let s = &text[whole.clone()];
    // The match ends with `@` and the host's first character.
    let at = s.len() - 2;
    let (user, password) = s[..at].split_once(':')?;
    // A match inside a longer user (the shape pass looks again one character on after a
    // match it rejected) is none.
    let user_char = |c: char| c.is_ascii_alphanumeric() || "._~%!$&*+-".contains(c);
    if text[..whole.start].chars().next_back().is_some_and(user_char) {
        return None;
    }
    let after = &text[whole.start + at + 1..];
    if is_digest(after) {
        return None;
    }
    let named = |keys: &[&str]| keys.iter().any(|key| user.eq_ignore_ascii_case(key));
    if named(&ADDRESS_KEYS) {
        return None;
    }
    // A plain password that could be a port is one (`redis:6379@cache.internal`).
    let port = password.len() <= 5 && password.parse::<u16>().is_ok();
    let login = looks_like_credential(password)
        || (user.bytes().any(|b| b.is_ascii_alphabetic())
            && !port
            && (!named(&ACCOUNT_KEYS) || looks_like_server(after))
            && looks_like_host(after));
    login.then(|| whole.start..whole.start + at)
}

/// For a match of [`PGPASS`], its password: when the host has a letter, a dot, a `/` (a socket
/// folder) or is `*` (not a time), the line is not inside a longer field, and no fifth `:`
/// follows (a MAC address has six fields).
fn pgpass_password(text: &str, whole: Range<usize>) -> Option<Range<usize>> {
    let line = &text[whole.clone()];
    let field_char = |c: char| {
        !c.is_whitespace() && !matches!(c, '"' | '\'' | '`' | ',' | '{' | '(' | '[' | '=' | '>')
    };
    if text[..whole.start].chars().next_back().is_some_and(field_char) {
        return None;
    }
    // The password ends its line (or the text, or the string it is quoted in).
    if !matches!(
        text[whole.end..].bytes().next(),
        None | Some(b'\n' | b'\r' | b'"' | b'\'' | b'`' | b'\\')
    ) {
        return None;
    }
    // The host: a bracketed IPv6 address, or up to the first unescaped colon (`\\:\\:1`).
    let host_end = if line.starts_with('[') {
        line.find(']')? + 1
    } else {
        let mut escaped = false;
        line.char_indices()
            .find(|&(_, c)| {
                let end = c == ':' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })?
            .0
    };
    let host = &line[..host_end];
    let host_like = host == "*"
        || host.contains(['.', '/', '[', ':'])
        || host.bytes().any(|b| b.is_ascii_alphabetic());
    if !host_like {
        return None;
    }
    // The fifth field starts after the fourth unescaped colon, the host's first.
    let mut colons = 0;
    let mut escaped = false;
    for (i, c) in line[host_end..].char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            ':' if !escaped => {
                colons += 1;
                if colons == 4 {
                    let password = whole.start + host_end + i + 1..whole.end;
                    // `*` is a wildcard in the other fields, no password.
                    return (&text[password.clone()] != "*").then_some(password);
                }
            }
            _ => escaped = false,
        }
    }
    None
}

/// URI schemes and names that an e-mail address follows after a colon (`mailto:`, `email:`,
/// `from:`): what comes before `@` is an address's, never a login.
const ADDRESS_KEYS: [&str; 33] = [
    "mailto",
    "sip",
    "sips",
    "xmpp",
    "im",
    "pres",
    "acct",
    "email",
    "e-mail",
    "mail",
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "sender",
    "recipient",
    "contact",
    "author",
    "committer",
    "maintainer",
    "owner",
    "reviewer",
    "assignee",
    "reporter",
    "approver",
    // Cloud IAM members (`serviceAccount:sa@project.iam.gserviceaccount.com`).
    "serviceaccount",
    "group",
    "domain",
    "principal",
    "principalset",
    "deleted",
    "allusers",
];

/// Names an address or an account follows after a colon (`user:alice@example.com`): a login's
/// user only when its password looks like a credential.
const ACCOUNT_KEYS: [&str; 14] = [
    "user", "username", "login", "account", "member", "address", "addr", "name", "uid", "id",
    // A package's alias or version (`npm:react@18.2.0`).
    "npm", "package", "pkg", "alias",
];

/// Whether `text` (what follows a login's `@`) starts with a server no e-mail address names:
/// `localhost`, an IP address (bracketed IPv6 too), or a host with a port or a path after it
/// (`user:letmein@db.example.com:5432/app`).
fn looks_like_server(text: &str) -> bool {
    let name = host_name(text);
    text.starts_with('[')
        || name.eq_ignore_ascii_case("localhost")
        || is_ipv4(name)
        || matches!(text.as_bytes().get(name.len()), Some(b':' | b'/'))
}

/// The host name or address `text` starts with: letters, digits, `.`, `-` and `_`.
fn host_name(text: &str) -> &str {
    let len = text
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        .count();
    &text[..len]
}

fn is_ipv4(name: &str) -> bool {
    name.split('.').count() == 4 && name.split('.').all(|part| part.parse::<u8>().is_ok())
}

/// Whether `text` (what follows a login's `@`) starts with a host: `localhost`, a bracketed
/// IPv6 address, a name or address with a dot inside it, a name followed by a port, or a Go
/// DSN's `tcp(` or `unix(`.
fn looks_like_host(text: &str) -> bool {
    if text.starts_with('[') {
        return true;
    }
    let full = host_name(text);
    let rest = &text[full.len()..];
    let name = full.trim_end_matches('.');
    // Digits and dots: an IPv4 address, not a version (`react@18.2.0`).
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return is_ipv4(name);
    }
    let port = rest
        .strip_prefix(':')
        .is_some_and(|rest| rest.bytes().next().is_some_and(|b| b.is_ascii_digit()));
    // A Go DSN's address: `tcp(db:3306)`, `unix(/run/mysqld.sock)`.
    let dsn = rest.starts_with('(') && matches!(name, "tcp" | "unix");
    name.eq_ignore_ascii_case("localhost")
        || (name.contains('.') && !name.starts_with('.'))
        || (port && !name.is_empty())
        || dsn
}

/// Whether `text` starts with a content digest, `sha256:` and hex (`sha384`, `sha512` too): what
/// follows `@` in an image reference (`nginx:1.25-alpine@sha256:…`), whose `name:tag` before it
/// is no user and password. At least 32 hex digits: a password before a look-alike
/// (`deploy:Pa55-word@sha256:abc123`) still goes.
fn is_digest(text: &str) -> bool {
    ["sha256:", "sha384:", "sha512:"].iter().any(|algorithm| {
        text.get(..algorithm.len()).is_some_and(|a| a.eq_ignore_ascii_case(algorithm))
            && text[algorithm.len()..].bytes().take_while(u8::is_ascii_hexdigit).count() >= 32
    })
}

/// The prefix words of generic keys, longest first.
const GENERIC_PREFIXES: [&str; 10] = [
    "sk-proj-",
    "sk-svcacct-",
    "sk-admin-",
    "sk_live_",
    "sk_test_",
    "sk_prod_",
    "rk_live_",
    "rk_test_",
    "rk_prod_",
    "sk-",
];

/// Whether the character before `at` continues a word: a letter or digit, or the `]` that
/// ends [`REDACTED`] (so that redacting twice finds nothing new).
fn glued_to_word(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == ']')
}

fn next_char(text: &str, at: usize) -> usize {
    text[at..].chars().next().map_or(text.len(), |c| at + c.len_utf8())
}

/// Whether a value written without a separator (`password hunter2`) or after `Basic`/`Bearer`
/// looks like a credential rather than a word of prose: at least 6 characters including a
/// letter, and a digit, a symbol (other than `-` `.` `_` `'` and brackets, which identifiers
/// and prose use), an upper-case letter right after a lower-case one, or at least 24
/// characters.
fn looks_like_credential(value: &str) -> bool {
    let mut count = 0;
    let (mut letter, mut digit, mut symbol, mut camel) = (false, false, false, false);
    let mut previous_lower = false;
    for c in value.chars() {
        count += 1;
        letter |= c.is_alphabetic();
        digit |= c.is_ascii_digit();
        symbol |= !c.is_alphanumeric()
            && !c.is_whitespace()
            && !matches!(c, '-' | '.' | '_' | '\'' | '(' | ')' | '[' | ']' | '{' | '}');
        camel |= previous_lower && c.is_uppercase();
        previous_lower = c.is_lowercase();
    }
    count >= 6 && letter && (digit || symbol || camel || count >= 24)
}

/// Whether `value` is lower-case words joined by `-`, `_` or `.` (at least two): after `auth`
/// written without a sign, a command's name (`gcloud auth activate-service-account`, `gh auth
/// refresh-credentials`); after any other secret's name it may be a pass phrase (`password
/// correct-horse-battery-staple`, `secret tiger-lemon-river-stone`) and goes.
fn is_joined_words(value: &str) -> bool {
    let mut words = value.split(['-', '_', '.']);
    let lower = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase());
    words.clone().count() >= 2 && words.all(lower)
}

/// Whether `value` starts with a URL's scheme (`https://`): an address, which a secret's
/// name written before it without a sign (`client_credentials https://…`) does not make a
/// credential (one carried inside it is a key shape's or the URL's credentials').
fn is_url(value: &str) -> bool {
    value.split_once("://").is_some_and(|(scheme, rest)| {
        URL_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s))
            && rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[')
    })
}

/// The schemes [`is_url`] knows; a password may hold `://` after other letters (`Pa55://…`).
const URL_SCHEMES: [&str; 12] =
    ["http", "https", "ftp", "ftps", "sftp", "ssh", "git", "s3", "gs", "ws", "wss", "file"];

/// The last words of an option's name (`--db-password`, `-storepass`, `--client-secret`) that
/// make its argument a secret whatever it looks like: names that never hold a count, an id or
/// a reference (`--token 500`, `--session 3`, `--secret id=npmrc,src=…` keep theirs unless it
/// looks like a credential).
const OPTION_NAMES: [&str; 22] = [
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "api_key",
    "apikey",
    "private_key",
    "secret_key",
    "access_key",
    "signing_key",
    "encryption_key",
    "master_key",
    "account_key",
    "client_secret",
    "storepass",
    "keypass",
    "otp_seed",
    "auth_token",
    "access_token",
    "refresh_token",
    "api_token",
    "bot_token",
];

/// Words after an option's name that are prose about it, not its argument (`pass the
/// --password flag`, `set --password to …`).
const OPTION_PROSE: [&str; 30] = [
    "flag",
    "flags",
    "option",
    "options",
    "argument",
    "arguments",
    "parameter",
    "parameters",
    "switch",
    "value",
    "to",
    "the",
    "a",
    "an",
    "and",
    "or",
    "of",
    "for",
    "in",
    "on",
    "with",
    "from",
    "as",
    "are",
    "be",
    "that",
    "this",
    "it",
    "if",
    "when",
];

/// Programs whose `--password` takes no argument: it makes them ask for one (PostgreSQL's
/// clients, `-W`; MySQL's and MariaDB's, whose argument is glued with `=`). The word after it
/// is the database or the next argument (`psql --password appdb`).
const PROMPTING_TOOLS: [&str; 27] = [
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_basebackup",
    "pg_receivewal",
    "pg_recvlogical",
    "createdb",
    "dropdb",
    "createuser",
    "dropuser",
    "vacuumdb",
    "reindexdb",
    "clusterdb",
    "pgbench",
    "mysql",
    "mariadb",
    "mysqldump",
    "mariadb-dump",
    "mysqladmin",
    "mariadb-admin",
    "mysqlimport",
    "mysqlcheck",
    "mysqlshow",
    "mysqlpump",
    "mysqlbinlog",
    "mysqlsh",
];

/// Whether the secret name at `name`, followed by blanks up to `next`, is a command-line
/// option whose argument is the word at `next` (`--password admin`, `-storepass changeit`,
/// `--db-password x`): the name ends the option's word, that word starts with `-` or `--` at
/// a word's start, its last words are one of [`OPTION_NAMES`], and the next word is an
/// argument — not another option (`-…`), not prose about the option ([`OPTION_PROSE`]), and
/// not after a `--password` that makes its program ask ([`PROMPTING_TOOLS`]) or a negation
/// (`--no-password`).
fn option_takes_value(text: &str, name: Range<usize>, next: usize) -> bool {
    let bytes = text.as_bytes();
    if next == name.end || !matches!(bytes.get(name.end), Some(b' ' | b'\t')) {
        return false;
    }
    let start = bytes[..name.start]
        .iter()
        .rposition(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
        .map_or(0, |i| i + 1);
    let word = &text[start..name.end];
    let bare = word.trim_start_matches('-');
    let dashes = word.len() - bare.len();
    if !(1..=2).contains(&dashes) || !bare.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return false;
    }
    if start > 0 && !matches!(bytes[start - 1], b' ' | b'\t' | b'\n' | b'"' | b'\'' | b'(' | b'[') {
        return false;
    }
    let option = bare.to_ascii_lowercase().replace('-', "_");
    // `--no-password`: a switch that says there is none.
    if option.starts_with("no_") {
        return false;
    }
    let named = OPTION_NAMES.iter().any(|n| {
        option.ends_with(n)
            && (option.len() == n.len() || option.as_bytes()[option.len() - n.len() - 1] == b'_')
    });
    if !named {
        return false;
    }
    let argument = text[next..].split([' ', '\t', '\n', '\r']).next().unwrap_or("");
    let argument_word = argument.trim_end_matches(['.', ',', ';', ':', '!', '?']);
    if argument.is_empty()
        || argument.starts_with('-')
        || OPTION_PROSE.iter().any(|w| argument_word.eq_ignore_ascii_case(w))
    {
        return false;
    }
    !(option == "password" && after_prompting_tool(text, start))
}

/// Whether a word of the command that ends at `at` names one of [`PROMPTING_TOOLS`] (with a
/// folder or `.exe`, in any case): the command starts after the last line break, `;`, `|` or
/// `&` before `at`.
fn after_prompting_tool(text: &str, at: usize) -> bool {
    let from = text[..at].rfind(['\n', ';', '|', '&']).map_or(0, |i| i + 1);
    text[from..at].split_whitespace().any(|word| {
        let word = word.trim_matches(|c: char| is_quote(c) || c == '(');
        let program = word.rsplit(['/', '\\']).next().unwrap_or(word).to_ascii_lowercase();
        let program = program.strip_suffix(".exe").unwrap_or(&program);
        PROMPTING_TOOLS.contains(&program)
    })
}

/// Where the literal of a typed declaration starts, when the text at `from` is a type, `=`
/// and a quoted literal (`&str = "…"`, `string = '…'`, `Optional[str] = "…"`): what a name's
/// value is in code that declares its type (`static PASSWORD: &str = "…"`, Go's `var password
/// string = "…"`). The type is one word of at most 64 bytes, and a blank comes before the `=`.
fn typed_literal(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    if bytes.get(i) == Some(&b'&') {
        i += 1;
    }
    if bytes[i.min(bytes.len())..].starts_with(b"'static ") {
        i += 8;
    }
    let start = i;
    if !bytes.get(start)?.is_ascii_alphabetic() {
        return None;
    }
    while i - start < 64
        && bytes.get(i).is_some_and(|&b| b.is_ascii_alphanumeric() || b"_:.<>[]|?".contains(&b))
    {
        i += 1;
    }
    // One word, then a blank: `Digest username="…"` after `Authorization:` is a header's
    // parameter, and `aGVsbG8=` before a closing quote is base64, not a type.
    let blanks = bytes[i..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    i += blanks;
    if blanks == 0 || bytes.get(i) != Some(&b'=') || matches!(bytes.get(i + 1), Some(b'=' | b'>')) {
        return None;
    }
    i += 1;
    i += bytes[i..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    quote_at(bytes, i).map(|_| i)
}

/// How a name is separated from its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    /// `name value`, `name is value`.
    Bare,
    /// `name=value`, `name:value`.
    Compact,
    /// `name = value`, `name: value`.
    Spaced,
    /// `<name>value</name>`.
    Element,
    /// `"name", value`: a quoted name that is an item of a list or the `name` of a pair
    /// written as JSON text (see [`listed_value`]).
    Comma,
}

/// Pass 2: values under secret-like names.
///
/// Every name is read, also one inside the value of another: its own value may run past
/// that one's end (`password=xtoken:` then a value on the next line, `password=x"token":
/// "two words"`), and what is replaced is the union. Reading the values of names inside
/// values costs at most [`INNER_READS`] times the text's length; text denser in names than
/// that is replaced from the first name past the limit to its end, rather than read in
/// quadratic time or left.
fn redact_names(text: &str) -> (Cow<'_, str>, Vec<Edit>) {
    let bytes = text.as_bytes();
    let mut at = 0;
    // The values found, replaced in order at the end: a call's strings may start after a name
    // inside its arguments whose own value ends before them (`f(Authorization: … "x")`).
    let mut values: Vec<Range<usize>> = Vec::new();
    // Where the values replaced so far end: a name before it sits inside one of them, and
    // its value ends with the string that one sits in, if any (a quoted value is a string).
    // `covered_from` is where the value that ends there starts.
    let (mut covered, mut covered_from) = (0, 0);
    let mut covering: Option<Quote> = None;
    let mut budget = INNER_READS * text.len() + REACH;
    while at < text.len() {
        let Some(found) = NAMES.find_at(text, at) else { break };
        let parsed = NamePair::parse(found.as_str());
        let name = found.start()..found.start() + parsed.name_len;
        let name_text = text[name.clone()].as_bytes();
        let ends_with = |n: &str| {
            name_text.len() >= n.len()
                && name_text[name_text.len() - n.len()..].eq_ignore_ascii_case(n.as_bytes())
        };
        // `pass` alone needs a sign; a longer name ending so (`storepass`) does not.
        let word_name = ends_with(WORD_NAME)
            && !SECRET_NAMES.iter().any(|n| n.len() > WORD_NAME.len() && ends_with(n));
        if word_name && !pass_names_a_value(&text[name.clone()], found.as_str(), parsed) {
            at = name.end.max(next_char(text, name.start));
            continue;
        }
        // A path's segment (`github.com/acme/auth\t0.5s`) is no name.
        // (Only after `/`: a backslash before a name escapes a line break in JSON text.)
        let in_path = name.start > 0 && bytes[name.start - 1] == b'/';
        if !names_a_value_in_text(&text[name.clone()], parsed.sep)
            || (in_path && parsed.sep == Sep::Bare)
        {
            at = name.end.max(next_char(text, name.start));
            continue;
        }
        let inside = name.start < covered;
        if inside && budget == 0 {
            values.push(name.start..text.len());
            break;
        }
        // A pair that itself sits in a quoted string ends with that string.
        let enclosing = if parsed.quoted { None } else { quote_before(bytes, name.start) }
            .or(covering.filter(|_| inside));
        let element = start_tag_end(bytes, name.clone(), parsed.quoted)
            .and_then(|end| element_value(text, end));
        let value = if element.is_some() {
            element
        } else if parsed.sep == Sep::Element {
            None
        } else {
            let lower = text[name.clone()].to_ascii_lowercase();
            // `Authorization: <scheme> <parameters>` (also `Proxy-Authorization`): the whole
            // header value is the credential, whatever the scheme (`Digest username="a",
            // response="…"`, `AWS4-HMAC-SHA256 Credential=…, Signature=…`).
            let header = lower.ends_with("authorization")
                && parsed.sep != Sep::Element
                && !found.as_str()[parsed.name_len..].contains('=');
            // `--password admin`: an option's argument is its value, whatever it looks like.
            let option = parsed.sep == Sep::Bare
                && !parsed.quoted
                && option_takes_value(text, name.clone(), found.end());
            let pair = Pair {
                name_start: name.start,
                name_end: name.end,
                sep: if option || (header && parsed.sep == Sep::Compact) {
                    if option {
                        Sep::Compact
                    } else {
                        Sep::Spaced
                    }
                } else {
                    parsed.sep
                },
                quoted: parsed.quoted,
                enclosing,
                cookie: lower.ends_with("cookie") || header,
                header,
            };
            let sign = found.as_str().trim_end_matches([' ', '\t']).bytes().last();
            // A typed declaration's literal (`PASSWORD: &str = "…"`, `var password string =
            // "…"`), whatever the type.
            let typed = matches!(sign, Some(b':')) || parsed.sep == Sep::Bare;
            match typed.then(|| typed_literal(bytes, found.end())).flatten() {
                Some(at) => value_range(text, at, &Pair { sep: Sep::Compact, ..pair }),
                // `setPassword("…")`, `NetworkCredential(user, "…")`: every string among a
                // call's arguments (none: `getPassword(name)`).
                // A quoted name before `(` is no function's (`"ApiKey"(…`).
                None if sign == Some(b'(') && !parsed.quoted => call_strings(text, found.end()),
                None if sign == Some(b'(') => None,
                // `password == expected`: a comparison, not an assignment.
                None if sign == Some(b'=') && bytes.get(found.end()) == Some(&b'=') => None,
                // C#'s `Password { get; set; } = "…"`: the property's initial value.
                None if parsed.sep == Sep::Bare && AUTO_PROPERTY.is_match(&text[found.end()..]) => {
                    AUTO_PROPERTY.find(&text[found.end()..]).and_then(|m| {
                        let at = found.end() + m.end();
                        value_range(text, at, &Pair { sep: Sep::Compact, ..pair })
                    })
                }
                // `auth::Token`: a path, not a sign.
                None if sign == Some(b':') && bytes.get(found.end()) == Some(&b':') => None,
                // `password: str)`: a parameter's or field's type.
                None if sign == Some(b':') && annotates_type(text, found.end()) => None,
                None => value_range(text, found.end(), &pair),
            }
        };
        at = name.end.max(next_char(text, name.start));
        if inside {
            let read = value.as_ref().map_or(found.len(), |r| r.end.saturating_sub(name.start));
            budget = budget.saturating_sub(read);
        }
        if let Some(range) = value.filter(|r| r.end > covered || r.start < covered_from) {
            if range.end > covered {
                covering = quote_before(bytes, range.start).or(enclosing);
                (covered, covered_from) = (range.end, range.start);
            }
            values.push(range);
        }
    }
    values.sort_unstable_by_key(|r| r.start);
    let mut rewriter = Rewriter::new(text);
    for range in values {
        rewriter.replace_or_extend(range);
    }
    rewriter.finish()
}

/// The string arguments of a call (or a tuple) whose `(` ends right before `start`
/// (`NetworkCredential("bob", "S3cret")`, `set_password("svc", "bob", "S3cret")`): from the
/// first string's text to the last one's. A password comes last as often as first, and which
/// argument holds it is the callee's to say, so all go. Other arguments (numbers, names,
/// nested calls) are passed over; the list ends at its `)`, or after [`REACH`] bytes.
fn call_strings(text: &str, start: usize) -> Option<Range<usize>> {
    let strings: Vec<Range<usize>> = call_arguments(text, start).into_iter().flatten().collect();
    let found = strings.first()?.start..strings.last()?.end;
    (!found.is_empty()).then_some(found)
}

/// The arguments of a call (or a tuple) whose `(` ends right before `start`, in order: a
/// string's text, or `None` for another argument (a number, a name, a nested call, `key="…"`).
/// The list ends at its `)`, or after [`REACH`] bytes.
fn call_arguments(text: &str, start: usize) -> Vec<Option<Range<usize>>> {
    let bytes = text.as_bytes();
    let limit = bytes.len().min(start.saturating_add(REACH));
    let mut found = Vec::new();
    let mut i = start;
    while i < limit {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b')' => break,
            _ => match quote_at(bytes, i) {
                Some((quote, open)) => {
                    let end = closing_quote(bytes, open, quote);
                    found.push(Some(open..end));
                    i = end + quote.escape_len() + 1;
                }
                None => {
                    // Another argument, up to the `,` or `)` after it at its depth.
                    let mut depth = 0usize;
                    while i < limit {
                        match bytes[i] {
                            b'(' | b'[' | b'{' => depth += 1,
                            b')' | b']' | b'}' if depth > 0 => depth -= 1,
                            b',' | b')' if depth == 0 => break,
                            _ => {}
                        }
                        i += 1;
                    }
                    found.push(None);
                }
            },
        }
    }
    found
}

/// The strings of a call that takes a key (see [`ARGV_PATTERN`]) whose `(` ends right before
/// `start`, at any depth of its arguments (`SignedString([]byte("…"))`, `"…".getBytes()`), to its
/// `)` or [`REACH`] bytes: all but an algorithm's or encoding's name (`'sha256'`, `"AES"`,
/// `'HS256'`, `"UTF-8"`) and a keyword argument's (`algorithm='HS256'`).
fn key_strings(text: &str, start: usize) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let limit = bytes.len().min(start.saturating_add(REACH));
    let mut found = Vec::new();
    let (mut depth, mut i) = (0usize, start);
    while i < limit {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => break,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if let Some((quote, open)) = quote_at(bytes, i) {
            let end = closing_quote(bytes, open, quote);
            let literal = &text[open..end];
            // A keyword argument's literal, maybe a byte string (`key=b'…'`).
            let prefixed = i > 0 && matches!(bytes[i - 1], b'b' | b'B' | b'r' | b'u');
            let before = skip_blanks_back(bytes, i - usize::from(prefixed));
            let keyword = before > 0 && bytes[before - 1] == b'=';
            let names_algorithm = literal.len() <= 16
                && literal.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && ALGORITHMS.iter().any(|a| literal.eq_ignore_ascii_case(a));
            i = end + quote.escape_len() + 1;
            // A member's name (`options={"verify_signature": False}`).
            let member = bytes.get(skip_blanks_forward(bytes, i)) == Some(&b':');
            if !literal.is_empty() && !keyword && !names_algorithm && !member && literal != REDACTED
            {
                found.push(open..end);
            }
            continue;
        }
        i += 1;
    }
    found
}

/// Names of algorithms and encodings that a key's call takes beside the key (see
/// [`key_strings`]).
const ALGORITHMS: [&str; 20] = [
    "sha1",
    "sha256",
    "sha384",
    "sha512",
    "md5",
    "hs256",
    "hs384",
    "hs512",
    "rs256",
    "es256",
    "aes",
    "hmacsha256",
    "hmacsha512",
    "utf-8",
    "utf8",
    "base64",
    "hex",
    "ascii",
    "des",
    "rsa",
];

/// The password among the arguments of a login's call whose `(` ends right before `start`
/// (`login("bob", "S3cret")`, `getConnection(url, "bob", "S3cret")`, `simple_bind_s(dn, "…")`,
/// `connect("db.example.com", 22, "bob", "S3cret")`): the string arguments after the first
/// one that names no place (the user), however many. A place is a URL or JDBC address,
/// `localhost` or an IP address, or for `connect` and `FTP` (`connect_to`: whose first string
/// must be a place, as theirs is a host) any host name. Arguments given by name (`password=…`)
/// are the names pass's.
fn login_strings(text: &str, start: usize, connect_to: bool) -> Vec<Range<usize>> {
    let is_place = |s: &str| {
        s.contains("://")
            || s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("jdbc:"))
            || looks_like_server(s)
            || (connect_to && looks_like_host(s))
    };
    let arguments = call_arguments(text, start);
    // The places first: strings naming one, and for `connect` any name or number (`connect(host,
    // 22, …)`); then the user, a string or a name (`login(sender_email, '…')`).
    let places = arguments
        .iter()
        .take_while(|a| a.as_ref().map_or(connect_to, |r| is_place(&text[r.clone()])))
        .count();
    if connect_to && places == 0 {
        return Vec::new();
    }
    arguments.into_iter().skip(places + 1).flatten().filter(|r| !r.is_empty()).collect()
}

/// How many times its length the values of names inside other values may read of a text.
const INNER_READS: usize = 4;

/// A match of [`NAMES`] taken apart: it reads `name`, maybe a closing quote, then a separator.
/// The parts are told from the end, as the name holds no quote, `:`, `=`, `>` or blank after
/// its last word, and no secret name ends in `is` or `was` (cheaper than capture groups, which
/// cost more than the rest of the pass on prose that mentions tokens and passwords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NamePair {
    name_len: usize,
    quoted: bool,
    sep: Sep,
}

impl NamePair {
    fn parse(pair: &str) -> Self {
        let b = pair.as_bytes();
        let blank = |c: &u8| *c == b' ' || *c == b'\t';
        let trailing_blanks = |end: usize| b[..end].iter().rev().take_while(|c| blank(c)).count();
        let after = trailing_blanks(b.len());
        let mut end = b.len() - after;
        // `password is: …`: a colon after `is` or `was` is the sentence's, not a sign.
        let said = [&b"is:"[..], b"was:"].iter().any(|w| {
            let head = &b[..end];
            head.len() > w.len()
                && head[head.len() - w.len()..].eq_ignore_ascii_case(w)
                && blank(&head[head.len() - w.len() - 1])
        });
        if said {
            end -= 1;
        }
        let sep = match b[..end] {
            _ if said => None,
            // A full-width colon (`密码：…`).
            [.., 0xEF, 0xBC, 0x9A] => Some(3),
            [.., b':', b'='] | [.., b'=', b'>'] | [.., b'<', b'-'] => Some(2),
            [.., b':' | b'=' | b'('] => Some(1),
            _ => None,
        };
        let sep = match sep {
            None if b[..end].last() == Some(&b',') => {
                end -= 1;
                end -= trailing_blanks(end);
                Sep::Comma
            }
            Some(op) => {
                end -= op;
                let before = trailing_blanks(end);
                end -= before;
                if before + after > 0 {
                    Sep::Spaced
                } else {
                    Sep::Compact
                }
            }
            None if after == 0 && b.last() == Some(&b'>') => {
                end -= 1;
                Sep::Element
            }
            None => {
                for word in [&b"is"[..], b"was", b"to"] {
                    let head = &b[..end];
                    if head.len() > word.len()
                        && head[head.len() - word.len()..].eq_ignore_ascii_case(word)
                        && blank(&head[head.len() - word.len() - 1])
                    {
                        end -= word.len();
                        end -= trailing_blanks(end);
                        break;
                    }
                }
                Sep::Bare
            }
        };
        // A prompt's current value in brackets after the name (`AWS Secret Access Key [None]:`).
        if end > 0 && b[end - 1] == b']' {
            if let Some(open) = b[..end].iter().rposition(|&c| c == b'[') {
                if open > 0 && blank(&b[open - 1]) {
                    end = open - trailing_blanks(open);
                }
            }
        }
        // A subscript's closing bracket after the quoted name (`env["API_TOKEN"] = …`).
        if end > 1 && b[end - 1] == b']' && is_quote(char::from(b[end - 2])) {
            end -= 1;
        }
        let quoted = end > 0 && is_quote(char::from(b[end - 1]));
        if quoted {
            end -= 1;
            end -= b[..end].iter().rev().take_while(|&&c| c == b'\\').count();
        }
        Self { name_len: end, quoted, sep }
    }
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`')
}

/// A quote and its depth of escaping: `"` is level 0, `\"` (a quote inside a string inside
/// text, such as JSON text in a JSON string) level 1, `\\\"` level 2, `\\\\\\\"` level 3.
/// The level of a quote after a run of backslashes is the number of trailing one bits of the
/// run's length (`2^level - 1` backslashes escape the quote; the pairs above them are escaped
/// backslashes of that level), so `\\\\\"` (5) is a level-1 quote after a backslash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quote {
    char: u8,
    level: u32,
}

impl Quote {
    /// Whether `b`, after `backslashes` backslashes, is this quote at this level.
    fn closes(self, b: u8, backslashes: usize) -> bool {
        b == self.char && backslashes.trailing_ones() == self.level
    }

    /// How many of the backslashes before the quote escape it.
    fn escape_len(self) -> usize {
        1usize.checked_shl(self.level).map_or(usize::MAX, |n| n - 1)
    }
}

/// The quote that starts at `at`, after any backslashes, and where its string's text begins.
fn quote_at(bytes: &[u8], at: usize) -> Option<(Quote, usize)> {
    let run = bytes.get(at..)?.iter().take_while(|&&b| b == b'\\').count();
    let char = *bytes.get(at + run).filter(|&&b| is_quote(char::from(b)))?;
    Some((Quote { char, level: run.trailing_ones() }, at + run + 1))
}

/// The quote just before `at` (and the backslashes before it), if there is one.
fn quote_before(bytes: &[u8], at: usize) -> Option<Quote> {
    let char = *bytes[..at].last().filter(|&&b| is_quote(char::from(b)))?;
    Some(Quote { char, level: backslashes_before(bytes, at - 1).trailing_ones() })
}

/// What [`value_range`] needs to know of the name before a value.
#[derive(Debug, Clone, Copy)]
struct Pair {
    /// Where the name starts: the indentation of its line is measured there.
    name_start: usize,
    /// Where the name ends (its closing quote, if quoted, starts there).
    name_end: usize,
    sep: Sep,
    /// Whether the name is quoted (`"password":`).
    quoted: bool,
    /// The quoted string the pair sits in, if the name starts it (`'Authorization: …'`).
    enclosing: Option<Quote>,
    /// A cookie's value is all secret: it is not cut at the next `key=`.
    cookie: bool,
    /// An `Authorization:` header's value: also not cut at the next `key=`, and a quoted
    /// parameter in it (`response="…"`) does not close the string the header sits in.
    header: bool,
}

/// The value that starts at `start`, as the range to replace, or `None` when there is nothing
/// to redact there.
fn value_range(text: &str, start: usize, pair: &Pair) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let kind = pair.sep;
    if kind == Sep::Comma {
        return listed_value(text, start, pair);
    }
    // `key="ApiKey" value="…"`: the value of an attribute named by another.
    if kind == Sep::Bare && pair.quoted {
        if let Some(at) = attribute_value(bytes, start) {
            return value_range(text, at, &Pair { sep: Sep::Compact, quoted: false, ..*pair });
        }
    }
    if let Some((quote, open)) = quote_at(bytes, start) {
        // The quote that closes the string the pair sits in, and the string's end after it
        // (`expect('Password:')`, `['token:', x]`): no value.
        let ends = |b: Option<&u8>| b.is_none_or(|b| b")],;]}\r\n".contains(b));
        if pair.enclosing == Some(quote) && ends(bytes.get(open)) {
            return None;
        }
        return quoted_value(text, open, quote, kind).filter(|r| {
            reference_len(&text[r.clone()]) != Some(r.len()) && !is_placeholder(&text[r.clone()])
        });
    }
    // A tuple (`auth=("bob", "…")`): its strings, as a call's.
    if bytes.get(start) == Some(&b'(') && kind != Sep::Bare {
        if let Some(strings) = call_strings(text, start + 1) {
            return Some(strings);
        }
    }
    // A reference to another value, alone (`${{ secrets.TOKEN }}`, `$(gh auth token)`), holds
    // none: judged whole here, as the end of the value below is the first blank.
    if let Some(len) = reference_len(&text[start..]) {
        let after = bytes.get(start + len);
        if after.is_none_or(|&b| b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'&')) {
            return None;
        }
    }
    // A call's value (`config('SECRET_KEY', default='…')`) runs to its closing bracket, past
    // the `key=` of its arguments; code that looks a secret up by name keeps it all.
    if kind != Sep::Bare {
        if let Some(end) = call_end(bytes, start) {
            return (!computes_value(&text[start..end])).then_some(start..end);
        }
    }
    // Any other `$(…)` or `${…}` goes whole, its blanks and all (`$(echo S3cret)`).
    if let Some(&open @ (b'(' | b'{')) = bytes.get(start + 1).filter(|_| bytes[start] == b'$') {
        let close = if open == b'(' { b')' } else { b'}' };
        let mut depth = 0usize;
        for (i, &b) in bytes.iter().enumerate().skip(start + 1).take(REACH) {
            depth = if b == open {
                depth + 1
            } else if b == close {
                depth - 1
            } else {
                depth
            };
            if depth == 0 {
                return Some(start..i + 1);
            }
        }
    }
    // `method=password user=alice` (logfmt): after a name without a sign, a word that is a
    // pair of its own, `key=value`, is the next pair, not the name's value (base64's `==`
    // padding is no pair).
    if kind == Sep::Bare && starts_a_pair(&bytes[start..]) {
        return None;
    }
    if kind != Sep::Bare {
        // Nothing but a break, or a YAML block indicator (`|`, `>-`…) and a break, after the
        // sign: the value is on the lines that follow.
        let at = block_indicator(bytes, start).unwrap_or(start);
        if let Some((form, next)) = line_break(bytes, at) {
            // `if not password:` then a block: Python's statement, not a key.
            if opens_a_block(bytes, pair.name_start) {
                return None;
            }
            return next_line_value(text, next, form, pair);
        }
        // After a quoted name and `:` (a JSON member), an array or object is the value whole.
        let member = pair.quoted
            && bytes[..start].iter().rev().find(|&&b| b != b' ' && b != b'\t') == Some(&b':');
        if let Some(end) = bracketed(bytes, start).filter(|_| member) {
            return Some(start..end);
        }
        if let Some(range) = opened_block(text, start, pair).filter(|_| member) {
            return Some(range);
        }
    }
    // One scan: to the end of the line, the quote that closes the string the pair sits in, or
    // the first delimiter the syntax gives.
    let mut end = bytes.len();
    let mut backslashes = 0usize;
    // Where the delimiters before the next word start: the last `,` `;` `&` and the blanks
    // after it, or the first of a run of blanks. Whether a key follows is asked once, at the
    // end of that run, so a long run of blanks is looked at once, not once per blank.
    let mut gap: Option<usize> = None;
    // Where a quoted header parameter being skipped ends.
    let mut skip = 0;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        #[cfg(test)]
        tests::VALUE_SCAN.with(|scanned| scanned.set(scanned.get() + 1));
        if b == b'\n' || b == b'\r' {
            end = i;
            break;
        }
        if i < skip {
            continue;
        }
        if let Some(quote) = pair.enclosing.filter(|q| {
            pair.header && b == b'=' && {
                quote_at(bytes, i + 1).is_some_and(|(found, _)| found == *q)
            }
        }) {
            // `response="…"` inside `'Authorization: Digest …'`: the parameter's quotes.
            let open = quote_at(bytes, i + 1).map_or(i + 1, |(_, open)| open);
            skip = closing_quote(bytes, open, quote) + quote.escape_len() + 1;
            backslashes = 0;
            gap = None;
            continue;
        }
        if let Some(quote) = pair.enclosing.filter(|q| q.closes(b, backslashes)) {
            end = i - quote.escape_len();
            break;
        }
        // A word after a name without a sign (`session notes.md`) ends at a double quote,
        // backquote or backslash: in JSON or code written as text, that is the end of the
        // string the word sits in, not more of a credential.
        if kind == Sep::Bare && matches!(b, b'"' | b'`' | b'\\') {
            end = i;
            break;
        }
        let space = b == b' ' || b == b'\t';
        if space && kind != Sep::Spaced {
            // `password=abc, user=bob`: the value ends before the `,` that starts the gap.
            end = gap.filter(|_| !pair.cookie && key_follows(bytes, i)).unwrap_or(i);
            break;
        }
        if space {
            gap.get_or_insert(i);
        } else if matches!(b, b',' | b';' | b'&') {
            gap = Some(i);
        } else {
            gap = None;
        }
        let run_ends = !matches!(bytes.get(i + 1), Some(b' ' | b'\t'));
        if let Some(from) = gap.filter(|_| run_ends && !pair.cookie) {
            if key_follows(bytes, i + 1) {
                end = from;
                break;
            }
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    let mut value = trim_unopened(&text[start..end]);
    if kind == Sep::Bare {
        value = value.trim_end_matches(['.', ',', ';', ':', '!', '?']);
        value = trim_unopened(value);
        let name = &text[pair.name_start..pair.name_end];
        // A word that starts with `<` or `>` after a name without a sign is a redirection of
        // a command's input or output (`chpasswd <<'EOF'`, `passwd >/dev/null`).
        if !looks_like_credential(value)
            || value.starts_with(['<', '>'])
            || is_url(value)
            || (is_joined_words(value) && name.eq_ignore_ascii_case("auth"))
        {
            return None;
        }
    }
    let name = &text[pair.name_start..pair.name_end];
    if value.is_empty()
        || is_literal(value)
        || is_working_directory(name, value)
        || computes_value(value)
        || is_placeholder(value)
        || (pair.header && refers_to_a_credential(value))
    {
        return None;
    }
    Some(start..start + value.len())
}

/// The value a quoted secret name followed by a comma names in JSON (or code) written as text,
/// as [`redact_json`] judges parsed JSON: when the name's string is a flag in a list
/// (`["--password", "…"]`), the next item, if it is a string or a
/// number; when it is the value of a `name` or `key` member (`{"name": "DB_PASSWORD",
/// "value": "…"}`), a `value`, `values`, `val` or `data` member right after it. The name's
/// string holds the name alone (`"reset the password", "x"` is no name), and the quotes are
/// those of the name's, at the same depth of escaping.
fn listed_value(text: &str, start: usize, pair: &Pair) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let (quote, _) = quote_at(bytes, pair.name_end).filter(|_| pair.quoted)?;
    // The string may start with more name characters (`"/prod/db/password"`).
    let word = bytes[..pair.name_start]
        .iter()
        .rev()
        .take(64)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':'))
        .count();
    let word_start = pair.name_start - word;
    if quote_before(bytes, word_start) != Some(quote) {
        return None;
    }
    let open = word_start - 1 - quote.escape_len();
    // Pretty-printed JSON puts the items and members on lines of their own.
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    // … also in JSON text written into a string, whose line breaks are escapes (`\n`).
    let mut start = start;
    loop {
        start += bytes[start..].iter().take_while(|b| blank(b)).count();
        match line_break(bytes, start) {
            Some((_, next)) if bytes[start] == b'\\' => start = next,
            _ => break,
        }
    }
    let before = bytes[..open].iter().rev().position(|b| !blank(b)).map(|k| open - 1 - k);
    // The first of a pair in a list (`[["X-Api-Key", "…"], …]`, see `redact_array`).
    let pair_item = before.is_some_and(|i| {
        bytes[i] == b'['
            && bytes[..i].iter().rev().find(|b| !blank(b)).is_some_and(|b| matches!(b, b'[' | b','))
    });
    let member = match before.map(|i| bytes[i]) {
        // An item of a list names the next only as a flag (see `redact_array`).
        Some(b'[' | b',') if bytes[word_start..].starts_with(b"-") || pair_item => false,
        Some(b'[' | b',') => return None,
        // The first argument of a call names the second (`props.put("password", "…")`,
        // `os.getenv("DB_PASSWORD", "…")`, `localStorage.setItem("token", "…")`).
        Some(b'(') => false,
        Some(b':') => {
            // The member's name, quoted the same way: `name` or `key`.
            let colon = before.unwrap_or(0);
            let end = bytes[..colon].iter().rev().position(|b| !blank(b)).map(|k| colon - k)?;
            let close = end.checked_sub(1 + quote.escape_len())?;
            if quote_at(bytes, close).map(|(q, _)| q) != Some(quote) {
                return None;
            }
            let word = bytes[..close].iter().rev().take_while(|b| b.is_ascii_alphabetic()).count();
            let member = &text[close - word..close];
            if !PAIR_NAMES.iter().any(|n| member.eq_ignore_ascii_case(n)) {
                return None;
            }
            true
        }
        _ => return None,
    };
    if member {
        // `"value": …` right after, the same quotes around its name.
        let (q, after) = quote_at(bytes, start)?;
        let word = bytes[after..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let close = after + word;
        let (q2, past) = quote_at(bytes, close)?;
        if q != quote || q2 != quote || !is_pair_value(&text[after..close]) {
            return None;
        }
        let sign = past + bytes[past..].iter().take_while(|b| blank(b)).count();
        if bytes.get(sign) != Some(&b':') {
            return None;
        }
        let value = sign + 1 + bytes[sign + 1..].iter().take_while(|b| blank(b)).count();
        let sep = if value > sign + 1 { Sep::Spaced } else { Sep::Compact };
        // The value is a JSON value, cut as one whatever the name (a header's or cookie's
        // value is all secret only where the name is the header's).
        return value_range(text, value, &Pair { sep, cookie: false, header: false, ..*pair });
    }
    // The next item: a string quoted as the name is, or a number; in a pair, the last.
    let closes_pair = |end: usize| {
        !pair_item || bytes[end..].iter().find(|b| !blank(b)).is_some_and(|&b| b == b']')
    };
    if let Some((q, open)) = quote_at(bytes, start) {
        return (q == quote).then(|| quoted_value(text, open, q, Sep::Compact)).flatten().filter(
            |r| {
                !pair_item
                    || (looks_like_credential(&text[r.clone()])
                        && closes_pair((r.end + 1 + q.escape_len()).min(bytes.len())))
            },
        );
    }
    let digits = bytes[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        .count();
    let number = &text[start..start + digits];
    (number.bytes().any(|b| b.is_ascii_digit())
        && matches!(
            bytes.get(start + digits),
            None | Some(b',' | b']' | b' ' | b'\t' | b'\n' | b'\r')
        )
        && closes_pair(start + digits))
    .then_some(start..start + digits)
}

/// Whether `b` may be part of a name written as a value (`/prod/db/password`, `DB_PASSWORD`).
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':')
}

/// Where a tool's name or a keyword starts: at a word boundary, or right after an escaped line
/// break or tab (`\n` in JSON text) or a percent escape (`%3Dmysql`, `%20mysql`), where no
/// boundary separates it from the letter or digit before it.
macro_rules! word_start {
    () => {
        r"(?:\\[nrt]|%[0-9A-Fa-f]{2}|(?-u:\b))"
    };
}

/// How a password flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Glued to the flag only (`mysql -pS3cret`; a `-p` of its own asks for it).
    Glued,
    /// Glued, after `=`, or as the next argument (`sshpass -p S3cret`, `-pS3cret`).
    Either,
    /// As the next argument only: a tool whose options are whole words (`openssl … -k S3cret`,
    /// where `-key file` is another option).
    Apart,
}

/// What of a flag's value is the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    /// After the first of this character, none without one: `curl -u user:password` (`-u
    /// user` asks), `smbclient -U user%password`, `kubectl create secret
    /// --from-literal=key=value`.
    After(char),
}

/// A program that takes a password as an argument, where no name says so.
struct Tool {
    /// Its names, matched whatever their case and folder (`/usr/bin/mysql`, `SQLCMD.EXE`); a
    /// trailing `*` matches any ending (`ldap*`: `ldapsearch`, `ldapmodify`…).
    names: &'static [&'static str],
    /// The subcommands the flags belong to (`docker login -p`, not `docker run -p`); none: the
    /// tool's own.
    subcommands: &'static [&'static str],
    flags: &'static [(&'static str, Takes)],
    /// Which word after the subcommand that is no option is a password (`rabbitmqctl add_user
    /// bob S3cret`: the second); 0 for none, [`EVERY`] for all (of each, its [`Part`]).
    positional: usize,
    part: Part,
    /// Whether its options end at the first word that is not one: the command it runs
    /// (`sshpass -f file ssh -p 2222`: the `-p` is ssh's port).
    wraps: bool,
    /// Its options that take the next word (`sshpass -f file`), which is then no command.
    options_with_arg: &'static [&'static str],
    /// The letters of its flags that take nothing, which may come before a password flag in
    /// one word (`sshpass -vp S3cret`).
    cluster: &'static str,
}

/// [`Tool::positional`] of a tool each of whose words is a password (or holds one).
const EVERY: usize = usize::MAX;

/// Every [`Tool`]. `htpasswd -b` (the password is a word of its own, not a flag's) is
/// [`htpasswd_password`]'s, and Oracle's logons ([`ORACLE_TOOLS`]) are [`oracle_passwords`]'.
const TOOLS: &[Tool] = &[
    Tool::new(
        &[
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlcheck",
            "mysqlshow",
            "mysqlsh",
            "mariadb",
            "mariadb-dump",
            "mariadb-admin",
            "7z",
            "7za",
            "7zr",
        ],
        &[("-p", Takes::Glued)],
    ),
    Tool::new(&["rar", "unrar"], &[("-p", Takes::Glued), ("-hp", Takes::Glued)]),
    Tool {
        wraps: true,
        options_with_arg: &["-f", "-d", "-P"],
        cluster: "ve",
        ..Tool::new(&["sshpass"], &[("-p", Takes::Either)])
    },
    Tool {
        subcommands: &["login", "set"],
        ..Tool::new(
            &["docker", "podman", "buildah", "skopeo", "az"],
            &[("-p", Takes::Either), ("--value", Takes::Either)],
        )
    },
    Tool { positional: 2, ..Tool::new(&["wpa_passphrase"], &[]) },
    // Every value of a Vault secret written (`vault kv put secret/db password=…`).
    Tool {
        subcommands: &["put", "patch", "write"],
        positional: EVERY,
        part: Part::After('='),
        ..Tool::new(&["vault"], &[])
    },
    Tool::new(&["redis-cli"], &[("-a", Takes::Either), ("--pass", Takes::Either)]),
    Tool::new(
        &["redis-server"],
        &[("--requirepass", Takes::Either), ("--masterauth", Takes::Either)],
    ),
    Tool::new(
        &["zip", "unzip", "sqlcmd", "bcp", "ipmitool", "mosquitto_pub", "mosquitto_sub"],
        &[("-P", Takes::Either)],
    ),
    Tool::new(&["ldap*"], &[("-w", Takes::Either)]),
    Tool::new(&["ssh-keygen"], &[("-N", Takes::Either), ("-P", Takes::Either)]),
    Tool::new(
        &["mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport"],
        &[("-p", Takes::Either)],
    ),
    Tool::new(&["plink", "pscp", "psftp"], &[("-pw", Takes::Either)]),
    Tool::new(&["openssl"], &[("-k", Takes::Apart)]),
    Tool::new(&["xfreerdp", "wlfreerdp"], &[("/p:", Takes::Glued)]),
    Tool {
        part: Part::After(':'),
        ..Tool::new(
            &["curl"],
            &[
                ("-u", Takes::Either),
                ("--user", Takes::Either),
                ("-U", Takes::Either),
                ("--proxy-user", Takes::Either),
            ],
        )
    },
    Tool {
        subcommands: &["put-parameter", "create-secret", "put-secret-value", "update-secret"],
        ..Tool::new(&["aws"], &[("--value", Takes::Either), ("--secret-string", Takes::Either)])
    },
    Tool {
        subcommands: &["secret"],
        ..Tool::new(&["gh"], &[("--body", Takes::Either), ("-b", Takes::Either)])
    },
    Tool {
        part: Part::After('%'),
        ..Tool::new(&["smbclient"], &[("-U", Takes::Either), ("--user", Takes::Either)])
    },
    // Every value of a Kubernetes secret is one, whatever its key's name.
    Tool {
        subcommands: &["secret"],
        part: Part::After('='),
        ..Tool::new(&["kubectl", "oc"], &[("--from-literal", Takes::Either)])
    },
    Tool {
        subcommands: &["add_user", "change_password", "authenticate_user"],
        positional: 2,
        ..Tool::new(&["rabbitmqctl"], &[])
    },
];

impl Tool {
    /// A tool whose flags take the whole value, with no subcommand, that runs no other command.
    const fn new(names: &'static [&'static str], flags: &'static [(&'static str, Takes)]) -> Self {
        Self {
            names,
            subcommands: &[],
            flags,
            positional: 0,
            part: Part::Whole,
            wraps: false,
            options_with_arg: &[],
            cluster: "",
        }
    }

    /// The tool a command word names (its folder and a `.exe` aside, any case), if any.
    fn named(word: &str) -> Option<ToolKind> {
        // A command word is short and has no blank: most strings are not one, at one look.
        if word.len() > 128 || word.contains(char::is_whitespace) {
            return None;
        }
        let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
        let base = base.strip_suffix(".exe").or_else(|| base.strip_suffix(".EXE")).unwrap_or(base);
        // A version after the name (`mysql5.7`, `mongosh-2.1`, `python3`).
        let base = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        let base = base.strip_suffix('-').unwrap_or(base);
        if base.eq_ignore_ascii_case("htpasswd") {
            return Some(ToolKind::Htpasswd);
        }
        if base.eq_ignore_ascii_case("net") {
            return Some(ToolKind::NetUse);
        }
        if ORACLE_TOOLS.iter().any(|t| base.eq_ignore_ascii_case(t)) {
            return Some(ToolKind::OracleLogon);
        }
        TOOLS
            .iter()
            .find(|t| {
                t.names.iter().any(|n| match n.strip_suffix('*') {
                    Some(prefix) => {
                        base.len() > prefix.len()
                            && base.as_bytes()[..prefix.len()]
                                .eq_ignore_ascii_case(prefix.as_bytes())
                            && base.bytes().all(|b| b.is_ascii_alphabetic())
                    }
                    None => base.eq_ignore_ascii_case(n),
                })
            })
            .map(ToolKind::Flags)
    }
}

#[derive(Clone, Copy)]
enum ToolKind {
    Flags(&'static Tool),
    Htpasswd,
    OracleLogon,
    /// Windows' `net use`, see [`net_use_password`].
    NetUse,
}

/// Oracle's tools that take a logon, `user/password[@connect]`, as an argument of its own
/// (`sqlplus scott/tiger@orcl`, `expdp system/pw@db directory=…`, `rman target sys/pw@db`).
const ORACLE_TOOLS: [&str; 6] = ["sqlplus", "sqlldr", "expdp", "impdp", "rman", "dgmgrl"];

/// The parameters of [`ORACLE_TOOLS`] whose value is a logon (`userid=scott/tiger`,
/// `target=sys/pw@db`), also written as a word before it (`rman target sys/pw`).
const ORACLE_LOGONS: [&str; 4] = ["userid", "target", "auxiliary", "catalog"];

/// The secrets among a command's arguments `args` (the words after the tool's name), as (the
/// argument's index, the range of the secret in it, quotes aside).
fn secret_args(tool: ToolKind, args: &[&str]) -> Vec<(usize, Range<usize>)> {
    let tool = match tool {
        ToolKind::Flags(tool) => tool,
        ToolKind::Htpasswd => return htpasswd_password(args).into_iter().collect(),
        ToolKind::OracleLogon => return oracle_passwords(args),
        ToolKind::NetUse => return net_use_password(args).into_iter().collect(),
    };
    let mut found = Vec::new();
    let mut active = tool.subcommands.is_empty();
    let mut words = 0;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if !active {
            active = tool.subcommands.contains(&unquoted(arg, 0..arg.len()));
            i += 1;
            continue;
        }
        if tool.wraps && !arg.starts_with('-') {
            break;
        }
        if tool.positional > 0 && !arg.starts_with('-') {
            words += 1;
            let whole = unquote(arg, 0..arg.len());
            let start = match tool.part {
                Part::Whole => Some(whole.start),
                Part::After(c) => arg[whole.clone()].find(c).map(|at| whole.start + at + 1),
            };
            let password = start.map_or(whole.end..whole.end, |start| start..whole.end);
            if (words == tool.positional || tool.positional == EVERY)
                && !password.is_empty()
                && &arg[password.clone()] != REDACTED
            {
                found.push((i, password));
            }
            i += 1;
            continue;
        }
        if tool.options_with_arg.contains(&arg) {
            i += 2;
            continue;
        }
        // `-vp`: flags that take nothing, then the password flag.
        let clustered = |flag: &str| {
            let letters = arg.strip_prefix('-').and_then(|a| a.strip_suffix(&flag[1..]));
            flag.len() == 2
                && letters
                    .is_some_and(|l| !l.is_empty() && l.chars().all(|c| tool.cluster.contains(c)))
        };
        let mut value = None;
        for &(flag, takes) in tool.flags {
            if (arg == flag || clustered(flag)) && takes != Takes::Glued {
                if i + 1 < args.len() {
                    value = Some((i + 1, 0..args[i + 1].len()));
                }
                break;
            }
            if arg.len() > flag.len() && arg.starts_with(flag) && takes != Takes::Apart {
                let eq = takes == Takes::Either && arg.as_bytes()[flag.len()] == b'=';
                value = Some((i, flag.len() + usize::from(eq)..arg.len()));
                break;
            }
        }
        if let Some((at, range)) = value {
            let text = args[at];
            let range = unquote(text, range);
            let start = match tool.part {
                Part::Whole => Some(range.start),
                Part::After(c) => text[range.clone()].find(c).map(|at| range.start + at + 1),
            };
            // A file the value is read from (`aws … --secret-string file://secret.json`).
            let file = ["file://", "fileb://"].iter().any(|f| text[range.clone()].starts_with(f));
            if let Some(start) = start.filter(|_| !file) {
                let secret = start..range.end;
                if !secret.is_empty() && &text[secret.clone()] != REDACTED {
                    found.push((at, secret));
                }
            }
            i = at + 1;
        } else {
            i += 1;
        }
    }
    found
}

/// The passwords of the logons among an Oracle tool's arguments ([`ORACLE_TOOLS`]): its first
/// word that is no option (`sqlplus -s scott/tiger@orcl`; a script, `@run.sql`, is none), and the
/// value of a logon parameter ([`ORACLE_LOGONS`]), after `=` or as the next word. In a logon
/// `user/password@connect` the password runs from the first `/` to the last `@` (or the end);
/// one with no user (`/ as sysdba`, `/nolog`: the operating system's login) has none. Prose that
/// puts `a/b` right after such a tool's name (`sqlplus and/or rman`) loses its `b`.
fn oracle_passwords(args: &[&str]) -> Vec<(usize, Range<usize>)> {
    let is_logon_name = |w: &str| ORACLE_LOGONS.iter().any(|n| w.eq_ignore_ascii_case(n));
    let mut found = Vec::new();
    let (mut positional, mut named_before) = (false, false);
    for (i, arg) in args.iter().enumerate() {
        let whole = unquote(arg, 0..arg.len());
        let word = &arg[whole.clone()];
        let logon = if std::mem::take(&mut named_before) {
            Some(whole.clone())
        } else if let Some(eq) = word.find('=') {
            is_logon_name(&word[..eq]).then(|| whole.start + eq + 1..whole.end)
        } else if is_logon_name(word) {
            named_before = true;
            None
        } else if !positional && !word.starts_with('-') {
            positional = true;
            Some(whole.clone())
        } else {
            None
        };
        let Some(logon) = logon else { continue };
        let text = &arg[logon.clone()];
        let Some(slash) = text.find('/').filter(|&at| at > 0 && !text.starts_with('@')) else {
            continue;
        };
        let password = slash + 1..text.rfind('@').filter(|&at| at > slash).unwrap_or(text.len());
        if !password.is_empty() && &text[password.clone()] != REDACTED {
            found.push((i, logon.start + password.start..logon.start + password.end));
        }
    }
    found
}

/// `net user name password`: the word after the account's name. `net use [device]
/// \\server\share password /user:name`: the share right after `use` or its
/// device (`Z:`, `*`), then the first word that is no option (`/user:…`, `/persistent:no`, in
/// either order), unless it is `*` (asks for it).
fn net_use_password(args: &[&str]) -> Option<(usize, Range<usize>)> {
    let word = |i: usize| &args[i][unquote(args[i], 0..args[i].len())];
    let device = |w: &str| w == "*" || (w.len() == 2 && w.ends_with(':'));
    if args.len() >= 3 && word(0).eq_ignore_ascii_case("user") {
        // `net user bob S3cret /add`: the word after the account's name.
        let password = unquote(args[2], 0..args[2].len());
        let text = &args[2][password.clone()];
        let secret = !text.is_empty() && !text.starts_with('/') && text != "*" && text != REDACTED;
        return secret.then_some((2, password));
    }
    if args.len() < 3 || !word(0).eq_ignore_ascii_case("use") {
        return None;
    }
    let share = if device(word(1)) { 2 } else { 1 };
    if !word(share).starts_with("\\\\") {
        return None;
    }
    let at = (share + 1..args.len()).find(|&i| !word(i).starts_with('/'))?;
    let password = unquote(args[at], 0..args[at].len());
    let text = &args[at][password.clone()];
    (!text.is_empty() && text != "*" && text != REDACTED).then_some((at, password))
}

/// `htpasswd -b [-c…] file user password`, `htpasswd -nb user password`: in batch mode (`-b`)
/// the password is the third word that is not a flag (the second with `-n`, which writes no
/// file); `-C` and `-r` take a number.
fn htpasswd_password(args: &[&str]) -> Option<(usize, Range<usize>)> {
    let (mut batch, mut no_file) = (false, false);
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if arg.len() > 1 && arg.starts_with('-') {
            batch |= arg.contains('b');
            no_file |= arg.contains('n');
            if matches!(arg, "-C" | "-r") {
                i += 1;
            }
        } else {
            words.push(i);
        }
        i += 1;
    }
    let at = *words.get(if no_file { 1 } else { 2 })?;
    let range = unquote(args[at], 0..args[at].len());
    (batch && !range.is_empty() && &args[at][range.clone()] != REDACTED).then_some((at, range))
}

/// `range` of `text` without the quotes around it, escaped to any depth (`\"…\"`).
fn unquote(text: &str, range: Range<usize>) -> Range<usize> {
    let bytes = &text.as_bytes()[range.clone()];
    let open = bytes.iter().take_while(|&&b| b == b'\\').count();
    match bytes.get(open) {
        Some(&q @ (b'\'' | b'"')) if bytes.len() > 2 * open + 1 && bytes.ends_with(&[q]) => {
            let close =
                bytes[open + 1..bytes.len() - 1].iter().rev().take_while(|&&b| b == b'\\').count();
            range.start + open + 1..range.end - 1 - close.min(open)
        }
        _ => range,
    }
}

/// [`unquoted`]'s text.
fn unquoted(text: &str, range: Range<usize>) -> &str {
    &text[unquote(text, range)]
}

/// The words of the command that starts at `from` in `text`, as ranges: separated by blanks,
/// a line continuation (`\` before a line break) or an escaped tab (`\t` in JSON text), also
/// escaped to any depth; a quoted string, escaped to any depth, is one word with its blanks.
/// The command ends at a line break (also an escaped one, `\n` or `\\n` in JSON text), `;`,
/// `|`, `&`, `)` or a backquote outside quotes, and after [`MAX_ARGS`] words or
/// [`COMMAND_REACH`] bytes (so that reading every command of a text stays linear when nothing
/// ends them, as in text whose blanks and line breaks are `%20` and `%0A`).
fn command_words(text: &str, from: usize) -> Vec<Range<usize>> {
    let mut reach = text.len().min(from.saturating_add(COMMAND_REACH));
    while !text.is_char_boundary(reach) {
        reach -= 1;
    }
    let b = &text.as_bytes()[..reach];
    #[cfg(test)]
    tests::COMMAND_SCAN.with(|scanned| scanned.set(scanned.get() + (reach - from)));
    let run = |i: usize| b[i..].iter().take_while(|&&c| c == b'\\').count();
    let mut words = Vec::new();
    let mut i = from;
    while words.len() < MAX_ARGS {
        // Blanks and continuations.
        loop {
            match b.get(i) {
                Some(b' ' | b'\t') => i += 1,
                Some(b'\\') => {
                    let n = run(i);
                    match b.get(i + n) {
                        Some(b'\n') => i += n + 1,
                        Some(b'\r') if b.get(i + n + 1) == Some(&b'\n') => i += n + 2,
                        Some(b't') if n.is_power_of_two() => i += n + 1,
                        Some(b'n' | b'r') if continues(n) => i += n + 1,
                        _ => break,
                    }
                }
                _ => break,
            }
        }
        match b.get(i) {
            None | Some(b'\n' | b'\r' | b';' | b'|' | b'&' | b')' | b'`') => break,
            Some(b'\\')
                if run(i).is_power_of_two() && matches!(b.get(i + run(i)), Some(b'n' | b'r')) =>
            {
                break
            }
            _ => {}
        }
        let start = i;
        // A quote opens a quoted part at the start of a word, in a flag (`-p'…'`,
        // `--user='…'`) or after `=` (`key='…'`); elsewhere it ends the word: it closes a
        // string the command sits in (`"htpasswd -nb alice pw", "next": …`).
        let quotes_open =
            |i: usize| i == start || matches!(b[start], b'-' | b'/') || b[i - 1] == b'=';
        while let Some(&c) = b.get(i) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b';' | b'|' | b'&' => break,
                b'\\' => {
                    let n = run(i);
                    match b.get(i + n) {
                        Some(b'n' | b'r' | b't') if n.is_power_of_two() || continues(n) => break,
                        // A quoted part ends the word where it is not closed.
                        Some(&q @ (b'"' | b'\'')) if quotes_open(i) => {
                            match close_quote(b, i + n + 1, n, q) {
                                Some(end) => i = end,
                                None => break,
                            }
                        }
                        Some(b'"' | b'\'') => break,
                        _ => i += n + 1,
                    }
                }
                b'"' | b'\'' if quotes_open(i) => match close_quote(b, i + 1, 0, c) {
                    Some(end) => i = end,
                    None => break,
                },
                b'"' | b'\'' => break,
                _ => i += 1,
            }
        }
        if i == start {
            break;
        }
        words.push(start..i.min(b.len()));
    }
    words
}

/// The items after `tool` when it is a quoted item of a list written as text (`["mysql",
/// "-pX"]` as JSON, Python or YAML flow text, at any depth of escaping): each a string quoted
/// the same way (its text, without the quotes) or a number, up to whatever is not one.
/// How far a command line is read after its tool's name: a password flag further on (after a
/// request body of several KiB) is not found.
const COMMAND_REACH: usize = 4 * 1024;

/// How far back a tool's folder is looked for before its name (`"/usr/bin/mysql"`): a bound,
/// so that text dense in tool names is read in linear time.
const MAX_FOLDER: usize = 256;

fn list_words(text: &str, tool: Range<usize>) -> Option<Vec<Range<usize>>> {
    let b = text.as_bytes();
    let depth = b[tool.end..].iter().take_while(|&&c| c == b'\\').count();
    let q = *b.get(tool.end + depth)?;
    // The item's opening quote, before the tool's folder if it has one (`"/usr/bin/mysql"`).
    let folder = b[..tool.start]
        .iter()
        .rev()
        .take(MAX_FOLDER)
        .take_while(|&&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'_' | b'-' | b':')
        })
        .count();
    let open = (tool.start - folder).checked_sub(1)?;
    if !matches!(q, b'"' | b'\'') || b[open] != q {
        return None;
    }
    if b[..open].iter().rev().take_while(|&&c| c == b'\\').count() != depth {
        return None;
    }
    let mut i = tool.end + depth + 1;
    let mut words = Vec::new();
    while words.len() < MAX_ARGS {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        if b.get(i) != Some(&b',') {
            break;
        }
        i += 1;
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        let n = b[i..].iter().take_while(|&&c| c == b'\\').count();
        if n == depth && b.get(i + n) == Some(&q) {
            let Some(end) = close_quote(b, i + n + 1, depth, q) else { break };
            words.push(i + n + 1..end - 1 - depth);
            i = end;
        } else if b.get(i).is_some_and(u8::is_ascii_digit) {
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            words.push(start..i);
        } else {
            break;
        }
    }
    Some(words)
}

/// Where a string quoted by `q` escaped `depth` times, whose text starts at `at`, ends (after
/// its closing quote), if it is closed on its line.
fn close_quote(b: &[u8], at: usize, depth: usize, q: u8) -> Option<usize> {
    let mut i = at;
    while let Some(&c) = b.get(i) {
        if c == b'\n' {
            return None;
        }
        if c == q {
            let escapes = b[..i].iter().rev().take_while(|&&x| x == b'\\').count();
            if escapes == depth {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

/// Whether a run of `n` backslashes before an `n` or `r` is a line continuation escaped for
/// JSON text: a backslash and a line break, each escaped to the same depth (3, 6, 12… where a
/// line break alone takes 1, 2, 4…).
fn continues(n: usize) -> bool {
    n.is_multiple_of(3) && (n / 3).is_power_of_two()
}

/// The most words of a command read for passwords.
const MAX_ARGS: usize = 256;

/// One argument of a command line: a word, or a string quoted either way (escaped to any
/// depth, as in JSON text: `\"…\"`).
macro_rules! argument {
    () => {
        r"\\*'[^'\n]*'|\\*\x22[^\x22\n]*\x22|[^\s'\x22;]+"
    };
}

/// A program that reads a password from its standard input, with its options: `sudo -S`,
/// `chpasswd`, `passwd --stdin`, a registry's `login --password-stdin`, `openssl … -pass stdin`.
macro_rules! stdin_reader {
    () => {
        concat!(
            r"(?:[^\s|]*/)?(?:sudo(?:[ \t]+[^\s|]+)*?[ \t]+(?:-[A-Za-z]*S[A-Za-z]*|--stdin)(?-u:\b)",
            r"|(?:sudo(?:[ \t]+-[^\s|]+)*[ \t]+)?(?:chpasswd|passwd[ \t]+--stdin)",
            r"|(?:sudo(?:[ \t]+-[^\s|]+)*[ \t]+)?(?:docker|podman|nerdctl|buildah|skopeo|helm|oras|crane)",
            r"[ \t]+(?:registry[ \t]+)?login[^|\n]*?--password-stdin",
            r"|openssl[ \t][^|\n]*?-pass(?:in|out)?[ \t]+(?:stdin|fd:0)(?-u:\b)",
            r"|(?:sudo(?:[ \t]+-[^\s|]+)*[ \t]+)?(?:cryptsetup|passwd|smbpasswd|su|kinit)(?-u:\b)",
            r"|gpg[ \t][^|\n]*?--passphrase-fd[ \t=]+0(?-u:\b)",
            r"|(?:vercel[ \t]+env[ \t]+add|npm[ \t]+login|op[ \t]+signin|ansible-vault)(?-u:\b)",
            r"|docker[ \t]+secret[ \t]+create[ \t]",
            r"|gcloud[ \t][^|\n]*?--data-file[= ]-(?:[ \t]|$))",
        )
    };
}

/// What starts a secret no name announces (the third reading, [`argv_values`]), besides the
/// name of a [`Tool`] ([`argv_pattern`]):
/// * SQL's `IDENTIFIED BY …` (also `IDENTIFIED WITH plugin BY`, `BY PASSWORD`, across lines,
///   escaped ones too), a
///   quoted string in any case, a word after the keywords in upper case (`argv`, `literal`);
/// * a URL's `sig=`, `signature=`, `X-Amz-Signature=`, `X-Goog-Signature=` (Azure SAS,
///   presigned URLs: whoever holds the URL holds the access), up to the next `&` or `#`, also
///   after `&amp;` or `;` (`param`);
/// * what `echo` or `printf` pipes into a program that reads a password on stdin: `sudo -S`,
///   `chpasswd` (`user:password` lines), `passwd --stdin`, a registry login's
///   `--password-stdin`, `openssl … -pass stdin` (`piped`), or gives it as a here-string
///   (`sudo -S apt-get install nginx <<< 'S3cret'`: `herestring`).
const ARGV_PATTERN: &str = concat!(
    word_start!(),
    r"IDENTIFIED(?:\s|\\+[nrt])+(?:WITH(?:\s|\\+[nrt])+\S+?(?:\s|\\+[nrt])+)?BY(?:\s|\\+[nrt])+",
    r"(?:PASSWORD(?:\s|\\+[nrt])+)?(?P<argv>",
    argument!(),
    r")",
    // In lower case only a quoted string: `identified by their email` is prose.
    r"|(?i:",
    word_start!(),
    r"identified(?:\s|\\+[nrt])+(?:with(?:\s|\\+[nrt])+\S+?(?:\s|\\+[nrt])+)?by(?:\s|\\+[nrt])+",
    r"(?:password(?:\s|\\+[nrt])+)?)",
    r"(?P<literal>\\*'[^'\n]*'|\\*\x22[^\x22\n]*\x22)",
    r"|(?:[?&;]|&amp;)(?i:sig|signature|x-amz-signature|x-goog-signature)=(?P<param>[^\s'\x22&#<>;\\]+)",
    // MySQL's `SET PASSWORD [FOR 'bob'@'%'] = 'X'`, PowerShell's `ConvertTo-SecureString 'X'`,
    // and the password of an Oracle JDBC URL's logon (`jdbc:oracle:thin:scott/X@db:1521:ORCL`).
    r"|(?i:set[ \t]+password(?:[ \t]+for[ \t]+[^=\n]+?)?[ \t]*=[ \t]*(?:password[ \t]*\([ \t]*)?)",
    r"(?P<setpw>\\*'[^'\n]*'|\\*\x22[^\x22\n]*\x22)",
    r"|(?i:convertto-securestring)(?:[ \t]+-(?i:string))?[ \t]+(?P<securestring>\\*'[^'\n]*'|\\*\x22[^\x22\n]*\x22)",
    r"|(?i:jdbc:oracle:(?:thin|oci8?):@?)[A-Za-z0-9_$#.]+/(?P<thin>[^@\s'\x22/\\]+)@",
    // A password piped into a program that reads it from stdin.
    r"|",
    word_start!(),
    r"(?:echo|printf(?:[ \t]+\\*['\x22]%s(?:\\+n)?\\*['\x22])?)(?:[ \t]+-[neE]+)*[ \t]+(?P<piped>\\*'[^'\n]*'|\\*\x22[^\x22\n]*\x22|[^\s'\x22;|]+)",
    r"[ \t]*\|[ \t]*",
    stdin_reader!(),
    // A call that takes a signing or encryption key (`jwt.sign(payload, '…')`, `createHmac(
    // 'sha256', '…')`, `new SecretKeySpec("…".getBytes(), "AES")`, a wallet's key).
    r"|",
    word_start!(),
    r"(?P<keycall>(?:jwt|jose|JWT)\.(?:sign|encode|verify|decode)|createHmac|hmac\.new|HMAC(?:256|384|512)",
    r"|signWith|SignedString|SecretKeySpec|SymmetricSecurityKey|Fernet|AES\.new|cookieParser",
    r"|ethers\.Wallet|privateKeyToAccount|fromSecretKey)\(",
    // `user:password` made into a Basic credential (`btoa("bob:…")`, `echo -n 'bob:…' | base64`).
    r"|(?:btoa|b64encode|Buffer\.from|encodeToString|EncodeToString)\((?:\[\]byte\()?\\*[\x22'][^:\x22'\s]+:",
    r"(?P<basic>[^\x22'\s\\]+)",
    r"|(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+\\*['\x22]%s\\*['\x22])?)[ \t]+\\*['\x22]?[^:'\x22\s|]+:",
    r"(?P<basicpipe>[^'\x22\s|\\]+)\\*['\x22]?[ \t]*\|[ \t]*base64",
    // A login's call, its user and password as positional strings.
    r"|",
    word_start!(),
    r"(?:[A-Za-z0-9]+_)?(?P<login>(?i:log_?in|sign_?in|authenticate|getconnection|simple_bind(?:_s)?|bind_s|pdo|sequelize)",
    r"|(?P<connect>(?i:connect|ftp(?:_tls)?|mysqli)))\(",
);

/// A here-document's delimiter after `<<` or `<<-`, maybe quoted (`<<'EOF'`), as a group of
/// the given name.
macro_rules! heredoc {
    ($group:literal) => {
        concat!(
            r"<<-?[ \t]*(?:\\*['\x22])?(?P<",
            $group,
            r">[A-Za-z_][A-Za-z0-9_]*)(?:\\*['\x22])?"
        )
    };
}

/// A password given as a here-string or a here-document to a program that reads it from stdin
/// (`sudo -S apt-get install nginx <<< 'S3cret'`, `chpasswd <<EOF` and lines of `user:pw`):
/// the program and its options (group `reader`), then the string (`herestring`) or the
/// document's delimiter (`heredoc`), or a document that `cat` pipes into such a program
/// (`cat <<EOF | sudo -S …`: `catdoc`). Read before a [`Tool`]'s name, which may start the
/// same words (`docker login --password-stdin <<< …`), and a tool's arguments on the way to
/// the string are read as well (see [`argv_values`]).
const HERESTRING_PATTERN: &str = concat!(
    word_start!(),
    r"(?P<reader>",
    stdin_reader!(),
    r")[^\n|;<]*?(?:<<<[ \t]*(?P<herestring>",
    argument!(),
    r")|",
    heredoc!("heredoc"),
    r")|",
    word_start!(),
    r"cat[ \t]+",
    heredoc!("catdoc"),
    r"[ \t]*\|[ \t]*",
    stdin_reader!(),
);

static ARGV: LazyLock<Regex> = LazyLock::new(|| compile(&argv_pattern()));

/// [`ARGV_PATTERN`] after the name of any [`Tool`], `htpasswd` or Oracle tool (group `tool`, whose
/// arguments [`secret_args`] reads), in any case, with a version (`mysql5.7`) and `.exe`; a
/// name ending in `*` takes any letters there.
fn argv_pattern() -> String {
    let names: Vec<String> = TOOLS
        .iter()
        .flat_map(|t| t.names.iter())
        .map(|n| match n.strip_suffix('*') {
            Some(prefix) => format!("{}[a-z]+", regex::escape(prefix)),
            None => regex::escape(n),
        })
        .chain(["htpasswd".to_owned(), "net".to_owned()])
        .chain(ORACLE_TOOLS.iter().map(|t| (*t).to_owned()))
        .collect();
    // `SSHPASS=… sshpass -e`, the variable sshpass reads, first: the tool's name would take
    // the word (`sshpass: command not found` keeps its word).
    format!(
        r"{HERESTRING_PATTERN}|{start}SSHPASS=(?P<env>{arg})|{start}(?P<tool>(?i:{})(?:-?[0-9][0-9.]*)?(?i:\.exe)?)(?-u:\b)|{ARGV_PATTERN}",
        names.join("|"),
        start = word_start!(),
        arg = argument!(),
    )
}

/// The secrets that [`argv_pattern`] finds in `text`: a quoted argument without its quotes.
fn argv_values(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    // Where the last here-document found ends, and where a search for a command's line end
    // last gave up.
    let (mut documents_end, mut no_break) = (0, 0);
    while let Some(c) = ARGV.captures_at(text, at) {
        let whole = c.get(0).map_or(text.len()..text.len(), |m| m.range());
        // After a here-string's program, its arguments: a tool's may come before the string.
        at = c.name("reader").map_or(whole.end, |r| r.end()).max(next_char(text, whole.start));
        if let Some(tool) = c.name("tool") {
            let Some(kind) = Tool::named(tool.as_str()) else { continue };
            let words =
                list_words(text, tool.range()).unwrap_or_else(|| command_words(text, tool.end()));
            let args: Vec<&str> = words.iter().map(|w| &text[w.clone()]).collect();
            for (at, secret) in secret_args(kind, &args) {
                let start = words[at].start;
                found.push(start + secret.start..start + secret.end);
            }
            continue;
        }
        if c.name("keycall").is_some() {
            found.extend(key_strings(text, whole.end));
            continue;
        }
        if c.name("login").is_some() {
            found.extend(login_strings(text, whole.end, c.name("connect").is_some()));
            continue;
        }
        if let Some(delimiter) = c.name("heredoc").or_else(|| c.name("catdoc")) {
            // A document inside one already found is part of that one's input, and each
            // document is read once: linear time however many there are.
            if whole.start >= documents_end {
                // The body starts on the line after the command's, which ends within
                // [`COMMAND_REACH`] (no break lies before `no_break`, which an earlier
                // command's search reached).
                let limit = text.len().min(whole.end.saturating_add(COMMAND_REACH));
                let bytes = text.as_bytes();
                match (whole.end.max(no_break)..limit).find_map(|i| line_break(bytes, i)) {
                    Some((form, first)) => {
                        if let Some(body) = heredoc_body(text, form, first, delimiter.as_str()) {
                            documents_end = body.end;
                            found.push(body);
                        }
                    }
                    None => no_break = limit,
                }
            }
            continue;
        }
        let Some(value) = c
            .name("argv")
            .or_else(|| c.name("literal"))
            .or_else(|| c.name("param"))
            .or_else(|| c.name("basic"))
            .or_else(|| c.name("basicpipe"))
            .or_else(|| c.name("setpw"))
            .or_else(|| c.name("securestring"))
            .or_else(|| c.name("thin"))
            .or_else(|| c.name("piped"))
            .or_else(|| c.name("herestring"))
            .or_else(|| c.name("env"))
        else {
            continue;
        };
        let inner = unquote(text, value.range());
        // A shell variable piped in (`echo $PASSWORD | sudo -S …`) holds no secret here.
        let fed = c.name("piped").or_else(|| c.name("herestring")).is_some();
        if fed && text[inner.clone()].starts_with('$') {
            continue;
        }
        if !inner.is_empty() && &text[inner.clone()] != REDACTED {
            found.push(inner);
        }
    }
    found
}

/// The keys of a mapping under a secret's name that describe the value or say where it is read
/// from (see [`next_line_value`]): JSON Schema and OpenAPI, Docker Compose's secrets, Kubernetes'
/// references.
const DESCRIBING_KEYS: [&str; 14] = [
    "type",
    "$ref",
    "description",
    "format",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "properties",
    "file",
    "external",
    "environment",
    "valueFrom",
    "secretKeyRef",
];

/// The body of a here-document whose first line starts at `first`, its lines broken by `form`:
/// the lines to the one that is the `delimiter` alone (after tabs, as `<<-` allows), or to the
/// end of the text when no line ends it (the shell reads to the end of its input). The lines
/// may be broken by escapes, the command sitting in a JSON string; a line of an escaped form
/// also ends at its string's closing quote. `None` when the body is empty or only names shell
/// variables.
fn heredoc_body(text: &str, form: Break, first: usize, delimiter: &str) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let strings =
        Strings { enclosing: None, escaped: (form.0 > 0).then_some(form.0.trailing_zeros()) };
    // A tab, written or escaped as the line breaks are.
    let tab = format!("{}t", "\\".repeat(form.0));
    let mut line = Some(first);
    let mut end = first;
    while let Some(start) = line {
        let (line_end, next) = line_end(bytes, start, form, strings);
        let mut content = &text[start..line_end];
        while let Some(rest) =
            content.strip_prefix('\t').or_else(|| content.strip_prefix(tab.as_str()))
        {
            content = rest;
        }
        if content == delimiter {
            break;
        }
        end = line_end;
        line = next;
    }
    // Lines of shell variables alone (`$PW`, `${PW}`) hold no secret here.
    let newline = format!("{}n", "\\".repeat(form.0));
    let mut lines = text[first..end].split(if form.0 == 0 { "\n" } else { newline.as_str() });
    let variables = lines.all(|line| line.trim().starts_with('$') && !line.trim().contains(' '));
    (end > first && !variables).then_some(first..end)
}

/// The values that a sibling names, as [`redact_json`] judges parsed JSON (`{"name":
/// "DB_PASSWORD", "value": "…"}`), in text: a `name` or `key` entry whose value is a secret's
/// name makes the `value`, `values`, `val` and `data` entries beside it secrets, in either
/// order —
/// * in JSON (or code) written as text, the member right before the name, quoted the same way
///   at any depth of escaping, when its value is a string or a number (the member right after
///   is [`listed_value`]'s);
/// * in YAML, every entry of the same mapping: the lines at the key's column (a list item's
///   `- ` counts as indentation), up to a line indented less, the next item or another
///   `name`/`key`, within [`REACH`] bytes either way. Lines may be broken by escapes (YAML in
///   a JSON string), as in [`next_line_value`].
///
/// Kubernetes and Docker Compose env lists, GitHub Actions inputs and AWS tags are written so.
fn sibling_values(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut flow = FlowOpens::default();
    let mut at = 0;
    while let Some(m) = SIBLINGS.find_at(text, at) {
        at = next_char(text, m.start());
        let key = m.start();
        if m.as_str().starts_with(PLIST_KEY) {
            found.extend(plist_value(text, key + PLIST_KEY.len()));
            continue;
        }
        // The pair's name member (`name`, `key`, `ParameterKey`…): a word of letters.
        let key_end = key + bytes[key..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
        // The key's quotes: the same on both sides, or none.
        let key_quote = quote_before(bytes, key);
        let mut i = key_end;
        if let Some(q) = key_quote {
            match quote_at(bytes, i) {
                Some((found, after)) if found == q => i = after,
                _ => continue,
            }
        } else if quote_at(bytes, i).is_some() {
            continue;
        }
        let blanks = |mut i: usize| {
            while matches!(bytes.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            i
        };
        i = blanks(i);
        if !matches!(bytes.get(i), Some(b':' | b'=')) {
            continue;
        }
        i = blanks(i + 1);
        let value_quote = quote_at(bytes, i);
        if let Some((_, after)) = value_quote {
            i = after;
        }
        let word_start = i;
        while bytes.get(i).copied().is_some_and(is_name_byte) && i - word_start <= 64 {
            i += 1;
        }
        if !names_a_secret(&text[word_start..i]) {
            continue;
        }
        if let Some((q, _)) = value_quote {
            match quote_at(bytes, i) {
                Some((found, after)) if found == q => i = after,
                _ => continue,
            }
        }
        match key_quote {
            Some(q) => {
                let open = key - 1 - q.escape_len();
                found.extend(json_siblings(text, open, i, q));
            }
            None => {
                // Each mapping is read once, whichever of its entries names a secret.
                if let Some(open) = flow.open_before(bytes, key) {
                    found.extend(flow_siblings(text, open, key));
                }
                found.extend(yaml_siblings(text, key, blanks(i)));
                found.extend(next_pair_value(text, i));
            }
        }
    }
    found
}

/// The text of the element after a property list's `<key>` element whose text (from `name`)
/// names a secret: `<key>password</key>`, blanks and line breaks (also escaped, in JSON text),
/// then `<string>…</string>` or any other element with text (`<data>`, `<integer>`).
fn plist_value(text: &str, name: usize) -> Option<Range<usize>> {
    const KEY_END: &str = "</key>";
    let bytes = text.as_bytes();
    let close = name + text[name..].find('<').filter(|&n| n <= 64 + 2)?;
    if !text[close..].starts_with(KEY_END) || !names_a_secret(text[name..close].trim()) {
        return None;
    }
    let open = skip_blanks_forward(bytes, close + KEY_END.len());
    if bytes.get(open) != Some(&b'<') || bytes.get(open + 1) == Some(&b'/') {
        return None;
    }
    let tag_end = open + 1 + text[open + 1..].find(['>', '<']).filter(|&n| n <= 64)?;
    if bytes[tag_end] != b'>' || bytes[tag_end - 1] == b'/' {
        return None;
    }
    element_value(text, tag_end + 1)
}

/// In a list of `name=value` entries on one line (`ParameterKey=DbPassword,ParameterValue=…`
/// as the AWS CLI takes parameters, logfmt's `name=DB_PASSWORD value=…`), the value of the
/// entry right after a pair's name (`from`: the end of the name's value) when that entry is
/// value-like ([`PAIR_VALUES`]) and written with `=` or `:`: up to the next `,`, `;`, `&`,
/// blank, backslash, bracket or quote (an ASCII byte, so a character's end), however far, or
/// inside its quotes.
fn next_pair_value(text: &str, from: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let separators =
        bytes[from..].iter().take_while(|b| matches!(b, b',' | b';' | b'&' | b' ' | b'\t')).count();
    if separators == 0 {
        return None;
    }
    let start = from + separators;
    let word = bytes[start..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    if word == 0 || !is_pair_value(&text[start..start + word]) {
        return None;
    }
    let sign = start + word;
    if !matches!(bytes.get(sign), Some(b'=' | b':')) {
        return None;
    }
    let value = sign + 1;
    if text[value..].starts_with(REDACTED) {
        return None;
    }
    if let Some((q, open)) = quote_at(bytes, value) {
        return quoted_value(text, open, q, Sep::Compact);
    }
    let end = value
        + bytes[value..]
            .iter()
            .take_while(|&&b| {
                !matches!(
                    b,
                    b',' | b';'
                        | b'&'
                        | b' '
                        | b'\t'
                        | b'\n'
                        | b'\r'
                        | b'"'
                        | b'\''
                        | b'\\'
                        | b'}'
                        | b']'
                        | b')'
                )
            })
            .count();
    (end > value).then_some(value..end)
}

/// The `{` that opens the flow mapping around each key [`sibling_values`] meets, found in one
/// pass over the text: the innermost bracket still open on the key's line, within [`REACH`].
#[derive(Default)]
struct FlowOpens {
    /// How far the text has been read, and the `{` still open there on its line (the 64
    /// innermost).
    read: usize,
    open: std::collections::VecDeque<usize>,
    /// The last `{` handed out: a mapping is read once.
    given: Option<usize>,
}

impl FlowOpens {
    fn open_before(&mut self, bytes: &[u8], key: usize) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate().take(key).skip(self.read) {
            match b {
                b'\n' => self.open.clear(),
                b'{' => {
                    if self.open.len() == 64 {
                        self.open.pop_front();
                    }
                    self.open.push_back(i);
                }
                b'}' => {
                    self.open.pop_back();
                }
                _ => {}
            }
        }
        self.read = self.read.max(key);
        let open = *self.open.back().filter(|&&open| open + REACH >= key)?;
        (self.given.replace(open) != Some(open)).then_some(open)
    }
}

/// In a mapping written on one line in flow style (`{name: DB_PASSWORD, value: x}`: YAML's
/// flow mappings, JavaScript's object literals, `name=…` maps) opened at `open`, whose entry
/// near `key` names a secret: the values of its value-like entries ([`PAIR_VALUES`]). The
/// mapping is read to its `}`, quoted values and nested brackets skipped whole; if it is not
/// one such mapping with an entry naming a secret, nothing is found.
fn flow_siblings(text: &str, open: usize, key: usize) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let ceiling = (key + REACH).min(bytes.len());
    let blanks = |mut i: usize| {
        while i < ceiling && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let mut found = Vec::new();
    // Whether an entry names a secret (`name: DB_PASSWORD`), whichever entry led here.
    let mut named = false;
    let mut i = open + 1;
    loop {
        i = blanks(i);
        let name_start = i;
        let name = match quote_at(bytes, i) {
            Some((q, inner)) => {
                let close = closing_quote(bytes, inner, q);
                i = close + q.escape_len() + 1;
                inner..close
            }
            None => {
                while i < ceiling && is_member_name_byte(bytes[i]) {
                    i += 1;
                }
                name_start..i
            }
        };
        if name.is_empty() || i >= ceiling {
            return Vec::new();
        }
        i = blanks(i);
        if !matches!(bytes.get(i), Some(b':' | b'=')) {
            return Vec::new();
        }
        i = blanks(i + 1);
        let value = match (quote_at(bytes, i), bytes.get(i)) {
            (Some((q, inner)), _) => {
                let close = closing_quote(bytes, inner, q);
                if close >= ceiling {
                    return Vec::new();
                }
                i = close + q.escape_len() + 1;
                Some(inner..close)
            }
            (None, Some(b'{' | b'[')) => {
                let mut depth = 0usize;
                while i < ceiling {
                    match bytes[i] {
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        b'\n' => return Vec::new(),
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                if depth != 0 {
                    return Vec::new();
                }
                None
            }
            (None, _) => {
                let start = i;
                while i < ceiling && !matches!(bytes[i], b',' | b'}' | b'\n' | b'\r') {
                    i += 1;
                }
                if i >= ceiling {
                    return Vec::new();
                }
                let end = trim_blanks(bytes, start, i).end;
                Some(start..end)
            }
        };
        if let Some(value) = value {
            let inner = &text[value.clone()];
            let name = &text[name];
            if is_pair_value(name) && !inner.is_empty() && !is_literal(inner) {
                found.push(value);
            } else if PAIR_NAMES.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                named |= names_a_secret(inner);
            }
        }
        i = blanks(i);
        // A trailing comma may end the mapping.
        let comma = bytes.get(i) == Some(&b',');
        if comma {
            i = blanks(i + 1);
        }
        match bytes.get(i) {
            Some(b'}') if named => return found,
            Some(_) if comma => {}
            _ => return Vec::new(),
        }
    }
}

/// How many members [`json_siblings`] passes over either way, looking for the value.
const SIBLING_MEMBERS: usize = 8;

/// In JSON text, the values of the value-like members ([`PAIR_VALUES`]) of the object whose
/// name member (`"Name": "DB_PASSWORD"`) starts at `open` (its opening quote `quote`) and ends
/// at `end`: members before it and after it, up to [`SIBLING_MEMBERS`] either way, passing over
/// members of other names whose values are strings, numbers or literals, as AWS parameters
/// are written (`{"Name": …, "Type": "SecureString", "Value": …, "Version": 1}`).
fn json_siblings(text: &str, open: usize, end: usize, quote: Quote) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    // The members passed over, and the value itself.
    let mut at = open;
    for _ in 0..=SIBLING_MEMBERS {
        let Some(member) = member_before(text, at, quote) else { break };
        found.extend(member.secret(text));
        at = member.start;
    }
    let mut at = end;
    for _ in 0..=SIBLING_MEMBERS {
        let Some(member) = member_after(text, at, quote) else { break };
        found.extend(member.secret(text));
        at = member.end;
    }
    found
}

/// A member of a JSON object found in text by [`member_before`] or [`member_after`].
struct Member {
    /// Its name, without quotes.
    name: Range<usize>,
    /// Its value: a string's text, or a number or literal.
    value: Range<usize>,
    /// Where its name's opening quote (with its escape) starts, and where its value ends.
    start: usize,
    end: usize,
}

impl Member {
    /// The value, when the member is value-like and the value neither empty nor a literal.
    fn secret(&self, text: &str) -> Option<Range<usize>> {
        let inner = &text[self.value.clone()];
        (is_pair_value(&text[self.name.clone()]) && !inner.is_empty() && !is_literal(inner))
            .then(|| self.value.clone())
    }
}

/// Whether `b` may be part of a number or literal written bare (`-1.5e3`, `true`).
fn is_bare_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// Whether `word`, written bare, is a number or a literal: a member [`member_before`] and
/// [`member_after`] may pass over.
fn is_bare_scalar(word: &str) -> bool {
    word.bytes().any(|b| b.is_ascii_digit()) || is_literal(word)
}

/// Whether `b` may be part of a member's name that [`member_before`] and [`member_after`] read.
fn is_member_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// How many escaped line breaks or tabs (`\n` at any depth of escaping: a power of two of
/// backslashes) end just before `at`: their length, or 0.
fn escaped_break_before(bytes: &[u8], at: usize) -> usize {
    if at < 2 || !matches!(bytes[at - 1], b'n' | b'r' | b't') {
        return 0;
    }
    let run = backslashes_before(bytes, at - 1);
    if run == 0 || !run.is_power_of_two() {
        return 0;
    }
    run + 1
}

/// Past blanks and escaped line breaks backwards from `at` (pretty JSON inside a JSON string).
fn skip_blanks_back(bytes: &[u8], mut at: usize) -> usize {
    loop {
        if at > 0 && matches!(bytes[at - 1], b' ' | b'\t' | b'\n' | b'\r') {
            at -= 1;
        } else {
            match escaped_break_before(bytes, at) {
                0 => return at,
                len => at -= len,
            }
        }
    }
}

/// Past blanks and escaped line breaks forwards from `at`.
fn skip_blanks_forward(bytes: &[u8], mut at: usize) -> usize {
    loop {
        match bytes.get(at) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => at += 1,
            Some(b'\\') => {
                let run = bytes[at..].iter().take_while(|&&b| b == b'\\').count();
                if run.is_power_of_two() && matches!(bytes.get(at + run), Some(b'n' | b'r' | b't'))
                {
                    at += run + 1;
                } else {
                    return at;
                }
            }
            _ => return at,
        }
    }
}

/// In JSON text, the member that ends just before the `,` before `at` (where a member's
/// opening quote `quote` starts), when its value is a string quoted as its name is, a number
/// or a literal.
fn member_before(text: &str, at: usize, quote: Quote) -> Option<Member> {
    let bytes = text.as_bytes();
    let mut i = skip_blanks_back(bytes, at);
    if i == 0 || bytes[i - 1] != b',' {
        return None;
    }
    i = skip_blanks_back(bytes, i - 1);
    let end = i;
    let floor = i.saturating_sub(REACH);
    let (value, before) = if quote_before(bytes, i) == Some(quote) {
        let close = i - 1 - quote.escape_len();
        // The opening quote, looking back once: a run of backslashes is counted once.
        let mut j = close;
        let open = loop {
            if j <= floor {
                return None;
            }
            j -= 1;
            if bytes[j] == quote.char {
                let run = bytes[floor..j].iter().rev().take_while(|&&b| b == b'\\').count();
                if quote.closes(bytes[j], run) {
                    break j;
                }
                j -= run;
            }
        };
        (open + 1..close, open - quote.escape_len())
    } else {
        let bare = bytes[floor..i].iter().rev().take_while(|&&b| is_bare_byte(b)).count();
        if !is_bare_scalar(&text[i - bare..i]) {
            return None;
        }
        (i - bare..i, i - bare)
    };
    let sign = skip_blanks_back(bytes, before);
    if sign == 0 || bytes[sign - 1] != b':' {
        return None;
    }
    let name_end = skip_blanks_back(bytes, sign - 1);
    if quote_before(bytes, name_end) != Some(quote) {
        return None;
    }
    let close = name_end - 1 - quote.escape_len();
    let word =
        bytes[..close].iter().rev().take(64).take_while(|&&b| is_member_name_byte(b)).count();
    if word == 0 || quote_before(bytes, close - word) != Some(quote) {
        return None;
    }
    let start = close - word - 1 - quote.escape_len();
    Some(Member { name: close - word..close, value, start, end })
}

/// In JSON text, the member after the `,` that follows `at` (where the member before it ends),
/// when its name is quoted with `quote` and its value is a string quoted so, a number or a
/// literal.
fn member_after(text: &str, at: usize, quote: Quote) -> Option<Member> {
    let bytes = text.as_bytes();
    let mut i = skip_blanks_forward(bytes, at);
    if bytes.get(i) != Some(&b',') {
        return None;
    }
    i = skip_blanks_forward(bytes, i + 1);
    let start = i;
    let (q, name_start) = quote_at(bytes, i).filter(|(q, _)| *q == quote)?;
    let word = bytes[name_start..].iter().take(64).take_while(|&&b| is_member_name_byte(b)).count();
    let name = name_start..name_start + word;
    let (closing, after) = quote_at(bytes, name.end).filter(|_| word > 0)?;
    if closing != q {
        return None;
    }
    i = skip_blanks_forward(bytes, after);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    i = skip_blanks_forward(bytes, i + 1);
    let (value, end) = match quote_at(bytes, i) {
        Some((found, open)) if found == quote => {
            let close = closing_quote(bytes, open, quote);
            // Not closed within reach: the rest is the value, and nothing follows it.
            let end = if close >= bytes.len() { close } else { close + quote.escape_len() + 1 };
            (open..close, end)
        }
        Some(_) => return None,
        None => {
            let bare = bytes[i..].iter().take(64).take_while(|&&b| is_bare_byte(b)).count();
            if !is_bare_scalar(&text[i..i + bare]) {
                return None;
            }
            (i..i + bare, i + bare)
        }
    };
    Some(Member { name, value, start, end })
}

/// The lines of YAML beside the one whose key starts at `key` and whose value ends at `end`
/// (see [`sibling_values`]): the values of their value-like keys.
fn yaml_siblings(text: &str, key: usize, end: usize) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    // The name must end its line, as a whole YAML value does (a comment may follow).
    let end = if bytes.get(end) == Some(&b'#') { line_end_plain(bytes, end) } else { end };
    // The name ends its line, or the text, or the string the YAML sits in (a quote): then the
    // break before its line tells how lines are broken.
    let ends = end == bytes.len() || quote_at(bytes, end).is_some();
    let Some((form, next)) = line_break(bytes, end)
        .map(|(f, n)| (f, Some(n)))
        .or_else(|| ends.then(|| break_before(bytes, key)).flatten().map(|f| (f, None)))
    else {
        return found;
    };
    let depth = form.0.trailing_zeros();
    let strings = Strings { enclosing: None, escaped: (form.0 > 0).then_some(depth) };
    let Some(start) = line_start(bytes, key, form, strings) else { return found };
    let content = trim_blanks(bytes, start, key).start;
    let (column, item) = yaml_key_column(bytes, start, content);
    if column != key - start {
        // Something other than indentation or a list item's `- ` comes before the name.
        return found;
    }
    // The entries after, then (unless the name starts its item) those before.
    let lines =
        next.map(|from| content_lines(bytes, from, from.saturating_add(REACH), form, strings));
    for (line, content) in lines.into_iter().flatten() {
        let (col, starts_item) = yaml_key_column(bytes, line, content.start);
        if col < column || (starts_item && col <= column) {
            break;
        }
        if col == column
            && sibling_entry(text, line + col, column, form, strings, &mut found) == Entry::End
        {
            break;
        }
    }
    if item {
        return found;
    }
    let mut line = start;
    let mut read = 0;
    while read < REACH {
        // The previous line ends at the break before this one.
        let Some(prev) = previous_line(bytes, line, form, strings) else { break };
        read += line - prev + 1;
        line = prev;
        let (line_end, _) = line_end(bytes, line, form, strings);
        let content = trim_blanks(bytes, line, line_end);
        if content.is_empty() {
            continue;
        }
        let (col, starts_item) = yaml_key_column(bytes, line, content.start);
        if col < column {
            break;
        }
        if col == column
            && (sibling_entry(text, line + col, column, form, strings, &mut found) == Entry::End
                || starts_item)
        {
            break;
        }
    }
    found
}

/// The form of the line break before the line of the YAML key at `key` (after its indentation
/// and a list item's `- `); the start of the text counts as a newline.
fn break_before(bytes: &[u8], key: usize) -> Option<Break> {
    let p =
        key - bytes[..key].iter().rev().take_while(|&&b| matches!(b, b' ' | b'\t' | b'-')).count();
    match p.checked_sub(1).map(|i| bytes[i]) {
        None | Some(b'\n' | b'\r') => Some(Break(0)),
        Some(b'n' | b'r') => {
            let run = backslashes_before(bytes, p - 1);
            (run > 0 && run.is_power_of_two()).then_some(Break(run))
        }
        _ => None,
    }
}

/// Where a comment that starts at `at` ends: at a line break, written or escaped.
fn line_end_plain(bytes: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\r' => return i,
            b'\\' => {
                // A run of backslashes is looked at once: a break if `n` or `r` follows.
                let run = bytes[i..].iter().take_while(|&&b| b == b'\\').count();
                if line_break(bytes, i).is_some() {
                    return i;
                }
                i += run;
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The column of the first YAML key on the line that starts at `start`, whose first character
/// that is not blank is at `content`, and whether a list item's `- ` comes before it.
fn yaml_key_column(bytes: &[u8], start: usize, content: usize) -> (usize, bool) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let rest = &bytes[content..];
    if rest.first() == Some(&b'-') && rest.get(1).is_some_and(blank) {
        let k = 1 + rest[1..].iter().take_while(|b| blank(b)).count();
        (content + k - start, true)
    } else {
        (content - start, false)
    }
}

/// What a line at a mapping's column is (see [`sibling_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Another entry (`note: …`), or a value-like one whose value was taken.
    Sibling,
    /// Another `name`/`key` (a mapping holds one), or a line that is no `key:` entry (prose, a
    /// `---` between documents): the mapping ends before it.
    End,
}

/// One line of the mapping at `column`, whose key starts at `at`: the value of a value-like
/// key (`value: …`, also `value = …` as HCL writes it) added to `found`.
fn sibling_entry(
    text: &str,
    at: usize,
    column: usize,
    form: Break,
    strings: Strings,
    found: &mut Vec<Range<usize>>,
) -> Entry {
    let bytes = text.as_bytes();
    let (quote, from) = match quote_at(bytes, at) {
        Some((q, after)) => (Some(q), after),
        None => (None, at),
    };
    let word = bytes[from..]
        .iter()
        .take(64)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        .count();
    let key = &text[from..from + word];
    let mut i = from + word;
    if let Some(q) = quote {
        match quote_at(bytes, i) {
            Some((found, after)) if found == q => i = after,
            _ => return Entry::End,
        }
    }
    while matches!(bytes.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if word == 0 || !matches!(bytes.get(i), Some(b':' | b'=')) {
        return Entry::End;
    }
    if PAIR_NAMES.iter().any(|n| key.eq_ignore_ascii_case(n)) {
        return Entry::End;
    }
    if !is_pair_value(key) {
        return Entry::Sibling;
    }
    i += 1;
    while matches!(bytes.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    // In lines broken by escapes (YAML in a string), a value written without quotes also ends
    // at an escaped quote: that of a string the YAML sits in (`said \"…\" twice`).
    let quotes = Strings { escaped: strings.escaped.map(|depth| depth + 1), ..strings };
    let (end, next) = line_end(bytes, i, form, quotes);
    let content = trim_blanks(bytes, i, end);
    let value = if let Some((q, open)) = quote_at(bytes, i) {
        quoted_value(text, open, q, Sep::Compact)
    } else if content.is_empty() || block_indicator(bytes, content.start).is_some() {
        // A block: the lines below indented more than the mapping's keys.
        next.and_then(|next| block_below(bytes, next, column, form, strings))
            .map(|block| content.start.min(block.start)..block.end)
    } else {
        // A double quote that closes a string the value did not open, before a blank or the
        // end, ends it: that of a string the YAML sits in (`said "…" twice`). A quote inside
        // the value (`Xk9'mQ"2`) does not.
        let line = &bytes[content.clone()];
        let odd = line.iter().filter(|&&c| c == b'"').count() % 2 == 1;
        let closing = odd
            .then(|| {
                line.iter().enumerate().position(|(k, &c)| {
                    c == b'"'
                        && matches!(line.get(k + 1), None | Some(b' ' | b'\t' | b',' | b'}' | b']'))
                })
            })
            .flatten();
        let end = closing
            .map_or(content.end, |k| trim_blanks(bytes, content.start, content.start + k).end);
        let value = &text[content.start..end];
        (!value.is_empty() && !is_literal(value)).then_some(content.start..end)
    };
    found.extend(value);
    Entry::Sibling
}

/// The lines from `from` on that are not blank, lines broken by `form` and ending at a quote of
/// `strings` (see [`line_end`]), up to the first that starts at or past `until`: each line's
/// start, and its text without the blanks at either end.
fn content_lines(
    bytes: &[u8],
    from: usize,
    until: usize,
    form: Break,
    strings: Strings,
) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
    let mut next = Some(from);
    std::iter::from_fn(move || loop {
        let line = next.filter(|&line| line < until)?;
        let (end, after) = line_end(bytes, line, form, strings);
        next = after;
        let content = trim_blanks(bytes, line, end);
        if !content.is_empty() {
            return Some((line, content));
        }
    })
}

/// The lines from `from` on that are blank or indented more than `column`, up to the first
/// that is not (YAML's block below a key at that column): their range, or None when the first
/// line that is not blank is not indented more.
fn block_below(
    bytes: &[u8],
    from: usize,
    column: usize,
    form: Break,
    strings: Strings,
) -> Option<Range<usize>> {
    content_lines(bytes, from, from.saturating_add(REACH), form, strings)
        .take_while(|(line, content)| content.start - line > column)
        .map(|(_, content)| content)
        .reduce(|block, line| block.start..line.end)
}

/// Where the line that holds `at` starts, lines being broken by `form` and starting after a
/// quote of `strings`; `None` when its start is more than [`REACH`] bytes back.
fn line_start(bytes: &[u8], at: usize, form: Break, strings: Strings) -> Option<usize> {
    let floor = at.saturating_sub(REACH);
    for i in (floor..at).rev() {
        let b = bytes[i];
        let starts = match b {
            b'\n' | b'\r' => true,
            b'n' | b'r' if form.0 > 0 => backslashes_before(bytes, i) == form.0,
            _ if is_quote(char::from(b)) => {
                strings.quote(b, backslashes_before(bytes, i)).is_some()
            }
            _ => false,
        };
        if starts {
            return Some(i + 1);
        }
    }
    (floor == 0).then_some(0)
}

/// Where the line before the one that starts at `start` starts, if a break of `form` (or a
/// newline) ends it.
fn previous_line(bytes: &[u8], start: usize, form: Break, strings: Strings) -> Option<usize> {
    let last = start.checked_sub(1)?;
    let brk = match bytes[last] {
        b'\n' | b'\r' => last,
        b'n' | b'r' if form.0 > 0 && backslashes_before(bytes, last) == form.0 => last - form.0,
        _ => return None,
    };
    line_start(bytes, brk, form, strings)
}

/// Whether a value is the shell's working directory: an absolute path under the environment's
/// `PWD` or `OLDPWD`, written so (an `env` listing, or a JSON object of the environment), not a
/// password under a `pwd` name.
fn is_working_directory(name: &str, value: &str) -> bool {
    matches!(name, "PWD" | "OLDPWD")
        && value.starts_with('/')
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-~+@".contains(&b))
}

/// `null`, `true` or `false`, which no value under a secret name is redacted for.
fn is_literal(value: &str) -> bool {
    ["null", "true", "false", "yes", "no", "on", "off"]
        .iter()
        .any(|w| value.eq_ignore_ascii_case(w))
}

/// The type a parameter or field is annotated with after its name and `:` (`password: str)`,
/// `token: &str,`, `password: Optional[str] = None`, `token: string;`, `key: SecretString }`):
/// a type the languages give text or a secret, maybe wrapped (`&`, `Option<…>`, `[]`, `?`),
/// then what ends an annotation — not a value. `String::from("…")` is a value.
static TYPE_ANNOTATION: LazyLock<Regex> = LazyLock::new(|| {
    compile(concat!(
        r"^(?:&(?:'[a-z]+[ \t]+)?(?:mut[ \t]+)?|\*|\[\]|\?)*",
        r"(?:(?:Option|Optional|Secret|Maybe|Box|Arc|Rc|Vec|List|Nullable|Promise)[<\[])*",
        r"(?:str|string|String|bytes|byte|char|int|integer|number|Number|bool|boolean|Boolean",
        r"|any|unknown|object|Object|dict|Dict|u8|Buffer|Uint8Array|SecretStr|SecretString",
        r"|SecretBytes|Secret|Token|Password|Credentials|None|null|undefined)",
        r"(?:[>\]]|\?|\[\])*[ \t]*(?:[,;)}|=]|->|$|\r|\n)",
    ))
});

/// Whether what follows `name:` at `start` is a type annotation ([`TYPE_ANNOTATION`]).
fn annotates_type(text: &str, start: usize) -> bool {
    let rest = &text[start..];
    let end = rest.char_indices().nth(128).map_or(rest.len(), |(at, _)| at);
    TYPE_ANNOTATION.is_match(&rest[..end])
}

/// The length of the reference to another value that `value` starts with: a variable
/// (`$DB_PASSWORD`, `${DB_PASSWORD}`, `%DB_PASSWORD%`), a template's placeholder
/// (`${{ secrets.TOKEN }}`, `{{ vault_db_password }}`, `{{ .Values.password }}`) or a command's
/// output (`$(gh auth token)`), none of them holding a literal (no quote, no default after
/// `:-`, no `echo`). A `$` word in mixed case and digits (`$ecretPa55`) is no variable.
fn reference_len(value: &str) -> Option<usize> {
    let b = value.as_bytes();
    let inside = |open: usize, close: &str, allowed: &dyn Fn(u8) -> bool| {
        let end = open + value.get(open..)?.find(close)?;
        let content = &value[open..end];
        (!content.trim().is_empty() && content.bytes().all(allowed)).then_some(end + close.len())
    };
    let name_byte = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b' ' | b'\t');
    if value.starts_with("${{") || value.starts_with("{{") {
        let open = if b[0] == b'$' { 3 } else { 2 };
        return inside(open, "}}", &|c| name_byte(c) || matches!(c, b'|' | b'-'));
    }
    if value.starts_with("${") {
        return inside(2, "}", &name_byte);
    }
    if let Some(command) = value.strip_prefix("$(") {
        let command = command.trim_start();
        if command.starts_with("echo") || command.starts_with("printf") {
            return None;
        }
        return inside(2, ")", &|c| name_byte(c) || matches!(c, b'-' | b'/' | b'=' | b':'));
    }
    if let Some(rest) = value.strip_prefix('%') {
        let name = rest.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
        return (name > 0 && rest.as_bytes().get(name) == Some(&b'%')).then_some(name + 2);
    }
    let rest = value.strip_prefix('$')?;
    let name = rest.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
    let word = &rest[..name];
    let one_case = !word.bytes().any(|c| c.is_ascii_lowercase())
        || !word.bytes().any(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    (name > 0 && rest.as_bytes()[0].is_ascii_alphabetic() && one_case).then_some(name + 1)
}

/// Where a call that starts at `start` ends (`name(…)`, a dotted path's, on one line, within
/// [`REACH`]): after its closing bracket, when its arguments hold another `key=` or a literal,
/// or None.
fn call_end(bytes: &[u8], start: usize) -> Option<usize> {
    let name = bytes[start..]
        .iter()
        .take(128)
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
        .count();
    if name == 0 || !bytes[start].is_ascii_alphabetic() || bytes.get(start + name) != Some(&b'(') {
        return None;
    }
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(start + name).take(REACH) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    let inner = &bytes[start + name + 1..i];
                    let keyword =
                        inner.windows(2).any(|w| w[0].is_ascii_alphanumeric() && w[1] == b'=');
                    return keyword.then_some(i + 1);
                }
            }
            b'\n' | b'\r' => return None,
            _ => {}
        }
    }
    None
}

/// Whether `value` stands for a secret in documentation or a template rather than being one:
/// a word in angle or curly brackets (`<your-token>`, `{token}`), a run of `*`, `x` or `.`
/// (`********`, `xxx`), a word that asks for one (`your_api_key_here`, `YOUR-TOKEN`), or a
/// prefix cut short (`sk-...`).
fn is_placeholder(value: &str) -> bool {
    let v = value.trim_matches(['"', '\'']);
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' '))
    };
    let bracketed = [('<', '>'), ('{', '}')].iter().any(|&(open, close)| {
        v.strip_prefix(open).and_then(|v| v.strip_suffix(close)).is_some_and(word)
    });
    let lower = v.to_ascii_lowercase();
    let asks = word(v)
        && (lower.starts_with("your_")
            || lower.starts_with("your-")
            || lower.ends_with("_here")
            || lower.ends_with("-here"));
    let masked = v.len() >= 3 && v.bytes().all(|b| matches!(b, b'*' | b'x' | b'X' | b'.'));
    let cut = (v.ends_with("...") || v.ends_with('…')) && v.len() <= 12;
    bracketed || asks || masked || cut
}

/// Whether an `Authorization` header's value only refers to its credential: a scheme and a
/// reference or placeholder (`Bearer $GITHUB_TOKEN`, `Bearer <token>`, `f'Bearer {token}'`).
fn refers_to_a_credential(value: &str) -> bool {
    let v = value.strip_prefix(['f', 'F']).filter(|v| v.starts_with(['"', '\''])).unwrap_or(value);
    let v = v.trim_matches(['"', '\'']);
    let mut words = v.split_whitespace();
    let (Some(_scheme), Some(credential), None) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    reference_len(credential) == Some(credential.len()) || is_placeholder(credential)
}

/// Whether the line that holds `name_start` opens a block of Python code (`if not password:`,
/// `for secret in secrets:`, `class Secret:`): its first word is a compound statement's.
fn opens_a_block(bytes: &[u8], name_start: usize) -> bool {
    const KEYWORDS: [&str; 13] = [
        "if", "elif", "while", "for", "with", "class", "def", "except", "async", "match", "case",
        "lambda", "else",
    ];
    let from = name_start.saturating_sub(REACH);
    let line = bytes[from..name_start]
        .iter()
        .rposition(|&b| b == b'\n' || b == b'\r')
        .map_or(from, |at| from + at + 1);
    let first = skip_blanks_forward(bytes, line);
    let word_end =
        first + bytes[first..name_start].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    word_end < name_start
        && KEYWORDS.iter().any(|k| bytes[first..word_end].eq_ignore_ascii_case(k.as_bytes()))
}

/// Whether `value` is code that computes a value rather than holds one: a reference
/// ([`reference_len`]) alone, or a call whose arguments hold no literal (`lexer.next_token()?;`,
/// `requests.Session()`, `await getServerSession(authOptions)`, `getpass.getpass()`): text
/// computed when the code runs, which the stored text does not hold.
fn computes_value(value: &str) -> bool {
    static CALL: LazyLock<Regex> = LazyLock::new(|| {
        let path = r"[A-Za-z_$][A-Za-z0-9_]*(?:(?:\.|::|->|\?\.)[A-Za-z_][A-Za-z0-9_]*)*";
        // Arguments: names, operators and nested calls, without quotes; empty, or holding a
        // name (`Summer(2024)` is a password's shape, not a call).
        let args =
            r"\((?:|[^()\x22'`\\]*[A-Za-z_][^()\x22'`\\]*(?:\([^()\x22'`\\]*\)[^()\x22'`\\]*)*)\)";
        compile(&format!(
            r"^(?:(?:await|new|yield|try[!?]?)[ \t]+)?{path}{args}(?:[?!]|(?:\.|::|\?\.){path}{args})*[;,]?$"
        ))
    });
    reference_len(value) == Some(value.len()) || CALL.is_match(value) || looks_up(value)
}

/// Whether `value` is code that reads a secret from elsewhere by its name: a variable or field
/// named as a secret (`api_key`, `self.api_key`, `settings.OPENAI_API_KEY`,
/// `process.env.API_KEY`), or a lookup whose one literal is a name — in capitals, or a secret's
/// (`os.environ['OPENAI_API_KEY']`, `os.getenv("DB_PASSWORD")`, `request.form['password']`,
/// `$_POST['password']`, `config('SECRET_KEY')`, `getpass.getpass('Password: ')`). A literal
/// that is no name (`decrypt("S3cret")`) is a value.
fn looks_up(value: &str) -> bool {
    static LOOKUP: LazyLock<Regex> = LazyLock::new(|| {
        let path =
            r"(?:\$_[A-Z]+|[A-Za-z_$][A-Za-z0-9_]*(?:(?:\.|::|->|\?\.)[A-Za-z_][A-Za-z0-9_]*)*)";
        let key = r#"[ \t]*\\*["'](?P<key>[A-Za-z_][A-Za-z0-9_. :-]{0,63})\\*["'][ \t]*"#;
        compile(&format!(
            r"^(?:await[ \t]+)?{path}(?:[\[(]{key}[\])])?(?:\.[A-Za-z_][A-Za-z0-9_]*\(\))?[;,]?$"
        ))
    });
    let Some(c) = LOOKUP.captures(value) else { return false };
    let is_name = |name: &str| {
        let name = name.trim_end_matches([':', ' ']);
        is_secret_key(name)
            || (name.len() >= 2
                && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
    };
    match c.name("key") {
        Some(key) => is_name(key.as_str()),
        // A name alone: a variable named as a secret, with a separator or a path
        // (`api_key`, `self.token`; `secret` alone may be the word itself).
        None => {
            let path = value.trim_end_matches([';', ',']);
            let last = path.rsplit(['.', ':', '>']).next().unwrap_or(path);
            (path.contains(['.', '_']) || last.bytes().any(|b| b.is_ascii_uppercase()))
                && !path.bytes().any(|b| b.is_ascii_digit() && !path.contains('_'))
                && is_name(last)
        }
    }
}

/// A quoted value whose text begins at `open`: to its closing quote, across lines.
fn quoted_value(text: &str, open: usize, quote: Quote, kind: Sep) -> Option<Range<usize>> {
    // A triple-quoted string (Python's `'''…'''`, `"""…"""`): to the three quotes that close it,
    // or to the end of the text.
    let written = &text[open - quote.escape_len() - 1..open];
    if text[open..].starts_with(&written.repeat(2)) {
        let from = open + 2 * written.len();
        let close = text[from..].find(&written.repeat(3)).map_or(text.len(), |at| from + at);
        return (close > from).then_some(from..close);
    }
    let range = open..closing_quote(text.as_bytes(), open, quote);
    let inner = &text[range.clone()];
    // Without a sign, a quoted credential or pass phrase (several words) counts.
    let phrase = inner.trim().contains([' ', '\t', '\n', '\r']);
    if inner.is_empty() || (kind == Sep::Bare && !looks_like_credential(inner) && !phrase) {
        return None;
    }
    Some(range)
}

/// Where the string opened just before `from` ends: before the quote that closes it (the same
/// character at the same level, see [`Quote`]), across line breaks. A string not closed within
/// [`REACH`] bytes runs to the end of the text, so that no part of it is left.
fn closing_quote(bytes: &[u8], from: usize, quote: Quote) -> usize {
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(from.saturating_add(REACH)).skip(from) {
        #[cfg(test)]
        tests::VALUE_SCAN.with(|scanned| scanned.set(scanned.get() + 1));
        if quote.closes(b, backslashes) {
            return i - quote.escape_len();
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    bytes.len()
}

/// After a quoted name and blanks (`key="ApiKey" value="…"`, as .NET and Java configuration
/// write it), where the value of a `value=` attribute starts.
fn attribute_value(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = bytes.get(at..)?;
    if !rest.get(..5)?.eq_ignore_ascii_case(b"value") {
        return None;
    }
    let blanks =
        |from: usize| from + rest[from..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let sign = blanks(5);
    (rest.get(sign) == Some(&b'=')).then(|| at + blanks(sign + 1))
}

/// After a YAML block indicator at `at` (`|`, `>`, with an indentation digit and a chomping
/// `+`/`-`) and blanks, where the line goes on.
fn block_indicator(bytes: &[u8], at: usize) -> Option<usize> {
    if !matches!(bytes.get(at), Some(b'|' | b'>')) {
        return None;
    }
    let mut i = at + 1;
    while i < at + 3 && matches!(bytes.get(i), Some(b'+' | b'-' | b'1'..=b'9')) {
        i += 1;
    }
    Some(i + bytes[i.min(bytes.len())..].iter().take_while(|&&b| b == b' ' || b == b'\t').count())
}

/// A line break: a newline, or the escape of one inside a string written into text, `\n` in a
/// string, `\\n` in a string in a string, `\\\\n` one level deeper (the number of backslashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Break(usize);

/// The line break at `at` (which no backslash comes just before), and where the next line
/// starts: `\r\n`, `\n`, `\r`, or their escapes at any depth.
fn line_break(bytes: &[u8], at: usize) -> Option<(Break, usize)> {
    let run = bytes.get(at..)?.iter().take_while(|&&b| b == b'\\').count();
    let escaped = |i: usize, c: u8| {
        bytes.get(i..i + run).is_some_and(|r| r.iter().all(|&b| b == b'\\'))
            && bytes.get(i + run) == Some(&c)
    };
    let after = at + run + 1;
    match bytes.get(at + run)? {
        b'\n' if run == 0 => Some((Break(0), after)),
        b'\r' if run == 0 => {
            Some((Break(0), after + usize::from(bytes.get(after) == Some(&b'\n'))))
        }
        b'n' if run.is_power_of_two() => Some((Break(run), after)),
        b'r' if run.is_power_of_two() => {
            Some((Break(run), if escaped(after, b'n') { after + run + 1 } else { after }))
        }
        _ => None,
    }
}

/// The strings that the lines of a value sit in: the one its name opens (`'password:…'`),
/// and for lines broken by an escape, the string of that depth (`\n` in a JSON string is in
/// a string that `"` closes, `\\n` in one that `\"` or `"` closes). Their quotes end the lines.
#[derive(Debug, Clone, Copy)]
struct Strings {
    enclosing: Option<Quote>,
    /// The `"` quotes at this level or below.
    escaped: Option<u32>,
}

impl Strings {
    /// Whether `b` after `backslashes` backslashes closes (or opens) one of the strings, and
    /// how many of those backslashes escape it.
    fn quote(self, b: u8, backslashes: usize) -> Option<usize> {
        let level = backslashes.trailing_ones();
        let quote = Quote { char: b, level };
        let ends = self.enclosing.is_some_and(|q| q.closes(b, backslashes))
            || self.escaped.is_some_and(|l| b == b'"' && level <= l);
        ends.then(|| quote.escape_len())
    }
}

/// The line that starts at `from`: where it ends (a break of the same `form`, a newline, a
/// quote of `strings`, or the end of the text) and where the next line starts, if one does. An
/// escaped form's lines end at a newline too, as its string does.
fn line_end(bytes: &[u8], from: usize, form: Break, strings: Strings) -> (usize, Option<usize>) {
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        #[cfg(test)]
        tests::VALUE_SCAN.with(|scanned| scanned.set(scanned.get() + 1));
        if b == b'\n' || b == b'\r' {
            let next = if form.0 == 0 { line_break(bytes, i).map(|(_, next)| next) } else { None };
            return (i, next);
        }
        if form.0 > 0 && b == b'\\' && backslashes == 0 {
            if let Some((_, next)) = line_break(bytes, i).filter(|(found, _)| *found == form) {
                return (i, Some(next));
            }
        }
        if let Some(escape) = strings.quote(b, backslashes) {
            return (i - escape, None);
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    (bytes.len(), None)
}

/// How many blanks the line that holds `at` starts with, lines being broken by `form` and
/// starting after a quote of `strings` (a string's first line); 0 when its start is more than
/// [`REACH`] bytes back.
fn line_indent(bytes: &[u8], at: usize, form: Break, strings: Strings) -> usize {
    line_start(bytes, at, form, strings)
        .map_or(0, |s| bytes[s..at].iter().take_while(|&&b| b == b' ' || b == b'\t').count())
}

/// How many backslashes come just before `at`.
fn backslashes_before(bytes: &[u8], at: usize) -> usize {
    bytes[..at].iter().rev().take_while(|&&c| c == b'\\').count()
}

/// `from..end` without the blanks at either end.
fn trim_blanks(bytes: &[u8], from: usize, end: usize) -> Range<usize> {
    let blank = |b: &&u8| **b == b' ' || **b == b'\t';
    let start = from + bytes[from..end].iter().take_while(blank).count();
    start..end - bytes[start..end].iter().rev().take_while(blank).count()
}

/// The value of a name whose line ends after its sign (or a YAML block indicator), from the
/// next line that is not blank (`from` is where the next line starts):
/// * a quoted value there (pretty-printed JSON: `"password":` then `"…"` below), to its
///   closing quote;
/// * if that line is indented more than the name's line, it and every line after it that is
///   blank or indented more (a YAML block scalar or nested value, a continued value);
/// * otherwise a single word standing alone on that line (`password=` then `Hunter2`), unless
///   it is the next `key:`/`key=` or holds no letter or digit.
///
/// Lines inside a string written into text end at the string's closing quote.
fn next_line_value(text: &str, from: usize, form: Break, pair: &Pair) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    // An escaped break puts the lines in a string: `\n` (1) at depth 0, `\\n` (2) at 1…
    let depth = form.0.trailing_zeros();
    let strings = Strings { enclosing: pair.enclosing, escaped: (form.0 > 0).then_some(depth) };
    let name_indent = line_indent(bytes, pair.name_start, form, strings);
    let mut line = from;
    let (first, mut next) = loop {
        let (end, next) = line_end(bytes, line, form, strings);
        let content = trim_blanks(bytes, line, end);
        if !content.is_empty() {
            break (content, next);
        }
        line = next?;
    };
    if let Some((quote, open)) = quote_at(bytes, first.start) {
        return quoted_value(text, open, quote, Sep::Compact);
    }
    // A mapping that describes the value rather than holds it: a schema's (`password:` then
    // `type: string`), a file or another secret it is read from (`file: ./db_password.txt`,
    // `valueFrom:`).
    let first_key =
        text[first.clone()].split_once(':').map(|(key, _)| key.trim_matches(['"', '\'']));
    if first_key.is_some_and(|key| DESCRIBING_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))) {
        return None;
    }
    if first.start - line > name_indent {
        let mut end = first.end;
        while let Some(line) = next {
            let (line_end, after) = line_end(bytes, line, form, strings);
            let content = trim_blanks(bytes, line, line_end);
            next = after;
            if content.is_empty() {
                continue;
            }
            if content.start - line <= name_indent {
                break;
            }
            end = content.end;
        }
        return Some(first.start..end);
    }
    let word = &text[first.clone()];
    if word.contains([' ', '\t']) || !word.chars().any(char::is_alphanumeric) {
        return None;
    }
    let word = trim_unopened(word);
    if word.is_empty() || is_literal(word) || key_follows(bytes, first.start) {
        return None;
    }
    Some(first.start..first.start + word.len())
}

/// Where the array or object (JSON, or a YAML flow collection) that opens at `start` ends,
/// after its closing bracket, when that is within [`REACH`] bytes: brackets inside strings
/// (quoted at any depth) do not count.
fn bracketed(bytes: &[u8], start: usize) -> Option<usize> {
    if !matches!(bytes.get(start), Some(b'[' | b'{')) {
        return None;
    }
    let limit = bytes.len().min(start.saturating_add(REACH));
    let mut depth = 0usize;
    let mut i = start;
    while i < limit {
        match bytes[i] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b'"' | b'\'' | b'\\' => {
                // A string (double or single quotes, escaped to any depth) is skipped whole; a
                // run of backslashes is looked at once.
                if let Some((quote, open)) = quote_at(bytes, i).filter(|(q, _)| q.char != b'`') {
                    i = closing_quote(bytes, open, quote) + quote.escape_len() + 1;
                    continue;
                }
                i += bytes[i..].iter().take_while(|&&b| b == b'\\').count().max(1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// An array or object that opens at `start` and ends its line (pretty-printed JSON: `"value": [`
/// and the items below): from the bracket through every line below indented more than the
/// name's line, and the bracket that closes it if the next line starts with it.
fn opened_block(text: &str, start: usize, pair: &Pair) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let close = match bytes.get(start)? {
        b'[' => b']',
        b'{' => b'}',
        _ => return None,
    };
    let after =
        start + 1 + bytes[start + 1..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let (form, next) = line_break(bytes, after)?;
    let depth = form.0.trailing_zeros();
    let strings = Strings { enclosing: pair.enclosing, escaped: (form.0 > 0).then_some(depth) };
    let name_indent = line_indent(bytes, pair.name_start, form, strings);
    let mut end = start + 1;
    for (line, content) in content_lines(bytes, next, usize::MAX, form, strings) {
        if content.start - line <= name_indent {
            if bytes[content.start] == close {
                end = content.start + 1;
            }
            break;
        }
        end = content.end;
    }
    Some(start..end)
}

/// Where the start tag of an element a secret's `name` names ends (after its `>`): a tag named
/// so (`<password>`, `<password type="text">`), or one whose naming attribute has the name as
/// its value (`<string name="api_key">`, `<entry key="db.password">`, `<Environment
/// Variable="API_KEY">`, `quoted`). None for a tag that closes itself (`<add key="ApiKey"
/// value="…"/>`, whose `value` attribute is read as such) or that does not end within 1 KiB.
fn start_tag_end(bytes: &[u8], name: Range<usize>, quoted: bool) -> Option<usize> {
    let named = if quoted {
        names_by_attribute(bytes, name.start)
    } else {
        opens_element(bytes, name.start)
    };
    if !named {
        return None;
    }
    let mut quote = None;
    // After the name's closing quote (and the backslashes that escape it), when it is an
    // attribute's value; backslashes are passed over, as JSON text escapes quotes with them.
    let mut from = name.end;
    if quoted {
        from += bytes[from..].iter().take_while(|&&b| b == b'\\').count() + 1;
    }
    for (i, &b) in bytes.iter().enumerate().skip(from).take(1024) {
        match (quote, b) {
            (_, b'\\') => {}
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'<') => return None,
            (None, b'>') => return (bytes[i - 1] != b'/').then_some(i + 1),
            _ => {}
        }
    }
    None
}

/// Attributes whose value names the element's content (Android's `<string name=…>`, Java's
/// `<entry key=…>`, WiX's `<Environment Variable=…>`); `id` and `for` name a form's field,
/// whose text is its label.
const NAMING_ATTRIBUTES: [&str; 3] = ["name", "key", "variable"];

/// Whether the quoted name at `at` is the value of a [`NAMING_ATTRIBUTES`] attribute inside a
/// start tag: `name="…"` after `<tag`, with no `>` between.
fn names_by_attribute(bytes: &[u8], at: usize) -> bool {
    let Some(mut i) = at.checked_sub(1).filter(|&q| matches!(bytes[q], b'"' | b'\'')) else {
        return false;
    };
    // The quote's escapes (`name=\"api_key\"` in JSON text).
    while i > 0 && bytes[i - 1] == b'\\' {
        i -= 1;
    }
    let blanks_back = |mut i: usize| {
        while i > 0 && matches!(bytes[i - 1], b' ' | b'\t') {
            i -= 1;
        }
        i
    };
    i = blanks_back(i);
    if i == 0 || bytes[i - 1] != b'=' {
        return false;
    }
    let attribute_end = blanks_back(i - 1);
    let mut start = attribute_end;
    while start > 0
        && (bytes[start - 1].is_ascii_alphanumeric()
            || matches!(bytes[start - 1], b'_' | b'-' | b':'))
    {
        start -= 1;
    }
    let attribute = &bytes[start..attribute_end];
    NAMING_ATTRIBUTES.iter().any(|a| attribute.eq_ignore_ascii_case(a.as_bytes()))
        && start > 0
        && matches!(bytes[start - 1], b' ' | b'\t' | b'\n' | b'\r')
        && bytes[..start].iter().rev().take(1024).find(|&&b| b == b'<' || b == b'>') == Some(&b'<')
}

/// Whether the name at `at` opens an XML or HTML element: `<password>`, `<ns:password>`.
fn opens_element(bytes: &[u8], at: usize) -> bool {
    let mut i = at;
    if i > 0 && bytes[i - 1] == b':' {
        i -= 1;
        while i > 0
            && (bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b'.' | b'-'))
        {
            i -= 1;
        }
    }
    i > 0 && bytes[i - 1] == b'<'
}

/// The text of an element whose start tag ends just before `start`: a CDATA section, or what
/// comes before the next tag when that tag closes an element (`<password>…</password>`, not
/// `Option<Token> is …` in code).
fn element_value(text: &str, start: usize) -> Option<Range<usize>> {
    const CDATA: &str = "<![CDATA[";
    let rest = &text[start..];
    if rest.starts_with(CDATA) {
        let open = start + CDATA.len();
        let close = text[open..].find("]]>").map_or(text.len(), |at| open + at);
        return (close > open).then_some(open..close);
    }
    let tag = start + rest.find('<')?;
    if text.as_bytes().get(tag + 1) != Some(&b'/') {
        return None;
    }
    let inner = &text[start..tag];
    let value = inner.trim();
    if value.is_empty() || is_literal(value) {
        return None;
    }
    let from = start + inner.len() - inner.trim_start().len();
    Some(from..from + value.len())
}

/// Whether `bytes` start with `key=value`: a name (a letter or `_`, then name characters), `=`,
/// and a value that starts with neither `=` nor a blank.
fn starts_a_pair(bytes: &[u8]) -> bool {
    let name = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        .count();
    name > 0
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.get(name) == Some(&b'=')
        && bytes.get(name + 1).is_some_and(|b| !matches!(b, b'=' | b' ' | b'\t' | b'\n' | b'\r'))
}

/// Whether another `key=` / `key:` pair starts at `at`, after blanks. The key may be quoted
/// (`"key":`, `\"key\":` in JSON text, at any depth, the same quote on both sides); a `:` that
/// starts `://` is a URL.
fn key_follows(bytes: &[u8], mut at: usize) -> bool {
    #[cfg(test)]
    let from = at;
    let blanks = |at: &mut usize| {
        while bytes.get(*at).is_some_and(|&b| b == b' ' || b == b'\t') {
            *at += 1;
        }
    };
    let quote = |at: usize| -> &[u8] {
        match quote_at(bytes, at) {
            Some((_, after)) => &bytes[at..after],
            None => &[],
        }
    };
    blanks(&mut at);
    let open = quote(at);
    at += open.len();
    if !bytes.get(at).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') {
        return false;
    }
    while bytes
        .get(at)
        .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        at += 1;
    }
    if !open.is_empty() {
        if !bytes[at..].starts_with(open) {
            return false;
        }
        at += open.len();
    }
    blanks(&mut at);
    #[cfg(test)]
    tests::KEY_SCAN.with(|scanned| scanned.set(scanned.get() + (at - from)));
    match bytes.get(at) {
        Some(b'=') => true,
        Some(b':') => !bytes[at + 1..].starts_with(b"//"),
        _ => false,
    }
}

/// `value` without trailing blanks and closing brackets or quotes that it did not open.
fn trim_unopened(value: &str) -> &str {
    let bytes = value.as_bytes();
    let count = |b: u8| bytes.iter().filter(|&&x| x == b).count();
    let opened = [count(b'('), count(b'['), count(b'{')];
    let mut closed = [count(b')'), count(b']'), count(b'}')];
    let mut quotes = [count(b'"'), count(b'\''), count(b'`')];
    let mut end = bytes.len();
    while end > 0 {
        let b = bytes[end - 1];
        let strip = match b {
            b' ' | b'\t' => true,
            b')' | b']' | b'}' => {
                let k = usize::from(b != b')') + usize::from(b == b'}');
                let unopened = closed[k] > opened[k];
                if unopened {
                    closed[k] -= 1;
                }
                unopened
            }
            b'"' | b'\'' | b'`' => {
                let k = usize::from(b != b'"') + usize::from(b == b'`');
                let odd = quotes[k] % 2 == 1;
                if odd {
                    quotes[k] -= 1;
                }
                odd
            }
            _ => false,
        };
        if !strip {
            break;
        }
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    thread_local! {
        /// Bytes [`key_follows`] has looked at on this thread.
        pub(super) static KEY_SCAN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Bytes the shape pass has searched through on this thread: from where each search
        /// started to the end of its match, or of the text.
        pub(super) static SHAPE_SCAN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Bytes values have been read through on this thread, to their ends.
        pub(super) static VALUE_SCAN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Bytes command lines have been read through on this thread (to the reading's bound).
        pub(super) static COMMAND_SCAN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Each pattern the policy scans with keeps its lazy DFA's states within half the cache it
    /// is given ([`DFA_CACHE`]) over varied text: this repository's sources and documents, a
    /// line at a time, as a store hands them over. A pattern whose cache fills is cleared and
    /// rebuilt as it scans, and then falls back to a slower engine: one pattern of them all,
    /// and `SHAPES` with the scheme-less login among its alternatives, each did at the 2 MB
    /// the `regex` crate gives, and made every append several times slower. Counted, not
    /// timed: the DFA reports how often it cleared.
    #[test]
    fn the_policys_patterns_fit_their_lazy_dfa_caches() {
        use regex_automata::hybrid::{dfa, regex::Regex as Lazy};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
        for dir in ["crates/persistence/src", "crates/persistence/src/redact", "crates/audit/src"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("the sources are readable") {
                files.push(entry.expect("a directory entry").path());
            }
        }
        let mut lines = Vec::new();
        for file in files.iter().filter(|f| f.is_file()) {
            let text = std::fs::read_to_string(file).expect("the sources are UTF-8");
            lines.extend(text.lines().map(str::to_owned));
        }
        assert!(lines.len() > 10_000, "only {} lines of text", lines.len());
        let patterns = [
            ("SHAPES", SHAPES_PATTERN.to_owned(), SHAPES_DFA_CACHE),
            ("BARE_LOGIN", BARE_LOGIN_PATTERN.to_owned(), DFA_CACHE),
            ("PGPASS", PGPASS_PATTERN.to_owned(), DFA_CACHE),
            ("NAMES", names_pattern(), DFA_CACHE),
            ("SIBLINGS", siblings_pattern(), DFA_CACHE),
            ("ARGV", argv_pattern(), DFA_CACHE),
            ("ESCAPES", ESCAPES_PATTERN.to_owned(), DFA_CACHE),
        ];
        for (name, pattern, size) in patterns {
            let lazy = Lazy::builder()
                .dfa(dfa::Config::new().cache_capacity(size / 2).minimum_cache_clear_count(None))
                .build(&pattern)
                .expect("the policy's patterns compile");
            let mut cache = lazy.create_cache();
            for line in &lines {
                let _ = lazy.find(&mut cache, line.as_bytes());
            }
            let clears = cache.forward().clear_count() + cache.reverse().clear_count();
            assert_eq!(clears, 0, "{name} cleared half its lazy DFA's cache {clears} times");
        }
    }

    /// A key shape's search reads a bounded stretch past its match: text made of one shape's
    /// prefix over and over (`AKIA…`, a run of letters and digits) is searched in linear time,
    /// as the shape pass steps through it. An alternative that starts with an unbounded run of
    /// those characters (a webhook's host did) kept every search going to the run's end, so
    /// 100 KB of `AKIA` took 2.5 s. Counted, not timed: the lazy DFA reports the bytes it read.
    #[test]
    fn a_key_shapes_search_stops_near_its_match() {
        use regex_automata::hybrid::{dfa, regex::Regex as Lazy};
        use regex_automata::Input;
        let lazy = Lazy::builder()
            .dfa(dfa::Config::new().cache_capacity(DFA_CACHE).minimum_cache_clear_count(None))
            .build(SHAPES_PATTERN)
            .expect("the shapes compile");
        let mut cache = lazy.create_cache();
        let mut read = |text: &str| {
            cache.reset(&lazy);
            let mut at = 0;
            // As the shape pass steps: past a match (taken as a secret) to a little before its
            // end.
            while let Some(m) = lazy.find(&mut cache, Input::new(text).range(at..)) {
                at = (m.start() + 1).max(m.end().saturating_sub(GLUED_REACH));
            }
            cache.forward().search_total_len() + cache.reverse().search_total_len()
        };
        for unit in [
            "AKIA", "ASIA", "A3T1", "AIza", "AKIA1", "ghp_", "xoxb-", "sk-", "eyJ", "SK0", "key-a",
            "glpat-", "LTAI", "AKID",
        ] {
            let (small, large) = (read(&unit.repeat(1000)), read(&unit.repeat(4000)));
            assert!(large <= 5 * small.max(1), "{unit:?}: {small} then {large} bytes read");
        }
    }

    /// Text dense in tool names with nothing that ends a command (blanks and line breaks
    /// written `%20`, `%0A`; a tool's folder before each name) is read in linear time: each
    /// command is read to a bound, so four times the text reads at most about four times as
    /// much. And a chain of dotted tokens with no `:` (JWT-like segments) cannot be a login:
    /// the scheme-less `user:password@` shape bounds its user, so no search runs to the text's
    /// end for it, and a longer user is no login.
    #[test]
    fn text_dense_in_commands_or_dotted_tokens_is_read_in_linear_time() {
        for unit in [
            "curl%20-s%20https%3A%2F%2Fexample.com%2Fa%0A",
            "mysql%20",
            "x/mysql",
            "mysql -u",
            "[\"sshpass\", ",
        ] {
            let scanned = |n: usize| {
                COMMAND_SCAN.with(|c| c.set(0));
                let _ = redact_text(&unit.repeat(n));
                COMMAND_SCAN.with(std::cell::Cell::get)
            };
            let n = 4 * COMMAND_REACH / unit.len();
            let (small, large) = (scanned(n), scanned(4 * n));
            assert!(large <= 5 * small.max(1), "{unit:?}: {small} then {large} bytes read");
        }
        let user = "a".repeat(200);
        assert!(!BARE_LOGIN
            .find_iter(&format!("{user}:S3cretPw9@db.internal"))
            .any(|m| m.start() == 0));
        check(&format!("x {user}:S3cretPw9@db"), &format!("x {user}:S3cretPw9@db"));
        let chain = "eyJhbGciOiJIUzI1NiJ9.".repeat(20_000);
        assert_eq!(redact_text(&chain), REDACTED);
    }

    #[test]
    fn names_inside_values_are_read_in_linear_time_and_none_is_left() {
        // Names packed back to back, each of whose values would run to the end of the text
        // (or its line) and hold every name after it.
        let units = [
            "password=",
            "password:",
            "password=x\"token\":\"",
            "\"password\": \"a token: ",
            "token: x password=",
            "<password>",
            "api_key=a,secret:",
            "Cookie: a=password=",
            "password \"x",
            "password=%3D",
            // Here-documents that no line ends, each inside the one before.
            "sudo -S a <<E\n",
            "cat <<E | chpasswd\n",
        ];
        for unit in units {
            for end in ["Brwzc8tfWGoK", "\nBrwzc8tfWGoK", "\n  Brwzc8tfWGoK\n</password>"] {
                let text = format!("{}{end}", unit.repeat(40_000 / unit.len()));
                VALUE_SCAN.with(|scanned| scanned.set(0));
                let clean = redact_text(&text);
                let scanned = VALUE_SCAN.with(std::cell::Cell::get);
                assert!(
                    scanned <= 2 * (INNER_READS + 2) * text.len() + 4 * REACH,
                    "{unit:?} repeated: {scanned} bytes read for {}",
                    text.len()
                );
                // An element's text is a value only up to the tag that closes it.
                let closed = !unit.starts_with('<') || end.contains("</");
                assert!(!closed || !clean.contains("Brwzc8tfWGoK"), "{unit:?}{end:?}");
                assert_eq!(redact_text(&clean), clean, "{unit:?}{end:?}");
            }
        }
    }

    #[test]
    fn a_login_written_without_a_scheme_goes_and_addresses_stay() {
        for (input, expected) in [
            ("redis-cli -u admin:Cach3Pass@cache:6379", "redis-cli -u [REDACTED]@cache:6379"),
            ("root:s3cr3tPw@tcp(db:3306)/app", "[REDACTED]@tcp(db:3306)/app"),
            ("DSN=app:Tr0ub4dor&3@db.internal/x", "DSN=[REDACTED]@db.internal/x"),
            ("(user:p4ss-w0rd@host)", "([REDACTED]@host)"),
        ] {
            check(input, expected);
        }
        for kept in [
            "email:alice.smith@example.com",
            "mailto:bob1985@example.com",
            "sip:alice42@atlanta.example.com",
            "git@github.com:org/repo.git",
            "meet at 10:30@office",
            "user:Alice@example.com",
            "note: write to ops@example.com",
            "12:30@cafe",
            "note:call@noon",
            "from:bob@example.com",
            "Reviewer:jane.doe@corp.example.com",
            "nginx:1.25@sha256:0123456789abcdef0123456789abcdef",
            "--member=serviceAccount:my-sa@p.iam.gserviceaccount.com",
            "\"group:admins@example.com\"",
            "\"npm:react@18.2.0\"",
            "name:alice@example.com",
            "uid:bob@example.com",
            "principal:alice@EXAMPLE.COM",
            "package:lodash@4.17.21",
            "redis:6379@cache.internal",
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJgggLTAIabcdefghijklmn",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
        // Every user with every password before every host, in every context: a plain
        // password counts too when a host follows, and a user of digits when the password
        // looks like a credential.
        let plain = ["letmein", "postgres", "toor", "123456", "changeme", "abcdefghijkl", "Ab1"];
        let strong = ["Hunter2pw", "Tr0ub4dor&3", "S3cr3t!x", "p4ss-w0rd"];
        let hosts =
            ["db.example.com", "localhost", "10.0.0.1", "[::1]", "db:5432", "tcp(db:3306)/app"];
        let contexts = ["{}", "connect to {} now", "\"{}\"", "{\"url\":\"{}\"}", "DSN={};x=1"];
        let any: Vec<&str> = plain.iter().chain(&strong).copied().collect();
        let logins: [(&[&str], &[&str]); 2] =
            [(&["admin", "postgres", "svc_app", "deploy.bot"], &any), (&["12345", "0"], &strong)];
        // An account's name as the user, before a server no address names.
        for user in ["user", "login", "username"] {
            for host in ["db.example.com:5432/app", "localhost", "10.0.0.1", "[::1]:5432"] {
                let text = format!("{user}:letmein@{host}");
                assert!(!redact_text(&text).contains("letmein"), "{text}");
            }
        }
        for (users, passwords) in logins {
            for user in users {
                for password in passwords {
                    for host in hosts {
                        for context in contexts {
                            let text = context.replace("{}", &format!("{user}:{password}@{host}"));
                            let clean = redact_text(&text);
                            assert!(!clean.contains(&format!(":{password}@")), "{text} -> {clean}");
                            assert!(clean.contains(host), "{text} -> {clean}");
                        }
                    }
                }
            }
        }
    }

    /// The keys of vendors an agent's tools hold (LLM, vector-store and cloud vendors), each
    /// alone, after a name of no secret and inside a sentence, at three depths of JSON
    /// escaping; words that share a prefix with one, inside identifiers, keep every character.
    #[test]
    fn vendor_keys_of_an_agents_tools_go_and_their_prefixes_in_words_stay() {
        let r = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4y5Z6a7B8c9D0e1F2";
        let hex = "0123456789abcdef0123456789abcdef";
        let keys = [
            format!("xai-{}", &r[..48]),
            format!("lsv2_pt_{hex}_{}", &hex[..10]),
            format!("lsv2_sk_{hex}_{}", &hex[..10]),
            format!("pcsk_{}_{}", &r[..6], &r[..40]),
            format!("fw_{}", &r[..24]),
            format!("figd_{}", &r[..40]),
            format!("glc_{}==", &r[..48]),
            format!("napi_{}", &r[..40]),
            format!("rnd_{}", &r[..32]),
            format!("re_{}_{}", &r[..8], &r[..24]),
            format!("secret_{}", &r[..43]),
            format!("ops_eyJ{}", &r[..60]),
            format!("sk.eyJ1{}.{}", &r[..30], &r[..22]),
            format!("AKCp{}", &r[..64]),
            format!("LTAI{}", &r[..20]),
            format!("AKID{}", &r[..32]),
            format!("y0_{}", &r[..56]),
            format!("EAA{}{}", r, &r[..30]),
            format!("FwoGZXIvYXdzE{}", &r[..60]),
            format!("IQoJb3JpZ2luX2Vj{}", &r[..60]),
            format!("access_token$production${}${hex}", &hex[..16]),
            format!("Abc8Q~{}", &r[..34]),
            format!("NRAK-{}", &r[..27]),
            format!("ATATT3x{}", r),
            format!("dp.st.prd.{}", &r[..43]),
        ];
        for key in &keys {
            for text in [key.clone(), format!("value: {key}"), format!("I used {key} to call it")] {
                assert_redacted_escaped(&text, 0..3, &[&key[key.len() - 12..]], &[]);
            }
        }
        for kept in [
            format!("compare_{}_{}", &r[..8], &r[..24]),
            format!("firmwarefw_{}", &r[..24]),
            format!("mysecret_{}", &r[..43]),
            "see docs/secret_sharing.md".to_owned(),
            "re_search and fw_update and rnd_seed".to_owned(),
            "pk.eyJ1IjoibWFwYm94IiwiYSI6ImNpejY4M29iazA2Z2gycXA4N2pmbDZmangifQ.-g_vE53SD2WrJ6tFX7QHmA".to_owned(),
        ] {
            assert_eq!(redact_text(&kept), kept);
        }
    }

    /// A value named by its sibling goes under every pair of member names (CloudFormation's
    /// `ParameterKey`/`ParameterValue`, Elastic Beanstalk's `OptionName`/`Value`, `variable`,
    /// `name`, `key`), in JSON (compact, spaced, in a list), as the AWS CLI's `Key=…,Value=…`
    /// shorthand and as logfmt, at three depths of escaping; the name itself stays (it is no
    /// secret), and so does the value of a pair whose name is no secret's.
    #[test]
    fn a_value_named_by_its_sibling_goes_under_every_pair_of_member_names() {
        const PW: &str = "Hunter2pwXq";
        let pairs = [
            ("ParameterKey", "ParameterValue"),
            ("OptionName", "Value"),
            ("variable", "value"),
            ("name", "value"),
            ("Key", "Value"),
        ];
        for (name_member, value_member) in pairs {
            for secret_name in ["DbPassword", "DB_PASSWORD", "api_token"] {
                let forms = [
                    format!(r#"{{"{name_member}":"{secret_name}","{value_member}":"{PW}"}}"#),
                    format!(r#"[{{"{name_member}": "{secret_name}", "{value_member}": "{PW}"}}]"#),
                    format!("--parameters {name_member}={secret_name},{value_member}={PW} next"),
                    format!("{name_member}={secret_name} {value_member}={PW} level=info"),
                    format!("{name_member}={secret_name},{value_member}=\"{PW}\""),
                ];
                for form in &forms {
                    assert_redacted_escaped(form, 0..3, &[PW], &[secret_name]);
                }
                let plain = format!("{name_member}=InstanceType,{value_member}=t3.micro");
                assert_eq!(redact_text(&plain), plain);
            }
        }
    }

    /// Each command line of `lines` with `password` at its `{}`, quoted three ways, redacted at
    /// three depths of JSON escaping; `{user}{}` is `user:password` as one word (`chpasswd`).
    fn assert_password_lines_redacted(lines: &[&str], password: &str) {
        for line in lines {
            let (line, word) = match line.find("{user}{}") {
                Some(_) => (line.replace("{user}{}", "{}"), format!("alice:{password}")),
                None => ((*line).to_owned(), password.to_owned()),
            };
            for quoted in [word.clone(), format!("'{word}'"), format!("\"{word}\"")] {
                let text = line.replace("{}", &quoted);
                assert_redacted_escaped(&text, 0..3, &[password], &[]);
            }
        }
    }

    /// Passwords on command lines that an adversarial run found kept: `sshpass` after options
    /// that take a word or in a cluster (`-vp`), `SSHPASS=` for `sshpass -e`, a tool's name
    /// with a version (`mysql5.7`), and a password piped into a program that reads it on stdin
    /// (`sudo -S`, `chpasswd`, `passwd --stdin`, a registry's `--password-stdin`), each quoted
    /// three ways and at three depths of JSON escaping; the same commands without a password
    /// keep every word.
    #[test]
    fn passwords_given_to_wrapped_versioned_and_piped_commands_go() {
        const PW: &str = "Zq7xWv93Kp";
        let lines = [
            "sshpass -f ~/.pw -p {} ssh host",
            "sshpass -P assphrase -p {} ssh host",
            "sshpass -d 3 -p {} scp a b:",
            "sshpass -vp {} ssh host",
            "sshpass -ev -p {} ssh host",
            "SSHPASS={} sshpass -e ssh host",
            "mysql5.7 -u root -p{} db",
            "mongosh-2.1 -p {} mongodb://h",
            "echo {} | sudo -S apt update",
            "echo -n {} | sudo -k -S ls",
            "printf '%s\\n' {} | sudo --user=root -S id",
            "echo {} | docker login -u bob --password-stdin ghcr.io",
            "echo {} | helm registry login ghcr.io --password-stdin",
            "echo {user}{} | chpasswd",
            "echo {user}{} | sudo chpasswd",
            "printf '%s' {} | passwd --stdin alice",
            "echo {} | sudo -u root -S id",
            "echo {} | sudo passwd --stdin bob",
            "echo {} | sudo docker login --password-stdin",
            "SSHPASS={} sshpass -e ssh host",
            "echo {} | sudo -Sk ls",
            "echo {} | sudo -SE ls",
            "echo {} | sudo --stdin ls",
            "aws ssm put-parameter --name DB_PASSWORD --value {} --type SecureString",
            "gh secret set DB_PASSWORD --body {}",
        ];
        assert_password_lines_redacted(&lines, PW);
        for kept in [
            "bash: sshpass: command not found",
            "echo $PASSWORD | sudo -S ls",
            "echo \"$DB_PASSWORD\" | docker login --password-stdin",
            "gh pr create --body text",
            "aws ssm get-parameter --name x",
            "apt install -y sshpass=1.09-1",
            "which sshpass: /usr/bin/sshpass",
            "sshpass -f ~/.pw ssh -p 2222 host",
            "echo hello | grep h",
            "echo done | sudo tee /etc/motd",
            "echo $HOME | docker login --help",
            "I installed sshpass and mysql5.7 yesterday",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// Passwords that a previous stop left kept: given as a here-string to a program that reads
    /// one on stdin (a tool's own password flag on the way to the string as well), piped into
    /// `openssl -pass stdin`, the value of an AWS secret or of a Kubernetes secret's literal
    /// (whatever its key), `rabbitmqctl`'s positional password and `net use`'s, before or after
    /// `/user:` — each quoted three ways and at three depths of JSON escaping; the same
    /// commands without a password keep every word.
    #[test]
    fn passwords_in_here_strings_secret_stores_and_positional_arguments_go() {
        const PW: &str = "Zq7xWv93Kp";
        let lines = [
            "sudo -S apt-get install -y nginx <<< {}",
            "sudo -k -S id <<<{}",
            "passwd --stdin bob <<< {}",
            "docker login -u bob --password-stdin ghcr.io <<< {}",
            "sudo docker login --password-stdin <<< {}",
            "chpasswd <<< {user}{}",
            "echo {} | openssl enc -aes-256-cbc -pass stdin -in a",
            "echo {} | openssl rsa -passin fd:0 -in k.pem",
            "echo {} | docker login -u <user> --password-stdin",
            "aws secretsmanager create-secret --name prod/db --secret-string {}",
            "aws secretsmanager put-secret-value --secret-id prod/db --secret-string={}",
            "aws secretsmanager update-secret --secret-id x --secret-string {}",
            "kubectl create secret generic db --from-literal=foo={}",
            "oc create secret generic db --from-literal foo={}",
            "rabbitmqctl add_user bob {}",
            "rabbitmqctl change_password bob {}",
            "net use \\\\srv\\share {} /user:CORP\\bob",
            "net use Z: \\\\srv\\share /user:CORP\\bob {}",
            "NET.EXE use * \\\\srv\\share {}",
        ];
        assert_password_lines_redacted(&lines, PW);
        // A tool's password on the way to a here-string goes too.
        assert_redacted_escaped(
            "sudo -S mysql -pXq81zPw db <<< Zq7xWv93Kp",
            0..3,
            &[PW, "Xq81zPw"],
            &[],
        );
        for kept in [
            "cat <<< \"hello world\"",
            "sudo -S cat <<< $PW",
            "passwd --stdin bob <<< \"$NEWPW\"",
            "echo hi | openssl base64",
            "kubectl create configmap db --from-literal=foo=bar",
            "aws secretsmanager get-secret-value --secret-id prod/db",
            "aws secretsmanager create-secret --name x --secret-string file://s.json",
            "rabbitmqctl list_users",
            "rabbitmqctl add_user bob",
            "net use Z: \\\\srv\\share * /user:CORP\\bob",
            "net use Z: \\\\srv\\share /persistent:no",
            "the net use of \\\\srv paths",
            "net income rose 5% on \\\\srv",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// A call named by a secret's name (`NetworkCredential(…)`, `set_password(…)`) loses every
    /// string among its arguments, wherever the password sits among them: the first string
    /// alone went, which was the user's name, and the password stayed.
    #[test]
    fn every_string_argument_of_a_call_named_by_a_secret_goes() {
        const PW: &str = "Zq8vLm2Rt9Xw4Kp7";
        let calls = [
            "NetworkCredential",
            "new UsernamePasswordCredentials",
            "HTTPBasicAuth",
            "keyring.set_password",
            "setPassword",
        ];
        let arguments = [
            "{q}{PW}{q}",
            "{q}bob{q}, {q}{PW}{q}",
            "{q}svc{q},{q}bob{q},{q}{PW}{q}",
            "{q}{PW}{q}, {q}bob{q}",
            "{q}bob{q}, {q}{PW}{q}, timeout=5",
            "{q}bob{q}, f(1, 2), {q}{PW}{q}",
        ];
        for call in calls {
            for args in arguments {
                for q in ["\"", "'"] {
                    let text = format!("{call}({});", args.replace("{q}", q).replace("{PW}", PW));
                    assert_redacted_escaped(&text, 0..3, &[PW], &[call, ");"]);
                }
            }
        }
        // A string after other arguments goes too; a call without one keeps its text.
        assert_redacted_escaped(
            &format!("NetworkCredential(user, \"{PW}\");"),
            0..3,
            &[PW],
            &["user, "],
        );
        for kept in ["getPassword(name)", "token(count, limit)", "password()"] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// Passwords an adversarial run found kept, each class by one rule: a here-document fed to
    /// a program that reads a password on stdin (or piped from `cat`), a login's call with the
    /// user and password as positional strings, a property list's `<key>` naming the next
    /// element, and any secret written with HTML or XML character references — each in many
    /// spellings and at three depths of JSON escaping; the look-alikes keep every word.
    #[test]
    fn here_documents_login_calls_property_lists_and_character_references_hide_no_secret() {
        const PW: &str = "Zq7xWv93Kp";
        for reader in [
            "sudo -S apt-get install -y nginx",
            "sudo -k -S id",
            "passwd --stdin bob",
            "chpasswd",
            "sudo chpasswd",
            "docker login -u bob --password-stdin ghcr.io",
            "openssl enc -aes-256-cbc -pass stdin -in a",
        ] {
            for (open, close) in [
                ("<<EOF", "EOF"),
                ("<< 'EOF'", "EOF"),
                ("<<\"END\"", "END"),
                ("<<-EOF", "\t\tEOF"),
                ("<<EOF", "NOT_THE_END"),
            ] {
                for form in [
                    "{reader} {open}\n{pw}\n{close}\nls -la",
                    "cat {open} | {reader}\n{pw}\n{close}\nls -la",
                ] {
                    let pw = if reader.contains("chpasswd") {
                        format!("bob:{PW}")
                    } else {
                        PW.to_owned()
                    };
                    let pw = if open.starts_with("<<-") { format!("\t{pw}") } else { pw };
                    let text = form
                        .replace("{reader}", reader)
                        .replace("{open}", open)
                        .replace("{pw}", &pw)
                        .replace("{close}", close);
                    // A document that no line ends runs to the end of the text.
                    let kept: &[&str] = if close == "NOT_THE_END" { &[] } else { &["ls -la"] };
                    assert_redacted_escaped(&text, 0..3, &[PW], kept);
                }
            }
        }
        for call in [
            "client.login({q}bob{q}, {q}{PW}{q})",
            "smtp.login({q}bob@example.com{q}, {q}{PW}{q})",
            "ftp.login({q}bob.smith{q}, {q}{PW}{q})",
            "await login(page, {q}admin{q}, {q}{PW}{q})",
            "DriverManager.getConnection({q}jdbc:mysql://db/app{q}, {q}bob{q}, {q}{PW}{q})",
            "DriverManager.getConnection(url, {q}bob{q}, {q}{PW}{q})",
            "conn.simple_bind_s({q}cn=admin,dc=example,dc=com{q}, {q}{PW}{q})",
            "pymysql.connect({q}localhost{q}, {q}bob{q}, {q}{PW}{q}, {q}app{q})",
            "client.connect({q}db.example.com{q}, 22, {q}bob{q}, {q}{PW}{q})",
            "ftplib.FTP({q}ftp.example.com{q}, {q}bob{q}, {q}{PW}{q})",
            "mysqli_connect({q}127.0.0.1{q}, {q}root{q}, {q}{PW}{q})",
            "pg_connect({q}db.example.com{q}, {q}root{q}, {q}{PW}{q})",
            "new PDO($dsn, {q}root{q}, {q}{PW}{q})",
            "new Sequelize({q}app{q}, {q}root{q}, {q}{PW}{q}, {{ dialect: {q}mysql{q} }})",
        ] {
            for q in ["\"", "'"] {
                let text = call.replace("{q}", q).replace("{PW}", PW);
                assert_redacted_escaped(&text, 0..3, &[PW], &["("]);
            }
        }
        for names in ["Password", "api_token", "APIKey", "db.password"] {
            for gap in ["", "\n", "\n\t", "\r\n  "] {
                for element in ["string", "data"] {
                    let text = format!(
                        "<dict>\n<key>{names}</key>{gap}<{element}>{PW}</{element}>\n<key>User</key><string>bob</string>\n</dict>"
                    );
                    assert_redacted_escaped(&text, 0..3, &[PW], &["<string>bob</string>"]);
                }
            }
        }
        let secrets = [
            "&lt;password&gt;{PW}&lt;/password&gt;",
            "&amp;lt;password&amp;gt;{PW}&amp;lt;/password&amp;gt;",
            "&lt;add key=&quot;ApiKey&quot; value=&quot;{PW}&quot;/&gt;",
            "{&quot;password&quot;:&quot;{PW}&quot;,&quot;user&quot;:&quot;bob&quot;}",
            "{&#34;password&#34;: &#34;{PW}&#34;}",
            "&#112;assword={PW} next",
            "&#x70;assword: {PW}",
            "&#X0070;assword={PW}",
            "password&#61;{PW}",
            "https&#58;//bob:{PW}@db.example.com/",
            "&lt;key&gt;password&lt;/key&gt;&lt;string&gt;{PW}&lt;/string&gt;",
        ];
        for text in secrets {
            assert_redacted_escaped(&text.replace("{PW}", PW), 0..3, &[PW], &[]);
        }
        for kept in [
            "cat <<EOF > notes.txt\nhello world\nEOF",
            "python3 <<EOF\nprint(1)\nEOF",
            "sudo -S cat <<EOF\n$PW\nEOF",
            "chpasswd <<'END'",
            "passwd >/dev/null 2>&1",
            "signal.connect(\"clicked\", \"on_click\")",
            "socket.connect(\"/tmp/app.sock\")",
            "sqlite3.connect(\"app.db\")",
            "redis.connect(\"localhost\", 6379)",
            "login(user, password)",
            "the login (\"home page\", \"settings\") flow",
            "<key>User</key><string>bob</string>",
            "<key>password_min_length</key><integer>12</integer>",
            "<key>secret</key><true/><key>x</key><string>kept</string>",
            "Tom &amp; Jerry use a token budget",
            "&lt;token&gt; is a placeholder; a &lt; b &amp;&amp; c &gt; d",
            "AT&amp;T password reset flow",
            "&#128512; emoji &#8212; dash &nbsp;",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// Private keys an adversarial run found kept, because no PEM header marks them: PuTTY's key
    /// files (from their first line to the MAC, or to the end of the text) and the private
    /// members of JSON Web Keys (`d`, the RSA primes and exponents, a symmetric key's `k`), as
    /// parsed JSON and as JSON text at three depths; a public key and a `d` outside a key stay.
    #[test]
    fn putty_key_files_and_json_web_keys_lose_their_private_parts() {
        const PRIVATE: &str = "AAAAIQDZqPrivKeyMaterial0123456789abcdef";
        for version in ["2", "3"] {
            for end in ["Private-MAC: 5b1e0a9f\n", ""] {
                let text = format!(
                    "PuTTY-User-Key-File-{version}: ssh-ed25519\nEncryption: none\n\
                     Comment: deploy\nPublic-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIF\nAAAAB3\n\
                     Private-Lines: 1\n{PRIVATE}\n{end}"
                );
                assert_redacted_escaped(&text, 0..3, &[PRIVATE, "5b1e0a9f"], &[]);
            }
        }
        const D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
        let keys = [
            json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcv", "d": D}),
            json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9", "d": D}),
            json!({"kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQ", "e": "AQAB", "d": D, "p": D, "q": D, "dp": D, "dq": D, "qi": D}),
            json!({"kty": "oct", "alg": "HS256", "k": D}),
            json!({"keys": [{"kid": "1", "kty": "RSA", "e": "AQAB", "d": D}]}),
        ];
        for key in keys {
            let redacted = redacted_json(&key);
            assert!(!redacted.to_string().contains(D), "{redacted}");
            assert!(redacted.to_string().contains("kty"), "{redacted}");
            for text in [key.to_string(), serde_json::to_string_pretty(&key).unwrap()] {
                assert_redacted_escaped(&text, 0..3, &[D], &["kty"]);
            }
        }
        for kept in [
            json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            json!({"kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQ", "e": "AQAB", "kid": "2024"}),
            json!({"d": "2024-11-27T10:00:00Z", "p": "page two of the report", "q": "what is a lease"}),
        ] {
            assert_eq!(redacted_json(&kept), kept);
            assert_eq!(redact_text(&kept.to_string()), kept.to_string());
        }
        for kept in ["PuTTY is a terminal; Private-Lines: is a header", "the d: \"x\" and p: \"y\""]
        {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// Code that an adversarial run saw destroyed keeps its words: a parameter's or field's type
    /// after `name:` (in Python, Rust, TypeScript, Kotlin…), a reference to another value (a
    /// variable, a template's placeholder, a command's output) and a call whose arguments hold
    /// no literal, after every secret name and sign, at three depths; the same shapes holding a
    /// literal still lose it, and so does what a script types at a password prompt.
    #[test]
    fn types_references_and_calls_keep_their_words_and_literals_still_go() {
        let kept = [
            "def login(username: str, {name}: str) -> bool:",
            "fn authenticate(&self, {name}: &str) -> Result<User>",
            "fn f<'a>({name}: &'a str, n: usize)",
            "{name}: str = Field(..., min_length=12)",
            "{name}: Optional[str] = None",
            "interface Props { {name}: string; user: User }",
            "function f({name}: string, n: number): void {}",
            "pub struct Login { pub {name}: SecretString, }",
            "val {name}: String? = null",
            "{name}: string | undefined;",
            "let {name} = lexer.next_token()?;",
            "{name} = requests.Session()",
            "const {name} = await getServerSession(authOptions)",
            "{name} = getpass.getpass()",
            "{name}: ${{ secrets.GITHUB_TOKEN }}",
            "{name}: \"{{ vault_db_password }}\"",
            "{name}: '{{ .Values.db.password }}'",
            "{name}=${DB_PASSWORD}",
            "{name}=$DB_PASSWORD",
            "{name}=\"$DB_PASSWORD\"",
            "export {name}=$(gh auth token)",
            "set {name}=%DB_PASSWORD%",
            "MYSQL_ALLOW_EMPTY_{name}=yes",
            "{name}=off",
            "child.expect('{name}:')\nchild.sendline(secret_value)",
        ];
        for name in ["password", "token", "api_key", "DB_PASSWORD", "session"] {
            for line in kept {
                let text = line.replace("{name}", name);
                for depth in 0..3 {
                    let escaped = json_escaped(&text, depth);
                    assert_eq!(redact_text(&escaped), escaped, "{text:?} at depth {depth}");
                }
            }
        }
        const PW: &str = "Zq7xWv93Kp";
        let secrets = [
            "{name}: strong{PW}",
            "{name}: String{PW}",
            "{name}: ${PW}",
            "{name}: Summer(2024){PW}",
            "{name}=${DB_PASSWORD:-{PW}}",
            "{name}=$(echo {PW})",
            "{name}=$(printf '%s' {PW})",
            "{name}: \"{{ '{PW}' }}\"",
            "{name} = decrypt(\"{PW}\")",
            "{name}: String::from(\"{PW}\"),",
            "{name}: str = \"{PW}\"",
            "child.expect('Password:')\nchild.sendline('{PW}')",
            "p.expect(\"Enter passphrase for key\")\np.sendline(\"{PW}\")",
            "expect \"Password:\"\nsend \"{PW}\\r\"",
        ];
        for name in ["password", "token", "api_key", "DB_PASSWORD"] {
            for line in secrets {
                let text = line.replace("{name}", name).replace("{PW}", PW);
                assert_redacted_escaped(&text, 0..3, &[PW], &[]);
            }
        }
    }

    /// More forms an adversarial run found stored verbatim, each class by one rule: strings
    /// Python triple-quotes, a tuple after a sign, a YAML list's item after a flag naming a
    /// secret, a Terraform variable's default, `<-` and `to` as signs, a prompt's `[current]`
    /// before its sign, the short names `psk` and `PAT`, names in other languages, and tools'
    /// passwords (SQL's `SET PASSWORD`, `ConvertTo-SecureString`, an Oracle JDBC logon, `net
    /// user`, `wpa_passphrase`, `vault kv put`, `az … set --value`, `AUTH PLAIN`, programs that
    /// read a secret on stdin) — each at three depths of JSON escaping.
    #[test]
    fn quoted_listed_declared_and_tool_given_secrets_of_many_languages_go() {
        const PW: &str = "Zq7xWv93Kp";
        let texts = [
            "DB_PASSWORD = '''{PW}'''",
            "DB_PASSWORD = \"\"\"\n{PW}\n\"\"\"",
            "requests.get(url, auth=(\"bob\", \"{PW}\"))",
            "httpx.Client(auth=('bob', '{PW}'))",
            "command:\n  - redis-server\n  - --requirepass\n  - {PW}",
            "args:\n - --db-password\n - \"{PW}\"\n - --port\n - \"5432\"",
            "variable \"db_password\" {\n  type    = string\n  default = \"{PW}\"\n}",
            "mapOf(\"password\" to \"{PW}\")",
            "password <- \"{PW}\"",
            "AWS Secret Access Key [None]: {PW}",
            "Enter password [****abcd]: {PW}",
            "GH_PAT={PW}",
            "AZURE_DEVOPS_EXT_PAT: {PW}",
            "psk=\"{PW}\"",
            "wifi_psk: {PW}",
            "requirepass {PW}",
            "masterauth {PW}",
            "Passwort: {PW}",
            "contraseña: {PW}",
            "пароль: {PW}",
            "密码: {PW}",
            "{\"name\": \"PHPSESSID\", \"value\": \"{PW}\"}",
            "SET PASSWORD FOR 'bob'@'localhost' = '{PW}';",
            "set password = password('{PW}')",
            "$p = ConvertTo-SecureString \"{PW}\" -AsPlainText -Force",
            "New-LocalUser bob -Password (ConvertTo-SecureString '{PW}' -AsPlainText -Force)",
            "jdbc:oracle:thin:scott/{PW}@db.example.com:1521:ORCL",
            "net user administrator {PW} /add",
            "wpa_passphrase HomeWifi {PW}",
            "vault kv put secret/db username=bob password={PW}",
            "vault write auth/userpass/users/bob password={PW}",
            "az keyvault secret set --vault-name kv --name db --value {PW}",
            "AUTH PLAIN {PW}AGJvYgB=",
            "echo -n {PW} | cryptsetup luksOpen /dev/sdb1 data",
            "printf {PW} | docker secret create db_pw -",
            "echo {PW} | gcloud secrets versions add db --data-file=-",
        ];
        for text in texts {
            assert_redacted_escaped(&text.replace("{PW}", PW), 0..3, &[PW], &[]);
        }
        for kept in [
            "args:\n - --port\n - \"5432\"\n - --verbose",
            "variable \"region\" {\n  default = \"eu-west-1\"\n}",
            "pat = re.compile(pattern)",
            "the password to reset is in the vault",
            "result <- fetch(token)",
            "net user bob /delete",
            "net user",
            "vault kv get secret/db",
            "AWS Access Key ID [None]:",
            "mapOf(\"user\" to \"bob\")",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// A second adversarial run's forms, each class by one rule: keys given to signing and
    /// encryption calls (whatever the depth of the argument, algorithm names kept), a `user:pw`
    /// made into a Basic credential, a login whose user or host is a name, base64 of a PEM key,
    /// crates.io/NuGet keys and extended private keys, more programs reading a password on
    /// stdin, openssl's `-k` only as its own word; and what refers to a secret or opens a block
    /// of code keeps its words: a header naming its credential by reference or placeholder,
    /// placeholders, `if not password:`, `auth::Token`, a path's `/auth`.
    #[test]
    fn key_calls_basic_strings_and_login_names_go_while_references_placeholders_and_code_stay() {
        const PW: &str = "Zq7xWv93Kp";
        let texts = [
            "jwt.sign(payload, '{PW}')",
            "jwt.encode(payload, '{PW}', algorithm='HS256')",
            "crypto.createHmac('sha256', '{PW}').update(body)",
            "hmac.new(b'{PW}', msg, hashlib.sha256)",
            "token.SignedString([]byte(\"{PW}\"))",
            "new SecretKeySpec(\"{PW}\".getBytes(), \"AES\")",
            "Jwts.builder().signWith(SignatureAlgorithm.HS256, \"{PW}\")",
            "Fernet(b'{PW}')",
            "new ethers.Wallet('0x{PW}')",
            "echo -n 'admin:{PW}' | base64",
            "printf '%s' 'bob:{PW}' | base64",
            "btoa(\"bob:{PW}\")",
            "base64.b64encode(\"bob:{PW}\".encode())",
            "Buffer.from(\"bob:{PW}\").toString(\"base64\")",
            "server.login(sender_email, '{PW}')",
            "smtp.login(os.environ['SMTP_USER'], '{PW}')",
            "ssh.connect(host, 22, 'bob', '{PW}')",
            "$mysqli = new mysqli('localhost', 'root', '{PW}', 'db');",
            "tls.key: LS0tLS1CRUdJTi{PW}BSU0EgUFJJVkFURSBLRVktLS0tLQ",
            "echo -e '{PW}\\n{PW}' | passwd bob",
            "echo {PW} | kinit bob@REALM",
            "echo {PW} | gpg --batch --passphrase-fd 0 -d f.gpg",
            "echo {PW} | npm login --auth-type=legacy",
            "openssl enc -aes-256-cbc -k {PW} -in a",
            "ApiKey(Authorization: Digest username=\"a\" response=\"{PW}\" \n\",\"ok\":1}",
            "SECRET_KEY = config('SECRET_KEY', default='{PW}')",
            "SECRET_KEY = env('SECRET_KEY', default='{PW}')",
            "password = decrypt(\"{PW}\")",
            "password = vault.{PW}",
            "api_key = os.environ.get('OPENAI_API_KEY', '{PW}')",
            "密码：{PW}",
            "パスワード：{PW}",
            "密碼: {PW}",
            "şifre: {PW}",
            "public string Password { get; set; } = \"{PW}\";",
            "public string ApiKey { get; } = \"{PW}\";",
            "echo {PW} > /run/secrets/db_password",
            "echo -n '{PW}' > secrets/db_password.txt",
            "printf '%s' '{PW}' >> ~/.vault_pass.txt",
        ];
        for text in texts {
            assert_redacted_escaped(&text.replace("{PW}", PW), 0..3, &[PW], &[]);
        }
        for shape in [
            "cioAbCdEfGhIjKlMnOpQrStUvWxYz012345",
            "oy2abcdefghijklmnopqrstuvwxyz0123456789abcdefg",
        ] {
            assert_redacted_escaped(
                &format!("cargo login {shape}"),
                0..3,
                &[shape],
                &["cargo login "],
            );
        }
        let kept = [
            "curl -H \"Authorization: Bearer $GITHUB_TOKEN\" https://api.github.com",
            "Authorization: Bearer <token>",
            "Authorization: Bearer YOUR_TOKEN",
            "headers = {'Authorization': f'Bearer {token}'}",
            "token: <your-token-here>",
            "API_KEY=your_api_key_here",
            "password: '********'",
            "OPENAI_API_KEY=sk-...",
            "api_key: xxx",
            "if not password:\n    return None",
            "for secret in secrets:\n    print(secret.name)",
            "class Secret:\n    pass",
            "use crate::auth::Token;",
            "Token::Ident(name) => name",
            "ok  \tgithub.com/acme/api/auth\t0.512s",
            "openssl req -new -key server.key -out server.csr",
            "jwt.decode(token, options={\"verify_signature\": False})",
            "crypto.createHmac('sha256', secret)",
            "signal.connect(\"clicked\", \"on_click\")",
            "api_key = os.environ['OPENAI_API_KEY']",
            "password = os.getenv(\"DB_PASSWORD\")",
            "password = request.form['password']",
            "$password = $_POST['password'];",
            "api_key = settings.OPENAI_API_KEY",
            "self.api_key = api_key",
            "client = OpenAI(api_key=api_key)",
            "password = getpass.getpass('Password: ')",
            "const API_KEY = process.env.API_KEY;",
            "public string Password { get; set; }",
            "echo hello > notes.txt",
            "echo $DB_PASSWORD > /run/secrets/db_password",
            "properties:\n  password:\n    type: string\n    minLength: 8",
            "env:\n  - name: X\n    password:\n      valueFrom:\n        secretKeyRef:\n          name: db",
        ];
        for text in kept {
            for depth in 0..3 {
                let escaped = json_escaped(text, depth);
                assert_eq!(redact_text(&escaped), escaped, "{text:?} at depth {depth}");
            }
        }
    }

    /// What an adversarial run found redacted that held no secret: a key's prefix glued to
    /// words in camel case (`risk-AssessmentFramework…`), Mailgun's `key-` as a hyphenated
    /// name's last word, keys that start with a secret's name and end with a word about it
    /// (`password_min_length`, `secretsFound`: JSON judged them secret, text did not), the
    /// environment's working directory. Each stays as text and as JSON; the look-alikes that
    /// are secrets still go.
    #[test]
    fn words_that_only_look_like_secrets_keep_their_values() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        for kept in [
            "risk-AssessmentFrameworkDocument2024Q4".to_owned(),
            "task-ReleaseNotesForVersion2024Draft".to_owned(),
            "desk_live_ScheduleOverviewPage2025".to_owned(),
            format!("cache-key-{md5}"),
            format!("etag.key-{md5}"),
            "PWD=/home/bob/project".to_owned(),
            "OLDPWD=/srv/app-1.2/releases".to_owned(),
        ] {
            for depth in 0..3 {
                let text = json_escaped(&kept, depth);
                assert_eq!(redact_text(&text), text);
            }
        }
        for key in [
            "password_min_length",
            "secretsFound",
            "passwordChangedAt",
            "secret_version",
            "secret_path",
            "secretName",
            "password_file",
            "passwordPolicy",
        ] {
            let mut value = json!({key: 12, "b": {key: "/etc/app/pw.txt"}});
            let before = value.clone();
            redact_json(&mut value);
            assert_eq!(value, before, "{key}");
            let text = before.to_string();
            assert_eq!(redact_text(&text), text);
        }
        let md5_key = format!("key-{md5}");
        for (text, secret) in [
            (format!("ENV_KEY_{md5_key}"), md5_key.as_str()),
            (format!("id {md5_key}"), md5_key.as_str()),
            ("PWD=Xk9vQ2pLm7".to_owned(), "Xk9vQ2pLm7"),
            ("DB_PWD=/Xk9vQ2pLm7".to_owned(), "/Xk9vQ2pLm7"),
            ("pwd=/home/bob".to_owned(), "/home/bob"),
        ] {
            assert_redacted_escaped(&text, 0..3, &[secret], &[]);
        }
        let env = json!({"PWD": "/home/bob/project", "OLDPWD": "/srv/app-1.2"});
        let mut value = env.clone();
        redact_json(&mut value);
        assert_eq!(value, env);
        for (key, secret) in
            [("PWD", "Xk9vQ2pLm7"), ("pwd", "/home/bob"), ("DB_PWD", "/Xk9vQ2pLm7")]
        {
            let mut value = json!({key: secret});
            redact_json(&mut value);
            assert_eq!(value, json!({key: REDACTED}), "{key}");
        }
        for key in ["passwordHash", "secretValue", "secret_id", "password", "secret"] {
            let mut value = json!({key: "Xk9vQ2pLm7"});
            redact_json(&mut value);
            assert_eq!(value, json!({key: REDACTED}), "{key}");
        }
    }

    /// An element's text is a secret when the element names one: by its tag, attributes or
    /// not (`<password type="text">`), or by a naming attribute's value (Android's `<string
    /// name="api_key">`, Java's `<entry key="db.password">`, WiX's `<Environment
    /// Variable="API_KEY">`), quoted either way, beside other attributes, its text plain, in
    /// CDATA or on its own lines, at three depths of JSON escaping. A form's field named so
    /// (`<label for="password">`, `<input name="password">`) and an element another name
    /// names keep their text.
    #[test]
    fn the_text_of_an_element_named_by_its_tag_or_a_naming_attribute_goes() {
        const PW: &str = "Zq8vLm2Rt9Xw4Kp7";
        let tags = [
            "<password type=\"text\">{}</password>",
            "<ns:secret a='1' b=\"2\">{}</ns:secret>",
            "<string name=\"api_key\">{}</string>",
            "<string translatable=\"false\" name='db_password'>{}</string>",
            "<string name=\"token\" translatable=\"false\">{}</string>",
            "<entry key=\"db.password\">{}</entry>",
            "<Environment Variable=\"API_KEY\" Action=\"set\">{}</Environment>",
            "<property NAME=\"password\">{}</property>",
        ];
        for tag in tags {
            for content in [PW.to_owned(), format!("<![CDATA[{PW}]]>"), format!("\n    {PW}\n  ")] {
                let text = tag.replace("{}", &content);
                assert_redacted_escaped(&text, 0..3, &[PW], &["</"]);
            }
        }
        for kept in [
            "<string name=\"app_name\">My App</string>",
            "<label for=\"password\">Password</label>",
            "<label id=\"token\">Your token</label>",
            "<input name=\"password\" type=\"password\"><span>Show</span>",
            "<entry key=\"db.url\">jdbc:postgresql://db/app</entry>",
            "a <password> field keeps <b>this</b>",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    /// A tool's message that gives a secret in a sentence (`Your password is: …`, `the token
    /// was: …`) is read as `password is …`: a value that looks like a credential goes, prose
    /// after it (`the password is: required`) stays; in any case, at three depths.
    #[test]
    fn a_secret_given_in_a_sentence_with_a_colon_goes_and_prose_stays() {
        const PW: &str = "Zq8vLm2Rt9Xw4Kp7";
        for name in ["password", "admin password", "API token", "secret"] {
            for said in ["is:", "was:", "IS:"] {
                let text = format!("Your {name} {said} {PW}");
                assert_redacted_escaped(&text, 0..3, &[PW], &["Your "]);
                for prose in ["required", "too short", "not set"] {
                    let kept = format!("The {name} {said} {prose}");
                    assert_eq!(redact_text(&kept), kept);
                }
            }
        }
    }

    /// A value written after a secret's name without a sign is judged as a credential: a URL
    /// and, after any name but a password's, lower-case words joined by `-`, `_` or `.` (a
    /// command's or a setting's name) are none; a pass phrase after a password's name and a
    /// long run of letters still go.
    #[test]
    fn a_command_or_an_address_after_a_secrets_name_stays_and_a_pass_phrase_goes() {
        for kept in [
            "gcloud auth activate-service-account --key-file k.json",
            "gh auth refresh-credentials-with-scopes",
            "grant_type=client_credentials https://example.com/token",
            "curl -d 'grant_type=client_credentials' https://example.com/token",
            "see token https://example.com/docs/tokens",
            "the credential ftp://files.example.com/pub",
        ] {
            for depth in 0..3 {
                let text = json_escaped(kept, depth);
                assert_eq!(redact_text(&text), text);
            }
        }
        for (text, secret) in [
            ("password correct-horse-battery-staple", "correct-horse-battery-staple"),
            ("passphrase tr0ub4dor-and-3", "tr0ub4dor-and-3"),
            ("db_pwd purple.monkey.dishwasher.lamp", "purple.monkey.dishwasher.lamp"),
            ("token abcdefghijklmnopqrstuvwxyzab", "abcdefghijklmnopqrstuvwxyzab"),
            ("auth Xk9_activate-service", "Xk9_activate-service"),
            ("secret correct-horse-battery-staple", "correct-horse-battery-staple"),
            ("token tiger-lemon-river-stone-x", "tiger-lemon-river-stone-x"),
            ("password Pa55://w0rd!x", "Pa55://w0rd!x"),
            ("password Pass://w0rd!x", "Pass://w0rd!x"),
        ] {
            assert_redacted_escaped(text, 0..3, &[secret], &[]);
        }
    }

    /// A `.pgpass` line loses its password, whatever its fields, in every context; colon
    /// separated text that is no such line keeps every character.
    #[test]
    fn a_pgpass_line_loses_its_password_and_other_colon_text_stays() {
        let hosts = [
            "localhost",
            "db.example.com",
            "10.0.0.5",
            "*",
            "/var/run/postgresql",
            "db",
            "[::1]",
            r"\:\:1",
        ];
        let passwords = ["Zx9QwPass", "letmein", r"pa\:ss", "p@ss!word", "x"];
        let contexts = ["{}", "{}\n", "echo '{}' >> ~/.pgpass", "line 1\n{}\nline 3", "\"{}\""];
        for host in hosts {
            for port in ["5432", "*"] {
                for (db, user) in [("mydb", "admin"), ("*", "postgres"), ("app_db", "*")] {
                    for password in passwords {
                        let line = format!("{host}:{port}:{db}:{user}:{password}");
                        for context in contexts {
                            let text = context.replace("{}", &line);
                            let clean = redact_text(&text);
                            let kept = format!("{host}:{port}:{db}:{user}:{REDACTED}");
                            assert!(clean.contains(&kept), "{text:?} -> {clean:?}");
                        }
                    }
                }
            }
        }
        for kept in [
            "12:30:45:00:99",
            "00:11:22:33:44:55",
            "aa:bb:cc:dd:ee:ff",
            "at 2026-11-27 12:30:45.123",
            "fe80::1:2:3",
            "a:1:b:c:d:e",
            "ratio 1:2:3:4:5",
            "std::io::Error::other",
            "README.md:10:https://example.com:8080/path",
            "app.log:120:2024-01-01T12:30:45Z started",
            "host.example.com:22:sshd:info:accepted",
            "src/main.rs:1234:col:note:fine here",
            "localhost:5432:db:u:*",
            "a:1:b:c:d",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
        // A key shape in a line that reads as a `.pgpass` line goes too, wherever it starts.
        let hex = "0123456789abcdef0123456789abcdef";
        for (text, key) in [
            (format!("ghp_{hex}ABCD:5432:a:b:c"), format!("ghp_{hex}ABCD")),
            ("AKIAIOSFODNN7EXAMPLE:5432:db:user:pw".to_owned(), "AKIAIOSFODNN7EXAMPLE".to_owned()),
            (format!("sk-proj-{hex}:5432:x:y:z"), format!("sk-proj-{hex}")),
            (
                format!("x.ghp_{hex}ABCD{}:5432:db:user:pw", "y".repeat(60)),
                format!("ghp_{hex}ABCD"),
            ),
        ] {
            let clean = redact_text(&text);
            assert!(!clean.contains(&key), "{text} -> {clean}");
        }
        // A long value of wide characters after a pair's name is cut on a character.
        let wide = format!("name=DB_PASSWORD,value={}", "€".repeat(4000));
        assert!(!redact_text(&wide).contains("€€€€"));
    }

    #[test]
    fn a_name_inside_another_value_still_has_its_value_replaced() {
        for (input, expected) in [
            ("token: x [password=\nBrwzc8tfWGoK", "token: [REDACTED]\n[REDACTED]"),
            ("password=xtoken=\n  Brwzc8tfWGoK", "password=[REDACTED]\n  [REDACTED]"),
            ("x password xtoken=\n  Brwzc8tfWGoK", "x password [REDACTED]\n  [REDACTED]"),
            (r#"password=x"token":"abc def ghi" next"#, r#"password=[REDACTED]" next"#),
            (
                r#"password=x"token": "abc def ghi" next"#,
                r#"password=[REDACTED] "[REDACTED]" next"#,
            ),
            (
                "password=x<token>\n  abc def\n</token>",
                "password=[REDACTED]\n  [REDACTED]\n</token>",
            ),
            (
                "key=\"ApiKey\" %3D[password=\nBrwzc8tfWGoK\",\"ok\":\"kept\"}",
                "key=\"ApiKey\" [REDACTED]\n[REDACTED]\"}",
            ),
            // The blank that ended the outer value is inside the inner one replaced.
            (
                "password:{\"pwd=\\\"josydzog\\nduuiavgz eohvdpeq\\\"\":1,\"ok\":\"kept\"}",
                "password:[REDACTED],\"ok\":\"kept\"}",
            ),
            (
                "key=\"ApiKey\" %3D{\"note\":\"glrt-X3281s4EOoY88TtgmUo2\",\"ok\":\"kept\"}",
                "key=\"ApiKey\" [REDACTED],\"ok\":\"kept\"}",
            ),
        ] {
            check(input, expected);
        }
    }

    #[test]
    fn the_shape_pass_reads_each_byte_a_bounded_number_of_times() {
        // Shapes repeated back to back, each of which would run to the end of the text: each
        // is looked at again only near the end of the one before.
        let units = [
            "sk-",
            "sk-proj-",
            "sk_live_",
            "AKIA",
            "ghp_",
            "eyJ",
            "xoxb-",
            "glpat-",
            "://a:b",
            "Bearer ",
            "Basic ",
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
            "u:Pw9x@h",
            "1.2:3@",
            "a:b:",
            "mailto:a@",
            "12:30@",
            "ab:cd@ef ",
            "nginx:1.25@sha256:ab ",
            "h:5432:d:u:p ",
            "h:5432:",
            "a:1:b:c:d:",
        ];
        for unit in units {
            for filler in ["", "Ab3", "x"] {
                let text = format!("{unit}{filler}").repeat(40_000 / (unit.len() + filler.len()));
                SHAPE_SCAN.with(|scanned| scanned.set(0));
                let _ = redact_text(&text);
                let scanned = SHAPE_SCAN.with(std::cell::Cell::get);
                assert!(
                    scanned <= 2 * GLUED_REACH * text.len(),
                    "{unit:?}{filler:?} repeated: {scanned} bytes searched for {}",
                    text.len()
                );
            }
        }
    }

    #[test]
    fn looking_for_the_next_key_reads_each_byte_a_bounded_number_of_times() {
        // Runs of blanks and delimiters of every kind after every kind of separator: a value
        // is ended by asking whether a key follows once per run, not once per blank.
        let runs = [" ", "\t", " \t", ", ", "; ", "& ", ",", " ,", "\t;\t"];
        let pairs =
            ["password: x", "password=x", "password x7Hunter", "\"token\": \"x", "cookie: a=b"];
        let tails = ["y", "user=bob", "\"user\": 1", ""];
        for pair in pairs {
            for run in runs {
                for tail in tails {
                    let text = format!("{pair}{}{tail}", run.repeat(20_000));
                    KEY_SCAN.with(|scanned| scanned.set(0));
                    let clean = redact_text(&text);
                    let scanned = KEY_SCAN.with(std::cell::Cell::get);
                    assert!(
                        scanned <= 4 * text.len(),
                        "{pair:?} + {run:?}×20000 + {tail:?}: {scanned} bytes scanned for {}",
                        text.len()
                    );
                    assert!(!clean.contains("x7Hunter"), "{pair:?} {run:?} {tail:?}");
                }
            }
        }
    }

    #[test]
    fn a_word_after_a_name_ends_with_the_string_it_sits_in() {
        // JSON stored as text (a legacy context) read whole: the word after `session` is the
        // rest of its string, not the JSON that follows it.
        let json = serde_json::to_string(&json!({
            "artifacts": ["docs/session notes.md", "src/token handling.rs"],
            "next": {"id": "cp-task-016-policy-20", "state": "COMPLETED"},
        }))
        .unwrap();
        for text in [json.clone(), json_escaped(&json, 1), format!("`password notes` then {json}")]
        {
            let clean = redact_text(&text);
            assert!(clean.contains("cp-task-016-policy-20"), "{text} -> {clean}");
            if text == json {
                let parsed: serde_json::Value = serde_json::from_str(&clean).unwrap();
                assert_eq!(parsed["next"]["state"], "COMPLETED");
            }
        }
        // A credential-like word still goes, up to its string's end.
        let leak =
            serde_json::to_string(&json!({"note": "session Xk9$mQ2!zP", "id": "kept"})).unwrap();
        let clean = redact_text(&leak);
        assert!(!clean.contains("Xk9$mQ2!zP") && clean.contains("\"id\":\"kept\""), "{clean}");
    }

    #[test]
    fn a_value_before_a_delimiter_and_the_next_key_keeps_the_delimiter() {
        for (input, expected) in [
            ("password=abc, user=bob", "password=[REDACTED], user=bob"),
            ("password=abc,user=bob", "password=[REDACTED],user=bob"),
            ("password=abc;  user=bob", "password=[REDACTED];  user=bob"),
            ("password: abc def, user: bob", "password: [REDACTED], user: bob"),
            ("password: abc  \t  user=bob", "password: [REDACTED]  \t  user=bob"),
            ("password: abc ,user=bob", "password: [REDACTED] ,user=bob"),
        ] {
            assert_eq!(redact_text(input), expected, "{input:?}");
        }
    }

    /// Builds key shapes at run time, so no real-looking key sits in the source.
    fn key(prefix: &str, tail: &str, len: usize) -> String {
        format!("{prefix}{}", tail.repeat(len).chars().take(len).collect::<String>())
    }

    fn check(input: &str, expected: &str) {
        let once = redact_text(input);
        assert_eq!(once, expected, "input: {input:?}");
        assert_eq!(redact_text(&once), once, "not idempotent on {input:?}");
    }

    #[test]
    fn every_corpus_sample_is_redacted_as_text_and_as_json() {
        for seed in 0..16 {
            let samples = corpus::samples(seed).unwrap();
            for sample in &samples {
                let clean = redact_text(&sample.text);
                assert_eq!(sample.leaked_in(clean.as_bytes()), None, "{sample:#?}\n{clean}");
                assert!(clean.contains(REDACTED), "{sample:#?}");
                for kept in &sample.kept {
                    assert!(clean.contains(kept.as_str()), "lost {kept:?}: {sample:#?}\n{clean}");
                }
                assert_eq!(redact_text(&clean), clean, "not idempotent: {sample:#?}");
                if let Some(mut value) = sample.json() {
                    redact_json(&mut value);
                    let stored = value.to_string();
                    assert_eq!(sample.leaked_in(stored.as_bytes()), None, "{sample:#?}\n{stored}");
                    for kept in &sample.kept {
                        assert!(stored.contains(kept.as_str()), "lost {kept:?}: {stored}");
                    }
                    assert_eq!(redacted_json(&value), value, "not idempotent: {sample:#?}");
                }
            }
        }
    }

    #[test]
    fn the_corpus_covers_every_family_in_every_context() {
        let shapes = corpus::shapes(1).unwrap();
        let names: HashSet<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), shapes.len(), "shape names are unique");
        for family in [
            "aws-access-key-id",
            "aws-secret-access-key",
            "github-pat",
            "github-fine-grained-pat",
            "gitlab-pat",
            "gitlab-runner-registration",
            "slack-bot-token",
            "slack-webhook",
            "stripe-secret-live",
            "google-api-key",
            "google-oauth-client-secret",
            "google-oauth-access-token",
            "openai-legacy",
            "openai-project",
            "anthropic-api-key",
            "huggingface-token",
            "npm-token",
            "pypi-upload-token",
            "sendgrid-api-key",
            "jwt",
            "pem-rsa",
            "pem-ec",
            "pem-dsa",
            "pem-openssh",
            "pem-encrypted",
            "pem-pkcs8",
            "pgp-private-key-block",
            "pem-rsa-no-end",
            "pgp-private-key-block-no-end",
            "url-credentials-https",
            "url-credentials-no-scheme",
            "url-credentials-go-dsn",
            "http-basic-header",
            "http-bearer-header",
            "password-words",
            "password-bare",
            "pwd-assignment",
            "password-json-escaped",
            "password-json-pretty",
            "yaml-block-literal",
            "yaml-block-folded",
            "password-next-line",
            "password-next-line-indented",
            "password-quoted-multiline",
            "password-json-double-escaped",
            "password-single-quoted-escaped",
            "password-unicode-escaped-name",
            "password-xml-element",
            "api-key-xml-add",
            "password-percent-encoded",
            "url-credentials-percent-encoded",
            "url-credentials-brackets",
            "jwt-spaced-header",
            "digitalocean-pat",
            "shopify-access-token",
            "shopify-shared-secret",
            "shopify-custom-app-token",
            "shopify-private-app-token",
            "twilio-api-key",
            "mailgun-private-key",
            "telegram-bot-token",
            "atlassian-api-token",
            "grafana-service-account-token",
            "databricks-api-token",
            "http-digest-header",
            "http-digest-curl",
            "http-aws4-header",
            "http-aws4-compact",
            "proxy-authorization-custom",
            "signing-key-env",
            "encryption-key-yaml",
            "master-key-json",
            "deploy-key-env",
            "ssh-key-flag",
            "azure-account-key",
            "auth-header-yaml",
            "creds-assignment",
            "pass-assignment",
            "pass-env",
            "pass-json",
            "pass-yaml",
        ] {
            assert!(names.contains(family), "{family} is missing from the corpus");
        }
        let samples = corpus::samples(1).unwrap();
        for context in corpus::Context::ALL {
            assert!(samples.iter().any(|s| s.context == context), "{context:?}");
        }
        // Seeds give different secrets; one seed always gives the same ones.
        assert_ne!(corpus::shapes(2).unwrap(), shapes);
        assert_eq!(corpus::shapes(1).unwrap(), shapes);
    }

    #[test]
    fn the_repros_of_partial_redaction_are_fully_redacted() {
        let aws = key("AKIA", "Q7W2E3R4T5Y6U7I2", 16);
        let ghp = key("ghp_", "aB3dE5gH7jK9mN1pQ", 36);
        let ant = key("sk-ant-api03-", "xY7_zW-3vU", 40);
        check("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: [REDACTED]");
        check("password: correct horse battery staple", "password: [REDACTED]");
        check("password hunter2", "password [REDACTED]");
        check("pwd=s3cr3t-value", "pwd=[REDACTED]");
        check(
            "clone https://user:pw@host/repo.git now",
            "clone https://[REDACTED]@host/repo.git now",
        );
        check(&format!("AWS_KEY_{aws}"), "AWS_KEY_[REDACTED]");
        check(&format!("token_{ghp}"), "token_[REDACTED]");
        check(&format!("x_{ant}"), "x_[REDACTED]");
        check(&format!("id{aws}"), "id[REDACTED]");
        check(
            r#"{"password": "a\"b c", "user": "bob"}"#,
            r#"{"password": "[REDACTED]", "user": "bob"}"#,
        );
        check(
            "key:\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----\nafter",
            "key:\n[REDACTED]\nafter",
        );
        check(&format!(r#"{{"{aws}":1}}"#), r#"{"[REDACTED]":1}"#);
    }

    #[test]
    fn values_end_where_their_syntax_ends() {
        // Quoted values, to the closing quote, escapes honoured.
        check(
            r#"{"client_secret": "s3cr3t", "a": 1}"#,
            r#"{"client_secret": "[REDACTED]", "a": 1}"#,
        );
        check(r#"password='two words' next"#, "password='[REDACTED]' next");
        check(r#"{\"password\": \"a\\\"b c\"} tail"#, r#"{\"password\": \"[REDACTED]\"} tail"#);
        check(r#"DB_PASSWORD="a b" ok"#, r#"DB_PASSWORD="[REDACTED]" ok"#);
        // `name=value`: one token, or up to a `&`/`,`/`;` that another key follows.
        check("password=hunter2 user=bob", "password=[REDACTED] user=bob");
        check("set password=hunter2 and restart", "set password=[REDACTED] and restart");
        check(
            "login?user=bob&password=x1y2&next=home",
            "login?user=bob&password=[REDACTED]&next=home",
        );
        check("api_key=abc,region=eu", "api_key=[REDACTED],region=eu");
        check("pwd=a&b", "pwd=[REDACTED]");
        // `name: value`: to the end of the line, a following key, a closing quote or bracket.
        check("login with api_key: abc123xyz", "login with api_key: [REDACTED]");
        check("password: a b user: c", "password: [REDACTED] user: c");
        check("password: correct horse\nnext line", "password: [REDACTED]\nnext line");
        check("{password: hunter2, user: bob}", "{password: [REDACTED], user: bob}");
        check("(secret = two words)", "(secret = [REDACTED])");
        check(
            "curl -H 'Authorization: Basic dXNlcjpwYXNz' https://api.example.com",
            "curl -H 'Authorization: [REDACTED]' https://api.example.com",
        );
        check("Authorization: Bearer abcdefghijkl", "Authorization: [REDACTED]");
        check("Cookie: sid=1; csrf=2", "Cookie: [REDACTED]");
        check("token: abc https://x.example.com/y", "token: [REDACTED]");
        // No separator: only what looks like a credential.
        check("the password is hunter2.", "the password is [REDACTED].");
        check("--password Tr0ub4dor&3 --user bob", "--password [REDACTED] --user bob");
        check("auth token abc123def next", "auth token [REDACTED] next");
        check(r#"my password is "correct horse" ok"#, r#"my password is "[REDACTED]" ok"#);
        check(r#"the password "reset" page"#, r#"the password "reset" page"#);
        // Scheme words outside a secret name.
        check("sent Bearer abc.def-123_x to the proxy", "sent Bearer [REDACTED] to the proxy");
        check("sent Basic dXNlcjpwYXNzd29yZA== to", "sent Basic [REDACTED] to");
        // Already redacted stays as it is.
        check("token=[REDACTED]", "token=[REDACTED]");
        check("password: [REDACTED] user: c", "password: [REDACTED] user: c");
        check("{password: null}", "{password: null}");
    }

    #[test]
    fn prose_with_secret_words_is_unchanged() {
        for prose in [
            "the token usage is high",
            "the password reset flow needs review",
            "that is the secret sauce",
            "a token 128000 context window",
            "basic understanding of bearer instruments",
            "author: Bob",
            "max_tokens=4096 totalTokens: 300",
            "session ended at 10:42",
            "the auth middleware and the session store",
            "password_hash=abc",
            "the password is reset daily",
            "enter your password (twice), then the api key.",
            "task-orchestrator-service-v2-deployment-manager",
            "task_test_persistence_roundtrip_with_checkpoints",
            "task-550e8400-e29b-41d4-a716-446655440000",
            "see https://example.com/docs and git@github.com:org/repo.git",
            "risk-assessment-framework-for-everyone",
            "nothing to see",
        ] {
            check(prose, prose);
        }
    }

    /// Two readings that took words which are no secret: a `name:tag` before an image digest
    /// is no `user:password@host`, and after a secret name without a sign, a `key=value` word
    /// is logfmt's next pair. Each is kept in every variant, at three depths of escaping, while
    /// the shapes they resemble still go.
    #[test]
    fn an_image_digest_and_a_logfmt_pair_keep_their_words_and_look_alikes_still_go() {
        let hex64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let hex128 = hex64.repeat(2);
        let kept = [
            format!("pulled nginx:1.25-alpine@sha256:{hex64} ok"),
            format!("FROM node:20-bookworm-slim@sha256:{hex64} AS build"),
            format!("app:v1-rc2@sha512:{hex128}"),
            format!("image: ghcr.io/org/api:2026.11.27-b7@SHA256:{hex64}"),
            "method=password user=alice".to_owned(),
            "level=info method=password user=alice ip=10.0.0.1".to_owned(),
            "grant_type=password username=alice scope=read".to_owned(),
            "login via password remote_addr=10.0.0.7 status=401".to_owned(),
        ];
        for text in &kept {
            for depth in 0..3 {
                let written = json_escaped(text, depth);
                assert_eq!(redact_text(&written), written, "depth {depth}");
            }
        }
        let gone = [
            ("password dGVzdA1234==", "dGVzdA1234=="),
            ("method=password password=S3cretPw1 user=alice", "S3cretPw1"),
            ("admin:S3cretPw-9@db.internal:5432", "S3cretPw-9"),
            ("user:Pa55-word@sha256.example.com", "Pa55-word"),
            ("deploy:Pa55-word@sha256:abc123", "Pa55-word"),
        ];
        for (text, secret) in gone {
            assert_redacted_escaped(text, 0..3, &[secret], &[]);
        }
        check(
            "method=password password=S3cretPw1 user=alice",
            "method=password password=[REDACTED] user=alice",
        );
    }

    /// A secret that a command line or a URL carries without a name before it is found as
    /// written, quoted either way, in a JSON string at three depths of escaping and as a list
    /// of arguments; the same tools and words without a secret keep every word.
    #[test]
    fn a_secret_in_a_command_line_or_a_signed_url_goes_in_every_form_and_its_neighbours_stay() {
        const PW: &str = "Zq7xWv93Kp";
        let lines = [
            "mysql -h db -u root -p{}",
            "mysqldump --single-transaction -uroot -p{} app",
            "mariadb -p{} -e 'select 1'",
            "7z a -p{} out.7z dir",
            "sshpass -p {} ssh deploy@host",
            "sshpass -p{} scp f host:",
            "docker login -u bob -p {} registry.example.com",
            "redis-cli -h cache -p 6379 -a {} ping",
            "redis-cli --pass {} ping",
            "zip -r -P {} out.zip dir",
            "sqlcmd -S db -U sa -P {} -Q 'select 1'",
            "ldapsearch -x -D cn=admin,dc=x -w {} -b dc=x",
            "ldapmodify -w {} -f change.ldif",
            "ssh-keygen -t ed25519 -N {} -f key",
            "curl -sS -u alice:{} https://api.example.com",
            "curl --user alice:{} https://api.example.com",
            "curl --user=alice:{} https://api.example.com",
            "curl -x proxy:3128 --proxy-user bob:{} https://x",
            "htpasswd -b /etc/htpasswd alice {}",
            "htpasswd -B -bc /etc/htpasswd alice {}",
            "htpasswd -nb alice {}",
            "CREATE USER 'app'@'%' IDENTIFIED BY {}; GRANT ALL ON x.* TO 'app'",
            "alter user app identified with mysql_native_password by '{}';",
            "GRANT ALL ON *.* TO u IDENTIFIED BY PASSWORD {}",
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&sig={}&se=2026",
            "https://b.s3.amazonaws.com/k?X-Amz-Date=1&X-Amz-Signature={}#frag",
            "https://storage.googleapis.com/b/o?X-Goog-Signature={}",
            "keytool -list -keystore ks.jks -storepass {}",
            "keytool -importkeystore -srckeypass {} -destkeypass x9Y8z7W6v5",
            // Continued lines, several flags, glued forms, any case, a folder.
            "RUN mysql -h db \\\n    -u root \\\n    -p{} < init.sql",
            "sshpass \\\n  -p {} ssh host",
            "ssh-keygen -p -P old -N {} -f key",
            "curl --proxy-user p:x -u admin:{} https://x",
            "htpasswd -B -C 12 -b /etc/htpasswd alice {}",
            "docker login -p{} registry",
            "ldapsearch -w{} -b dc=x",
            "SQLCMD.EXE -S db -P {}",
            "/usr/bin/mysql -uroot -p{}",
            "bcp t out f -Usa -P{}",
            "rar a -hp{} x.rar f",
            "redis-server --requirepass {}",
            "mongosh -u a -p {}",
            "plink -pw {} host",
            "smbclient //h/s -U user%{}",
            "xfreerdp /u:a /p:{} /v:h",
            "CREATE USER x IDENTIFIED BY\n '{}';",
            "GRANT x IDENTIFIED WITH 'caching_sha2_password' BY '{}'",
            "https://x/y?a=1&amp;sig={}&b=2",
            // Oracle's logons: the first word that is no option, or a logon parameter.
            "sqlplus scott/{}@orcl",
            "sqlplus -s -L system/{}@//db.example.com:1521/ORCL @run.sql",
            "sqlplus sys/{}@prod as sysdba",
            "SQLPLUS.EXE scott/{}",
            "expdp system/{}@db directory=d dumpfile=x.dmp",
            "impdp userid=system/{} directory=d",
            "sqlldr control=x.ctl userid=scott/{}@db",
            "rman target sys/{}@prod catalog rco/x9Y8z7W6v5@cat",
            "rman target=sys/{}@prod nocatalog",
            "dgmgrl sys/{}@primary",
        ];
        for line in lines {
            // Quoted values only where a quote may stand: after a flag, and in SQL.
            let glued = ["://", ":{}", "%{}", "-p{}", "-w{}", "-P{}", "-hp{}", "'{}'", "\\", "/{}"];
            let quotable = !glued.iter().any(|t| line.contains(t));
            let mut forms = vec![line.replace("{}", PW)];
            if quotable {
                forms.push(line.replace("{}", &format!("'{PW} and more'")));
                forms.push(line.replace("{}", &format!("\"{PW} and more\"")));
            }
            for form in forms {
                assert_redacted_escaped(&format!("first\n{form}\nlast"), 0..3, &[PW], &[]);
                let json: Value = Value::String(form.clone());
                let clean = redacted_json(&json).to_string();
                assert!(!clean.contains(PW), "{PW} survived in {clean}");
            }
            // As a list of arguments, one word per item (a quoted value is one item): command
            // lines are written so, SQL and URLs are not.
            if line.contains("://")
                || line.to_ascii_lowercase().contains("identified")
                || line.contains('\\')
                || line.starts_with("RUN")
            {
                continue;
            }
            let value = if quotable { format!("{PW} and more") } else { PW.to_owned() };
            let args: Vec<Value> =
                line.split(' ').map(|w| Value::String(w.replace("{}", &value))).collect();
            let list = Value::Array(args);
            let clean = redacted_json(&list).to_string();
            assert!(!clean.contains(PW), "{PW} survived in {clean}");
            // And the list written as text, at three depths of escaping.
            assert_redacted_escaped(&list.to_string(), 0..3, &[PW], &[]);
        }
        // A command ends at an escaped line break too: the next line's command is read.
        let two = format!("mysql -uroot -pAAAAAAAA\nmysql -uroot -p{PW}\nCREATE USER");
        for depth in 1..3 {
            assert_redacted(&json_escaped(&two, depth), &[PW, "AAAAAAAA"], &["CREATE USER"]);
        }
        // The flag (or word) kept, the neighbours kept.
        check("mysql -u root -pS3cretPw1 db", "mysql -u root -p[REDACTED] db");
        check("curl -u 'alice:S3cretPw1' https://x", "curl -u 'alice:[REDACTED]' https://x");
        check("a?sig=abc%2Bdef&se=2026&sp=r", "a?sig=[REDACTED]&se=2026&sp=r");
        check(
            "htpasswd -b f alice S3cretPw1 && echo ok",
            "htpasswd -b f alice [REDACTED] && echo ok",
        );
        for text in [
            "mysql -u root -p appdb",
            "mysql -h db -P3306 -u root -p",
            "mkdir -p /tmp/x && mysql -u root -p",
            "ls -la; sshpass -V",
            "docker run -p 8080:80 nginx",
            "docker login registry.example.com",
            "redis-cli -h cache -p 6379 ping",
            "zip -r out.zip dir",
            "curl -u alice https://api.example.com",
            "curl -X POST https://api.example.com/users",
            "htpasswd -c /etc/htpasswd alice",
            "htpasswd -D /etc/htpasswd alice",
            "the function signature=foo(a, b) and its sig field",
            "random_seed: 42",
            "the user was identified by their email",
            "compass bypass passage",
            "sshpass -f pw.txt ssh -p 2222 host",
            "docker login r && docker run -p 5432:5432 img",
            "unzip dump.zip && mysql -P 3306",
            "redis-cli ping; git commit -a -m fix",
            "cat ldap.log | wc -w lines",
            "cc x.c -lmysqlclient -pthread",
            "ssh-keygen -t ed25519 -N '' -f key",
            "docker login --password-stdin registry",
            "sqlplus / as sysdba",
            "sqlplus /nolog",
            "sqlplus -s @run.sql",
            "sqlplus scott",
            "rman target / cmdfile=backup.rman",
            "expdp help=y",
        ] {
            check(text, text);
        }
        let args = json!(["mysql", "-u", "root", "-p", "appdb"]);
        assert_eq!(redacted_json(&args), args);
        let ports = json!(["docker", "run", "-p", "8080:80", "nginx"]);
        assert_eq!(redacted_json(&ports), ports);
    }

    /// Code names secrets in its own shapes: a subscript (`os.environ["OPENAI_API_KEY"] =
    /// …`), a call's first argument naming its second (`props.put("password", …)`), a call
    /// of the name with a literal (`setPassword("…")`), a typed declaration (`static
    /// PASSWORD: &str = "…"`, Go's `var password string = "…"`). Each is found with either
    /// quote, as written and in JSON text at three depths; a call with no literal, a read of a
    /// subscript and a call naming no value keep every word.
    #[test]
    fn secrets_in_code_shapes_are_found_with_either_quote_at_any_depth() {
        const V: &str = "Pz9qWm2hXe";
        let lines = [
            "os.environ[{q}OPENAI_API_KEY{q}] = {q}{v}{q}",
            "ENV[{q}API_TOKEN{q}]={q}{v}{q}",
            "config[{q}password{q}] = {q}{v}{q}; next()",
            "props.put({q}password{q}, {q}{v}{q});",
            "std::env::set_var({q}API_TOKEN{q}, {q}{v}{q});",
            "localStorage.setItem({q}token{q}, {q}{v}{q})",
            "req.setHeader({q}X-Api-Key{q}, {q}{v}{q})",
            "os.getenv({q}DB_PASSWORD{q},{q}{v}{q})",
            "SET PASSWORD FOR bob = PASSWORD({q}{v}{q});",
            "user.setPassword({q}{v}{q})",
            "static PASSWORD: &str = {q}{v}{q};",
            "var password string = {q}{v}{q}",
            "const apiKey: string = {q}{v}{q};",
            "password: Optional[str] = {q}{v}{q}",
        ];
        for line in lines {
            for q in ["\"", "'"] {
                let line = line.replace("{q}", q).replace("{v}", V);
                assert_redacted_escaped(&line, 0..3, &[V], &[]);
            }
        }
        for text in [
            "check_password(user_input) and hash_password(pw)",
            "key = os.environ[\"API_KEY\"]",
            "print(\"token\", count)",
            "the password (see docs) is reset",
            "if password == expected: return",
            "fn verify_password(hash: &str) -> bool",
        ] {
            check(text, text);
        }
    }

    /// A secret name with a qualifier or a number after it (`API_KEY_PROD`, `password1`,
    /// `apiKeyProd`), a vendor's `…_KEY` (`OPENAI_KEY`, `licenseKey`), a plural holding secrets
    /// (`secrets:`, `apiKeys:`) and the short forms (`DB_PW`, `pswd`, `passcode`) name a secret
    /// as a JSON key and in text — `NAME=v`, `NAME: v`, `"NAME": "v"` as JSON text at three
    /// depths, YAML with the value below — in every case; names that only look like them
    /// (`token_count`, `primary_key`, `sortKey`, `ssh_public_key`, `password_hash`,
    /// `max_tokens`) keep their values, and without a sign a qualified name is prose.
    #[test]
    fn names_with_qualifiers_vendor_keys_plurals_and_short_forms_are_secret_names() {
        const V: &str = "Vq8wTz3kLm";
        let names = [
            "API_KEY_PROD",
            "GITHUB_TOKEN_RO",
            "STRIPE_SECRET_KEY_LIVE",
            "SECRET_KEY_BASE",
            "password1",
            "PASSWORD_2",
            "token2",
            "secret_old",
            "DB_PASS_PROD",
            "apiKeyProd",
            "smtpPassOld",
            "db.password.staging",
            "OPENAI_KEY",
            "STRIPE_KEY",
            "DD_APP_KEY",
            "APP_KEY",
            "LICENSE_KEY",
            "licenseKey",
            "sendgrid-key",
            "secrets",
            "passwords",
            "apiKeys",
            "api_keys",
            "private_keys",
            "DB_PW",
            "pw",
            "root-pw",
            "pswd",
            "passcode",
            "pword",
            "MNEMONIC",
            "seed_phrase",
            "recoveryPhrase",
        ];
        for name in names {
            assert!(is_secret_key(name), "{name} as a JSON key");
            let json = json!({ name: V, "note": "kept" });
            assert_eq!(redacted_json(&json)["note"], "kept");
            assert!(!redacted_json(&json).to_string().contains(V), "{name} in JSON");
            for line in [
                format!("{name}={V}"),
                format!("export {name}=\"{V}\""),
                format!("{name}: {V}"),
                format!("{{\"{name}\": \"{V}\", \"note\": \"kept\"}}"),
                format!("{name}:\n  nested: {V}\nnext: kept"),
            ] {
                assert_redacted_escaped(&line, 0..3, &[V], &[]);
            }
        }
        for key in [
            "token_count",
            "primary_key",
            "primaryKey",
            "sortKey",
            "sort_key",
            "cache_key",
            "ssh_public_key",
            "partitionKey",
            "queryKey",
            "max_tokens",
            "totalTokens",
            "session_timeout",
            "key",
            "monkey",
            "hotkey",
            "keyboard",
        ] {
            assert!(!is_secret_key(key), "{key} as a JSON key");
            let json = json!({ key: "kept-value" });
            assert_eq!(redacted_json(&json), json, "{key}");
            for line in [format!("{key}=kept-value"), format!("{key}: kept-value")] {
                check(&line, &line);
            }
        }
        for prose in [
            "the password_old flow and the stripe_key docs",
            "secrets management and passwords policy",
            "pw is short for password, pwd for the folder",
            "base64 of PyPw47= stays",
            "a Pw2Xy9= tail",
        ] {
            check(prose, prose);
        }
    }

    /// An option named like a secret (`--password`, `-storepass`, `--db-password`…) takes the
    /// next word as its value whatever it looks like — a weak password of lower-case letters
    /// too — written as is, quoted, at the end of the line, continued, with tabs, in JSON text
    /// at three depths; the option, the command and the next options stay. An option that
    /// takes no argument (`psql --password db`, `--no-password`), prose about an option, and
    /// options whose argument is a count or a reference keep their words.
    #[test]
    fn an_options_argument_is_a_secret_whatever_it_looks_like() {
        const WEAK: &str = "hunterpass";
        let options = [
            "--password",
            "-password",
            "--Password",
            "--db-password",
            "--DB_PASSWORD",
            "--admin-passwd",
            "--pwd",
            "--passphrase",
            "--api-key",
            "--apikey",
            "--client-secret",
            "--private-key",
            "--secret-key",
            "--aws-secret-access-key",
            "--encryption-key",
            "-storepass",
            "-keypass",
            "--auth-token",
            "--access-token",
            "--refresh-token",
            "--bot-token",
            "--otp-seed",
        ];
        for option in options {
            for value in [WEAK.to_owned(), format!("'{WEAK}'"), format!("\"{WEAK} two\"")] {
                for line in [
                    format!("app {option} {value} --next x"),
                    format!("app --verbose {option}\t{value}"),
                    format!("RUN app \\\n  {option} {value} \\\n  --next x"),
                    format!("(app {option} {value}) && echo done"),
                ] {
                    // An escaped tab (`\\t` in JSON text) is not read as a blank.
                    let depths = if line.contains('\t') { 0..1 } else { 0..3 };
                    assert_redacted_escaped(&line, depths, &[WEAK], &["app", option]);
                    let json = redacted_json(&Value::String(line.clone())).to_string();
                    assert!(!json.contains(WEAK), "{WEAK} survived in {json}");
                }
            }
        }
        check("app --password hunter --host db", "app --password [REDACTED] --host db");
        check("gpg --batch --passphrase abc -c f", "gpg --batch --passphrase [REDACTED] -c f");
        for text in [
            "psql --password appdb",
            "PGHOST=h /usr/bin/psql -U u --password appdb",
            "pg_dump --password -Fc appdb > out.dump",
            "mysql --password appdb < init.sql",
            "MYSQL.EXE -u root --password appdb",
            "psql --no-password appdb",
            "app --no-password prod",
            "use the --password flag to set it",
            "set --password to the vault value",
            "pass --api-key and --client-secret as arguments",
            "app --password-file /run/secrets/db",
            "docker login --password-stdin registry",
            "app --passwords-file list.txt",
            "gen --max-token 500 --token 500 --session 3",
            "curl --auth basic https://x",
            "app --password",
            "app --password --prompt",
            "x--password y",
        ] {
            check(text, text);
        }
    }

    /// Redacts `input` and checks that `secrets` are gone, `kept` is there, and that redacting
    /// again changes nothing.
    fn assert_redacted(input: &str, secrets: &[&str], kept: &[&str]) {
        let once = redact_text(input);
        for secret in secrets {
            assert!(!once.contains(secret), "{secret:?} survived in {once:?}, input {input:?}");
        }
        for kept in kept {
            assert!(once.contains(kept), "lost {kept:?} in {once:?}, input {input:?}");
        }
        assert_eq!(redact_text(&once), once, "not idempotent on {input:?}");
    }

    /// [`assert_redacted`] on `text` written into JSON strings at each of `depths` (0: as
    /// written), after a prefix that must stay, with `kept` kept too.
    fn assert_redacted_escaped(
        text: &str,
        depths: std::ops::Range<usize>,
        secrets: &[&str],
        kept: &[&str],
    ) {
        for depth in depths {
            let mut kept = kept.to_vec();
            kept.push("ran: ");
            assert_redacted(&format!("ran: {}", json_escaped(text, depth)), secrets, &kept);
        }
    }

    /// `text` as the content of a JSON string literal (quotes, backslashes and line breaks
    /// escaped), `depth` times over: text inside JSON inside JSON…
    fn json_escaped(text: &str, depth: usize) -> String {
        let mut text = text.to_owned();
        for _ in 0..depth {
            let literal = Value::String(text).to_string();
            text = literal[1..literal.len() - 1].to_owned();
        }
        text
    }

    #[test]
    fn a_value_on_the_lines_after_its_name_is_redacted() {
        // Pretty-printed JSON, YAML block scalars, an empty value at the end of its line.
        for (input, secrets) in [
            ("{\n  \"password\":\n    \"L3ssonPw!\"\n}", &["L3ssonPw"][..]),
            ("stringData:\n  password: |\n    Kub3S3cretPw\n", &["Kub3S3cretPw"]),
            (
                "stringData:\n  password: >-\n    Kub3S3cret\n\n    Pw and more\n",
                &["Kub3S3cret", "Pw and more"],
            ),
            ("stringData:\n  password: |+2\n    Kub3S3cretPw\n", &["Kub3S3cretPw"]),
            ("password=\nHunterNL9", &["HunterNL9"]),
            ("password=\r\nHunterNL9\r\n", &["HunterNL9"]),
            ("password:\n    C0nfPw!x", &["C0nfPw!x"]),
            ("password:\n\n\n    C0nfPw!x", &["C0nfPw!x"]),
            ("db:\n  password:\n    part one\n    part two\n", &["part one", "part two"]),
            ("DB_PASSWORD :=\n'Hunter NL9'", &["Hunter NL9"]),
        ] {
            for depth in 0..4 {
                let text = json_escaped(input, depth);
                assert_redacted(&format!("{text}\nafter: kept"), secrets, &["after: kept"]);
                // Inside a JSON string, lines end with the string.
                let json =
                    format!(r#"{{"note":"{}","ok":"kept"}}"#, json_escaped(input, depth + 1));
                assert_redacted(&json, secrets, &[r#""ok":"kept""#]);
            }
        }
        // A value ends where its indentation does.
        check(
            "a:\n  password:\n    C0nfPw!x\n    more\n  user: bob\n",
            "a:\n  password:\n    [REDACTED]\n  user: bob\n",
        );
        check(
            "stringData:\n  password: |\n    Kub3S3cretPw\n  user: |\n    bob\n",
            "stringData:\n  password: |\n    [REDACTED]\n  user: |\n    bob\n",
        );
        check("password=\nHunterNL9\nnext line", "password=\n[REDACTED]\nnext line");
        // A line that is not a lone word stays: a sentence, another key, nothing to redact.
        for prose in [
            "Password:\nThe reset flow sends an email.",
            "password:\nuser: bob",
            "password=\nuser=bob",
            "token:\n\n",
            "secret=\n---\n",
            "password: |\n",
            "password:\n  \n",
            "credentials:\n- see the vault",
        ] {
            check(prose, prose);
        }
    }

    #[test]
    fn a_quoted_value_runs_to_its_closing_quote_across_lines() {
        check(
            r#"pwd="multi
line secret" next"#,
            r#"pwd="[REDACTED]" next"#,
        );
        check("pwd='multi\r\nline secret' next", "pwd='[REDACTED]' next");
        check("pwd=`multi\nline` next", "pwd=`[REDACTED]` next");
        check(r#"{"a":"pwd=\"multi\nline secret\" next"}"#, r#"{"a":"pwd=\"[REDACTED]\" next"}"#);
        check("my password is \"correct\nhorse\" ok", "my password is \"[REDACTED]\" ok");
        // Not closed: to the end of the text, whatever comes after.
        check("password=\"multi\nline secret", "password=\"[REDACTED]");
        check("token 'abc1234 def\nmore", "token '[REDACTED]");
        // Closed far away, but within reach: the rest stays.
        let far = "x".repeat(REACH - 100);
        check(&format!("password=\"{far}\nsecret\" tail"), "password=\"[REDACTED]\" tail");
        // Not closed within reach: a quote beyond it closes nothing.
        let beyond = "x".repeat(REACH + 100);
        check(&format!("password=\"{beyond}\" tail"), "password=\"[REDACTED]");
    }

    #[test]
    fn quotes_escaped_to_any_depth_delimit_their_values() {
        let double = r#"{"password": "Hun\"ter6x Dbl9", "user": "bob"}"#;
        let single = r"{'password': 'Hun\'ter6x Sgl9', 'user': 'bob'}";
        for depth in 0..6 {
            let text = json_escaped(double, depth);
            assert_redacted(&text, &["Hun", "ter6x", "Dbl9"], &["bob"]);
            let single = (0..depth)
                .fold(single.to_owned(), |t, _| t.replace('\\', "\\\\").replace('\'', "\\'"));
            assert_redacted(&single, &["Hun", "ter6x", "Sgl9"], &["bob"]);
            // A pair that sits in a string ends with it.
            let inner = json_escaped("api_key: Tok3n value here", depth + 1);
            let quote = json_escaped("\"", depth);
            assert_redacted(
                &format!("{quote}{inner}{quote} tail"),
                &["Tok3n", "value here"],
                &[" tail"],
            );
        }
        check(
            r#"{\\\"password\\\":\\\"Hunter6xDbl\\\"}"#,
            r#"{\\\"password\\\":\\\"[REDACTED]\\\"}"#,
        );
    }

    #[test]
    fn markup_and_escaped_names_hide_no_value() {
        for (input, secrets, kept) in [
            ("<password>S3cretXml9</password>", &["S3cretXml9"][..], &["</password>"][..]),
            (
                "<db:Password>\n  S3cret Xml9\n</db:Password>",
                &["S3cret", "Xml9"],
                &["</db:Password>"],
            ),
            (
                "<password><![CDATA[a<b S3cretXml9]]></password>",
                &["S3cretXml9"],
                &["]]></password>"],
            ),
            (
                "<config><api_key>S3cretXml9</api_key><user>bob</user></config>",
                &["S3cretXml9"],
                &["<user>bob</user>"],
            ),
            (r#"<add key="ApiKey" value="S3cret Value 9"/>"#, &["S3cret", "Value 9"], &["/>"]),
            ("<add key='Password' value='S3cret Value 9' />", &["S3cret", "Value 9"], &["/>"]),
            (r#"<user password="S3cretAttr9" name="bob"/>"#, &["S3cretAttr9"], &["bob"]),
            ("password%3DHunterUrl9", &["HunterUrl9"], &["password%3D"]),
            (
                "login?next=%2Fa%3Fpassword%253DHunterUrl9%2526x%253D1",
                &["HunterUrl9"],
                &["login?next="],
            ),
            ("https%3A%2F%2Fadmin%3AUrlEnc0dedPw%40host", &["UrlEnc0dedPw", "admin"], &["%40host"]),
            (
                "%22password%22%3A%22Hunter%20Url9%22%2C%22u%22%3A1",
                &["Hunter", "Url9"],
                &["%22u%22"],
            ),
            (r#"{"\u0070assword": "HunterU8x"}"#, &["HunterU8x"], &[r#"{"\u0070assword": ""#]),
            (r#"{"\u0070\u0061ssword": "HunterU8x"}"#, &["HunterU8x"], &[]),
            (r"\u0041PI_KEY=HunterU8x", &["HunterU8x"], &[]),
            (r"password\u003dHunterU8x other", &["HunterU8x"], &[" other"]),
            (r#"{\"\\u0070assword\": \"HunterU8x\"}"#, &["HunterU8x"], &[]),
        ] {
            assert_redacted(input, secrets, kept);
        }
        // Escapes outside the secret are kept as they are written.
        check("password%3DHunterUrl9%26next%3D%2Fhome", "password%3D[REDACTED]%26next%3D%2Fhome");
        check(
            r#"{"\u0070assword": "x", "caf\u00e9": 1}"#,
            r#"{"\u0070assword": "[REDACTED]", "caf\u00e9": 1}"#,
        );
        // Code and prose with angle brackets and escapes stay.
        for prose in [
            "Option<Token> is fine",
            "fn f(t: Vec<Secret>) -> Result<Token, Error> { todo!() }",
            "fill in the <password> field and press enter",
            "100%25 of the token usage, a%20b, caf\\u00e9",
            "<token>\n",
        ] {
            check(prose, prose);
        }
    }

    /// Base64url without padding, as JWTs write their parts.
    fn base64url(bytes: &[u8]) -> String {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    #[test]
    fn jwts_with_any_json_spacing_and_url_passwords_of_any_characters_are_redacted() {
        let signature = key("", "Zx9_Yw8-Vu7", 43);
        for header in [
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{ "alg": "HS256", "typ": "JWT" }"#,
            r#"{"1":"HS256"}"#,
        ] {
            for payload in [r#"{"sub":"1234567890","admin":true}"#, r#"{ "sub": "1234567890" }"#] {
                let jwt = format!(
                    "{}.{}.{signature}",
                    base64url(header.as_bytes()),
                    base64url(payload.as_bytes())
                );
                check(&format!("token {jwt} sent"), "token [REDACTED] sent");
                check(&format!("x_{jwt}"), "x_[REDACTED]");
            }
        }
        for c in "[]{}()!$&*+,;=:%?#/@~|^\\".chars() {
            let url = format!("postgres://admin:Pa{c}Ssw0rdQ9@db.internal:5432/app");
            check(&url, "postgres://[REDACTED]@db.internal:5432/app");
        }
        check("postgres://admin:p@ss@db/x and more", "postgres://[REDACTED]@db/x and more");
        check("https://u:pw@host/path/@scope?a=b@c", "https://[REDACTED]@host/path/@scope?a=b@c");
        // A port and a path are not a password.
        for url in [
            "http://localhost:4873/@babel/core",
            "https://host:8080/x?u=a@b.com",
            r#"{"url":"https://host:8080","mail":"a@b.com"}"#,
            "git@github.com:org/repo.git",
        ] {
            check(url, url);
        }
    }

    #[test]
    fn a_key_longer_than_its_pattern_next_to_another_is_redacted_whole() {
        let long = key("sk-proj-", "Ab3Cd5Ef7Gh9-_Jk", 400);
        let slack = key("xoxb-", "52116896023-3529", 50);
        check(&format!("ENV_KEY_{long}_KEY_{long}_KEY_{slack} next"), "ENV_KEY_[REDACTED] next");
    }

    #[test]
    fn generic_prefixes_glued_to_a_word_need_a_random_tail() {
        let random = key("sk-", "Ab3Cd5Ef7Gh9Jk1Lm", 40);
        check(&format!("id{random}"), "id[REDACTED]");
        let lower = key("sk-", "abcdefghij", 30);
        check(&format!("ta{lower}"), &format!("ta{lower}"));
        check(&format!("x_{lower}"), "x_[REDACTED]");
        check(&format!("ref {lower}"), "ref [REDACTED]");
        let stripe = key("sk_live_", "51Ab3Cd5Ef7Gh9", 40);
        check(&format!("STRIPE{stripe}"), "STRIPE[REDACTED]");
        // A key longer than any known one goes whole.
        check(&format!("{} next", key("sk-proj-", "Ab3Cd5Ef7Gh9", 900)), "[REDACTED] next");
        check(&format!("x{} next", key("rk_test_", "Ab3Cd5Ef7Gh9", 900)), "x[REDACTED] next");
    }

    #[test]
    fn private_key_blocks_go_whole_with_or_without_end() {
        for kind in ["RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", "", "PGP "] {
            let block = if kind == "PGP " { " BLOCK" } else { "" };
            let begin = format!("-----BEGIN {kind}PRIVATE KEY{block}-----");
            let end = format!("-----END {kind}PRIVATE KEY{block}-----");
            let body = "MIIEpAIBAAKCAQEA\nq1w2e3r4t5y6u7i8";
            check(&format!("a\n{begin}\n{body}\n{end}\nb"), "a\n[REDACTED]\nb");
            check(&format!("a\n{begin}\n{body}\nand the rest"), "a\n[REDACTED]");
        }
    }

    #[test]
    fn secret_named_keys_are_redacted_in_json_but_token_counts_stay() {
        let mut value = json!({
            "api_key": "plain-value", "apiKey": 42, "nested": {"Password": "x", "list": [{"token": "t"}]},
            "totalTokens": 300, "inputTokens": 10, "maxTokens": 5, "max_tokens": 6,
            "note": format!("key {}", key("ghp_", "aB3dE5gH7j", 36)),
            "enabled": true, "secret": null, "setting": "api_key", "pwd": "p",
            "session": {"id": 3}, "auth": true, "author": "bob", "clientSecret": ["a"],
            "credentials": {"user": "u"}, "passwordHash": "h", "sessionId": "s",
        });
        redact_json(&mut value);
        for k in ["api_key", "apiKey", "pwd", "passwordHash", "sessionId"] {
            assert_eq!(value[k], REDACTED, "{k}");
        }
        // Below a secret name, every string and number goes and the shape stays.
        assert_eq!(value["session"], json!({"id": REDACTED}));
        assert_eq!(value["clientSecret"], json!([REDACTED]));
        assert_eq!(value["credentials"], json!({"user": REDACTED}));
        assert_eq!(value["nested"]["Password"], REDACTED);
        assert_eq!(value["nested"]["list"][0]["token"], REDACTED);
        assert_eq!(value["totalTokens"], 300);
        assert_eq!(value["inputTokens"], 10);
        assert_eq!(value["maxTokens"], 5);
        assert_eq!(value["max_tokens"], 6);
        assert_eq!(value["note"], format!("key {REDACTED}"));
        assert_eq!(value["enabled"], true);
        assert_eq!(value["auth"], true);
        assert_eq!(value["secret"], Value::Null);
        assert_eq!(value["setting"], "api_key");
        assert_eq!(value["author"], "bob");
    }

    #[test]
    fn redacted_json_keys_never_collide() {
        let (a, b) = (key("AKIA", "Q7W2E3R4", 16), key("ASIA", "Z9X8C7V6", 16));
        let mut value: Value = serde_json::from_str(&format!(
            r#"{{"{a}": 1, "[REDACTED]": 2, "{b}": 3, "name": {{"x_{a}": "v"}}, "[REDACTED]#2": 4}}"#
        ))
        .unwrap();
        redact_json(&mut value);
        assert_eq!(
            value.to_string(),
            r##"{"[REDACTED]#3":1,"[REDACTED]":2,"[REDACTED]#4":3,"name":{"x_[REDACTED]":"v"},"[REDACTED]#2":4}"##
        );
        assert_eq!(redacted_json(&value), value);
        assert!(is_secret_key("x-api-key") && is_secret_key("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret_key("token_count") && !is_secret_key("authorId"));
    }

    #[test]
    fn secret_key_names_are_matched_whole_whatever_the_key_length() {
        for name in SECRET_NAMES {
            for key in [
                name.to_owned(),
                name.to_uppercase(),
                format!("a_very_long_prefix_before_the_{name}"),
                name.split('_')
                    .map(|p| {
                        let first = p.chars().next().map_or(0, char::len_utf8);
                        p[..first].to_uppercase() + &p[first..]
                    })
                    .collect::<String>(),
            ] {
                assert!(is_secret_key(&key), "{key}");
                assert!(!is_secret_key(&format!("my_{key}_count")), "my_{key}_count");
            }
        }
        assert!(is_secret_key("passwordResetTokenExpiryInSecondsForUsers"));
        assert!(!is_secret_key("") && !is_secret_key("_") && !is_secret_key("totalTokens"));
    }

    #[test]
    fn key_names_of_every_kind_are_secret_and_keys_that_only_look_like_them_are_not() {
        for name in [
            "signing_key",
            "encryption_key",
            "master_key",
            "deploy_key",
            "ssh_key",
            "private_key",
            "AccountKey",
            "auth_header",
            "creds",
            "credentials",
            "pass",
        ] {
            let camel: String = name
                .split('_')
                .enumerate()
                .map(|(i, p)| if i == 0 { p.to_owned() } else { p[..1].to_uppercase() + &p[1..] })
                .collect();
            let spellings = [
                name.to_owned(),
                name.to_uppercase(),
                name.replace('_', "-"),
                camel.clone(),
                format!("DB_{}", name.to_uppercase()),
                format!("smtp-{name}"),
                format!("x{}", camel[..1].to_uppercase() + &camel[1..]),
            ];
            for key in spellings {
                assert!(is_secret_key(&key), "{key}");
                for sign in ["=", ": ", " = ", ":"] {
                    // `PASS:` alone is how test runners report; `pass:` is a YAML key.
                    if sign.starts_with(':') && key == "PASS" {
                        continue;
                    }
                    let text = format!("{key}{sign}Zq8vLw3mNx end");
                    let clean = redact_text(&text);
                    assert!(!clean.contains("Zq8vLw3mNx"), "{text} -> {clean}");
                    assert_eq!(redact_text(&clean), clean);
                }
                let json = redacted_json(&json!({ key.clone(): "Zq8vLw3mNx" }));
                assert_eq!(json[&key], REDACTED, "{key}");
            }
        }
        for kept in [
            "primary_key",
            "sort_key",
            "partition_key",
            "key_id",
            "public_key",
            "keyboard",
            "monkey",
            "compass",
            "bypass",
            "passed",
            "passenger",
            "Compass",
            "DBPASS",
            "pass_rate",
            "passes",
            "foreign_key",
        ] {
            assert!(!is_secret_key(kept), "{kept}");
            let value = json!({ kept: "kept-value-1" });
            assert_eq!(redacted_json(&value), value, "{kept}");
            for sign in ["=", ": ", " = "] {
                let text = format!("{kept}{sign}kept-value-1 end");
                assert_eq!(redact_text(&text), text, "{text}");
            }
        }
        // Test runners' reports and prose keep their words.
        for prose in [
            "--- PASS: TestRedaction (0.00s)",
            "PASS: tests/redact.rs",
            "Pass: 12, Fail: 0",
            "the build will pass tomorrow2 maybe",
            "bypass=on compass=north passenger: Alice42",
            "we pass the signing key rotation to the deploy key owner",
        ] {
            check(prose, prose);
        }
        check(
            "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc123==;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=[REDACTED];EndpointSuffix=core.windows.net",
        );
        check("pass=hunter2x", "pass=[REDACTED]");
        check(r#"{"pass": "hunter2x"}"#, r#"{"pass": "[REDACTED]"}"#);
        check(r#"{"PASS": "hunter2x"}"#, r#"{"PASS": "[REDACTED]"}"#);
        check("<pass>hunter2x</pass>", "<pass>[REDACTED]</pass>");
        check("smtp:\n  pass: hunter2x\n", "smtp:\n  pass: [REDACTED]\n");
    }

    #[test]
    fn an_authorization_header_of_any_scheme_is_secret_to_the_end_of_its_line() {
        let values = [
            r#"Digest username="a", realm="api", response="6629fae49393a05397450978507c4ef1""#,
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
            "Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEFoQMCAQ6iBwMFACAAAACjggSM",
            "HOBA result=kid.chal.sig, user=bob",
            "Token token=abc, key=def",
            "Custom a b c d",
        ];
        for name in ["Authorization", "Proxy-Authorization", "authorization", "AUTHORIZATION"] {
            for sign in [": ", ":", " : ", ":\t"] {
                for value in values {
                    let header = format!("{name}{sign}{value}");
                    let secret = value.rsplit([' ', '=', '"']).find(|p| p.len() >= 3).unwrap();
                    for (text, kept) in [
                        (format!("{header}\nnext: line"), "\nnext: line"),
                        (
                            format!("curl -H '{header}' https://x.example.com"),
                            "' https://x.example.com",
                        ),
                        (format!("said \"{header}\" twice"), "\" twice"),
                    ] {
                        let clean = redact_text(&text);
                        assert!(!clean.contains(secret), "{text} -> {clean}");
                        assert!(clean.contains(kept), "{text} -> {clean}");
                        assert!(clean.contains(&format!("{name}{sign}")), "{text} -> {clean}");
                        assert_eq!(redact_text(&clean), clean, "{text}");
                        for value in [json!({ "note": text, "ok": "kept" }), json!({ name: value })]
                        {
                            let stored = redacted_json(&value).to_string();
                            assert!(!stored.contains(secret), "{value} -> {stored}");
                            let as_text = redact_text(&value.to_string()).into_owned();
                            assert!(!as_text.contains(secret), "{value} -> {as_text}");
                        }
                    }
                }
            }
        }
    }

    /// Names of secrets as JSON writes them where a pair's name or an argument goes.
    const SECRET_PAIR_NAMES: [&str; 16] = [
        "DB_PASSWORD",
        "password",
        "API_TOKEN",
        "api-key",
        "apiKey",
        "client_secret",
        "AWS_SECRET_ACCESS_KEY",
        "/prod/db/password",
        "signing_key",
        "pass",
        "Authorization",
        "Proxy-Authorization",
        "x-api-key",
        "Cookie",
        "session_id",
        "GITHUB_TOKEN",
    ];

    /// Names that are not secrets, and text that is not a name.
    const PLAIN_PAIR_NAMES: [&str; 12] = [
        "region",
        "HOME",
        "PATH",
        "max_tokens",
        "author",
        "public_key",
        "primary_key",
        "key_id",
        "port",
        "p",
        "reset the password token",
        "compass",
    ];

    /// `value` inside `depth` levels of objects and arrays (`{"spec": [{"env": …}]}`).
    fn nest(value: Value, depth: usize) -> Value {
        (0..depth).fold(value, |inner, level| {
            if level % 2 == 0 {
                json!({ "env": [inner], "note": "kept" })
            } else {
                json!([{ "spec": inner }, "kept"])
            }
        })
    }

    /// `text` with its line breaks written `form` times escaped (0: as they are; 1: `\n` in
    /// a JSON string; 2: `\\n`), its quotes escaped to match.
    fn in_string(text: &str, depth: usize) -> String {
        (0..depth).fold(text.to_owned(), |t, _| {
            let quoted = serde_json::to_string(&t).unwrap();
            quoted[1..quoted.len() - 1].to_owned()
        })
    }

    #[test]
    fn a_value_named_by_a_sibling_before_or_after_it_is_redacted_in_yaml_and_json_text() {
        let secret = "Zq81kkPw0dd";
        let yaml_items = [
            format!("- name: DB_PASSWORD\n  value: {secret}"),
            format!("- value: {secret}\n  name: DB_PASSWORD"),
            format!("- name: api_key # rotated\n  description: the key\n  value: \"{secret}\""),
            format!("- data: '{secret}'\n  note: x\n  key: signing_key"),
            format!("- name: TOKEN\n  value: |\n    {secret}\n    {secret}"),
            format!("- Name: password\n  Value: {secret}"),
            format!("- name: DB_PASSWORD\n  value: {secret}'x\"y#z"),
            format!("- value: |\n    {secret}\n  name: API_TOKEN\n  description: kept-too"),
            format!("- name = \"DB_PASSWORD\"\n  value = \"{secret}\""),
        ];
        let json_pairs = [
            format!(r#"{{"value": "{secret}", "name": "DB_PASSWORD"}}"#),
            r#"{"Value": 81234567, "Key": "password"}"#.to_owned(),
            format!("{{\n  \"name\": \"API_TOKEN\",\n  \"value\": [\n    \"{secret}\"\n  ]\n}}"),
            format!(r#"{{"name": "API_TOKEN", "value": {{"a": "{secret}", "b": ["{secret}"]}}}}"#),
            format!(r#"[["Accept", "json"], ["X-Api-Key", "{secret}"], ["cookie", 81234567]]"#),
            format!("{{\n  \"value\": \"{secret}\",\n  \"name\": \"DB_PASSWORD\"\n}}"),
            format!("{{'password': ['a]{secret}', '{secret}']}}"),
            // Other members between the name and the value, either way (AWS parameters).
            format!(r#"{{"Name": "/prod/DB_PASSWORD", "Type": "SecureString", "Value": "{secret}", "Version": 1}}"#),
            format!(r#"{{"Value": "{secret}", "Type": "SecureString", "LastModified": 1.7e9, "Name": "DB_PASSWORD"}}"#),
            format!(r#"{{"Parameter": {{"Name": "/app/db_password", "Type": "SecureString", "Value": "{secret}", "Version": 1, "DataType": "text"}}}}"#),
            format!("{{\n  \"Name\": \"API_TOKEN\",\n  \"Type\": \"SecureString\",\n  \"Enabled\": true,\n  \"Value\": \"{secret}\"\n}}"),
            "{\n  \"Value\": 81234567,\n  \"Tier\": null,\n  \"Key\": \"signing_key\"\n}".to_owned(),
            // Flow mappings on one line: YAML's flow style, JavaScript's object literals.
            format!("env: [{{name: API_TOKEN, value: {secret}}}, {{name: HOME, value: /home}}]"),
            format!("{{ value: '{secret}', kind: x, name: 'DB_PASSWORD' }}"),
            format!("{{key: signing_key, note: \"a, b\", data: \"{secret}\", n: [1, 2]}}"),
            format!("secrets: {{name: password, tier: {{a: 1}}, Value: {secret}}}"),
            format!("{{value: {secret}, tier: {{a: 1}}, name: password}}"),
            format!("{{ name: 'API_TOKEN', value: '{secret}', }}"),
            format!("{{name=DB_PASSWORD, type=x, value={secret}}}"),
            format!("{}{{name: password, value: {secret}}}{}", "{a: ".repeat(70), "}".repeat(70)),
            format!("{{note: \"name: password\", name: DB_PASSWORD, value: {secret}}}"),
            // Eight members between, either way.
            format!(r#"{{"Name": "DB_PASSWORD", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "Value": "{secret}"}}"#),
            format!(r#"{{"Value": "{secret}", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "Name": "DB_PASSWORD"}}"#),
        ];
        // (YAML indents with spaces only.)
        for indent in ["", "  ", "    "] {
            for item in &yaml_items {
                let item = item.replace('\n', &format!("\n{indent}"));
                for eol in ["\n", "\r\n"] {
                    let yaml = format!("env:\n{indent}{}\n{indent}- name: HOME\n{indent}  value: /home/kept\nnext: kept", item.replace('\n', eol));
                    for depth in 0..3 {
                        let text = in_string(&yaml, depth);
                        let clean = redact_text(&text);
                        assert!(!clean.contains(secret), "{text}\n{clean}");
                        assert!(!clean.contains("81234567"), "{text}\n{clean}");
                        for kept in ["/home/kept", "next: kept", "HOME", "name: API_TOKEN"] {
                            if kept == "name: API_TOKEN" && !item.contains(kept) {
                                continue;
                            }
                            assert!(clean.contains(kept), "lost {kept}: {text}\n{clean}");
                        }
                        assert_eq!(redact_text(&clean), clean, "not idempotent: {text}");
                    }
                }
            }
        }
        for pair in &json_pairs {
            for depth in 0..3 {
                let text = format!("said {} twice", in_string(pair, depth));
                let clean = redact_text(&text);
                assert!(!clean.contains(secret) && !clean.contains("81234567"), "{text}\n{clean}");
                assert!(clean.starts_with("said ") && clean.ends_with(" twice"), "{text}\n{clean}");
                assert_eq!(redact_text(&clean), clean, "not idempotent: {text}");
            }
            if let Ok(mut value) = serde_json::from_str::<Value>(pair) {
                redact_json(&mut value);
                let stored = value.to_string();
                assert!(!stored.contains(secret) && !stored.contains("81234567"), "{stored}");
            }
        }
        // Names that are not secrets, and entries that are not beside one, keep their values.
        for kept in [
            "- name: USER\n  value: alice-kept",
            "- name: DB_PASSWORD\n- value: alice-kept",
            "name: DB_PASSWORD\nother:\n  value: alice-kept",
            r#"{"value": "alice-kept", "note": "x", "name": "user"}"#,
            r#"[["Authorization", "Accept"], ["token", "refresh"]]"#,
            r#"{"value": "alice-kept"}, {"name": "DB_PASSWORD"}"#,
            r#"{"value": "alice-kept"}, {"Type": "x", "name": "DB_PASSWORD"}"#,
            r#"[{"name": "DB_PASSWORD", "Type": "x"}, {"value": "alice-kept"}]"#,
            r#"{"Name": "user", "Type": "String", "Value": "alice-kept", "Version": 2}"#,
            "{name: user, value: alice-kept}",
            "[{name: DB_PASSWORD}, {value: alice-kept}]",
            "{value: alice-kept} {name: DB_PASSWORD}",
            "fn f() { name: password, value: alice-kept",
            // Prose or a new document at the mapping's column ends it.
            "name: DB_PASSWORD\nSome prose.\ndata: alice-kept",
            "name: DB_PASSWORD\n---\ndata: alice-kept",
            // Code: a block after an unquoted name keeps its lines.
            "session: {\n    strategy: alice-kept,\n  },",
        ] {
            let clean = redact_text(kept);
            if kept.contains("alice-kept") {
                assert!(clean.contains("alice-kept"), "{kept}\n{clean}");
            } else {
                assert_eq!(clean, kept);
            }
        }
        // Inputs a pass once read in quadratic time (a regex restarting over a long run of
        // names, backslash runs counted at every byte): each is read once here.
        for text in [
            format!("{}password", "name:".repeat(50_000)),
            format!("name: password #{}", "\\".repeat(100_000)),
            format!("\"{}\", \"name\": \"password\"", "\\".repeat(200_000)),
            format!("\"password\": [{}", "\\".repeat(200_000)),
            format!("name: password\nvalue: a{}", "''".repeat(50_000)),
            "name: password, ".repeat(65_536),
            format!("{{{}}}", "name: password, ".repeat(65_536)),
            "{name: password, t: {{{{{{{{{{".repeat(40_000),
            "{name: password, v: 'a, ".repeat(40_000),
        ] {
            assert!(!redact_text(&text).is_empty());
        }
    }

    #[test]
    fn a_key_named_only_by_the_object_it_is_in_is_redacted_when_it_looks_like_one() {
        let secrets = ["9f86d081884c7d659a2feaa0c55ad015", "V11kkkHidden7", "aB3/xY9+qR7=zz"];
        let spellings = ["key", "Key", "KEY"];
        for parent in
            ["openai", "OpenAI", "sendgrid", "github-app", "myVendor", "stripe_live", "anthropic2"]
        {
            for (i, secret) in secrets.iter().enumerate() {
                let key = spellings[i % spellings.len()];
                for mut value in [
                    json!({ parent: { key: secret } }),
                    json!({ "providers": { parent: { key: secret, "model": "m-1" } } }),
                    json!({ "a": [{ "b": { parent: { "url": "https://x.io", key: secret } } }] }),
                ] {
                    let written = value.to_string();
                    redact_json(&mut value);
                    let stored = value.to_string();
                    assert!(!stored.contains(secret), "{written} -> {stored}");
                    assert!(stored.contains(parent), "{written} -> {stored}");
                    assert_eq!(redacted_json(&value), value, "{written}");
                }
            }
        }
        // Another kind of key under its parent, a key that is a word, and objects in arrays (AWS
        // tags), where no parent names the key, keep theirs.
        for kept in [
            json!({"primary": {"key": "V11kkkHidden7"}}),
            json!({"cache": {"key": "user:42:profile"}}),
            json!({"sortKey": {"key": "created2"}}),
            json!({"partition": {"key": "tenant-9f86d0"}}),
            json!({"openai": {"key": "default"}}),
            json!({"shortcut": {"key": "Enter"}}),
            json!({"tags": [{"Key": "Environment2", "Value": "prod"}]}),
            json!([{"key": "V11kkkHidden7"}]),
            json!({"key": "V11kkkHidden7"}),
            json!({"openai": {"keys": 3, "key_id": "kid-1"}}),
        ] {
            assert_eq!(redacted_json(&kept), kept);
        }
        // A parent that is not ASCII is read by its bytes, never cut inside a character.
        for parent in ["ключ", "жkey", "ke", "\u{e9}ey", "k\u{e9}y"] {
            redacted_json(&json!({ parent: { "key": "V11kkkHidden7" } }));
        }
    }

    #[test]
    fn a_secret_named_by_a_sibling_or_the_item_before_it_is_redacted() {
        // The reported shapes.
        let mut value = json!({
            "env": [{"name": "DB_PASSWORD", "value": "V11kkkHidden7"}],
            "tags": [{"Key": "password", "Value": "V11kkkHidden7"}, {"Key": "team", "Value": "core"}],
            "secrets": [{"Name": "API_TOKEN", "Value": "V11kkkHidden7"}],
            "argv": ["deploy", "--password", "hunter2x", "--region", "eu", "-p", "8080", "--token", 42],
            // Lists of words are data: tags, a search's words, a pair of header names.
            "labels": ["auth", "token", "expiry", "password", "reset"],
            "words": [["Authorization", "Accept"], ["token", "refresh"]],
        });
        redact_json(&mut value);
        let stored = value.to_string();
        for secret in ["V11kkkHidden7", "hunter2x", "42"] {
            assert!(!stored.contains(secret), "{secret}: {stored}");
        }
        for kept in [
            "DB_PASSWORD",
            "\"core\"",
            "\"eu\"",
            "\"8080\"",
            "--token",
            r#"["auth","token","expiry","password","reset"]"#,
            r#"[["Authorization","Accept"],["token","refresh"]]"#,
        ] {
            assert!(stored.contains(kept), "{kept}: {stored}");
        }
        // The same lists written as text keep their words too.
        for words in [
            r#"["auth","token","expiry"]"#,
            r#"["password", "reset"]"#,
            "[\n  \"token\",\n  \"refresh\"\n]",
        ] {
            assert_eq!(redact_text(words), words);
        }
        assert_eq!(redacted_json(&value), value);
        // Every spelling of the members, every kind of value, at any depth.
        let values = [
            json!("V11kkkHidden7"),
            json!(9_731_902_557_u64),
            json!(["V11kkkHidden7"]),
            json!({"inner": "V11kkkHidden7"}),
        ];
        for name in SECRET_PAIR_NAMES.iter().chain(&PLAIN_PAIR_NAMES) {
            let secret = SECRET_PAIR_NAMES.contains(name);
            for name_key in ["name", "Name", "NAME", "key", "Key", "KEY"] {
                for value_key in ["value", "Value", "VALUE", "values", "val", "data", "Data"] {
                    for inner in &values {
                        for depth in 0..4 {
                            let pair = json!({ name_key: name, value_key: inner, "ok": "kept" });
                            let stored = redacted_json(&nest(pair.clone(), depth));
                            let text = stored.to_string();
                            assert_eq!(
                                text.contains("V11kkkHidden7") || text.contains("9731902557"),
                                !secret,
                                "{name_key}={name} {value_key}: {text}"
                            );
                            assert!(text.contains("\"kept\"") && text.contains(name), "{text}");
                            assert_eq!(redacted_json(&stored), stored, "{text}");
                            // The same JSON written as text, compact, pretty or in a string.
                            let nested = nest(pair.clone(), depth);
                            let compact = nested.to_string();
                            // Pretty-printed, an array or object value opens lines of its
                            // own, which text reads as more of the line's value only for a
                            // string or number.
                            let leaf = inner.is_string() || inner.is_number();
                            let pretty = serde_json::to_string_pretty(&nested).unwrap();
                            let mut forms = vec![compact.clone(), json_escaped(&compact, 1)];
                            forms.extend(leaf.then_some(pretty));
                            for written in forms {
                                let clean = redact_text(&written);
                                assert_eq!(
                                    clean.contains("V11kkkHidden7") || clean.contains("9731902557"),
                                    !secret,
                                    "{written} -> {clean}"
                                );
                                assert!(clean.contains("kept"), "{written} -> {clean}");
                                assert_eq!(redact_text(&clean), clean, "{written}");
                            }
                        }
                    }
                }
            }
            for dashes in ["", "-", "--"] {
                for inner in &values {
                    for depth in 0..4 {
                        let argv = json!(["run", format!("{dashes}{name}"), inner, "kept"]);
                        let stored = redacted_json(&nest(argv.clone(), depth));
                        let text = stored.to_string();
                        // Only a string or number after a flag is its value: a bare word in a
                        // list is data.
                        let leaf = !dashes.is_empty() && (inner.is_string() || inner.is_number());
                        assert_eq!(
                            text.contains("V11kkkHidden7") || text.contains("9731902557"),
                            !(secret && leaf),
                            "{dashes}{name} {inner}: {text}"
                        );
                        assert!(text.contains("\"kept\""), "{text}");
                        assert_eq!(redacted_json(&stored), stored, "{text}");
                        // Written as text, a string or number item goes the same way.
                        let nested = nest(argv, depth);
                        let compact = nested.to_string();
                        let pretty = serde_json::to_string_pretty(&nested).unwrap();
                        for written in [compact.clone(), pretty, json_escaped(&compact, 1)] {
                            let clean = redact_text(&written);
                            if secret && leaf {
                                assert!(
                                    !clean.contains("V11kkkHidden7")
                                        && !clean.contains("9731902557"),
                                    "{written} -> {clean}"
                                );
                            }
                            if !secret {
                                assert_eq!(clean, written.as_str());
                            }
                            assert!(clean.contains("kept"), "{written} -> {clean}");
                            assert_eq!(redact_text(&clean), clean, "{written}");
                        }
                    }
                }
            }
        }
    }

    /// What the capture groups of [`NAMES`] say about a match, to check [`NamePair::parse`].
    fn pair_by_captures(text: &str, at: usize) -> Option<(Range<usize>, NamePair)> {
        let caps = NAMES.captures_at(text, at)?;
        let (whole, name, sep) = (caps.get(0)?, caps.name("name")?, caps.name("sep")?.as_str());
        let sep = if sep == ">" {
            Sep::Element
        } else if sep.contains(',') {
            Sep::Comma
        } else if sep == "(" {
            Sep::Compact
        } else if !sep.contains([':', '=']) {
            Sep::Bare
        } else if sep.contains([' ', '\t']) {
            Sep::Spaced
        } else {
            Sep::Compact
        };
        let quoted = caps.name("close").is_some();
        Some((whole.range(), NamePair { name_len: name.len(), quoted, sep }))
    }

    /// Pieces that make up text likely to confuse the policy: names, separators, quotes,
    /// escapes, brackets, shapes, scheme words and redacted values.
    fn fragment() -> impl Strategy<Value = String> {
        let samples = corpus::samples(3).unwrap();
        let pieces: Vec<String> = samples.iter().map(|s| s.text.clone()).collect();
        let fixed = [
            "password",
            "token",
            "Authorization",
            "pwd",
            "api_key",
            "cookie",
            "session",
            "secret",
            ": ",
            "=",
            " ",
            " = ",
            " is ",
            ":",
            "\"",
            "'",
            "`",
            "\\\"",
            "\\",
            ",",
            ";",
            "&",
            "\n",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            "[REDACTED]",
            "Bearer ",
            "Basic ",
            "://",
            "@",
            "sk-",
            "AKIA",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
            "-----END RSA PRIVATE KEY-----",
            "=>",
            ":=",
            " was ",
            "\t",
            " IS ",
            "api key",
            "x-api-key",
            "hunter2",
            "abc123XYZ",
            "user",
            "x_",
            "é",
            "日本",
            "\n  ",
            "\n    ",
            "\r\n",
            "\\n",
            "\\\\n",
            "|",
            ">-",
            "<",
            ">",
            "</",
            "<password>",
            "</password>",
            "<![CDATA[",
            "]]>",
            "%3D",
            "%3A",
            "%40",
            "%2F",
            "%22",
            "%25",
            "%0A",
            "\\u0070",
            "\\u003d",
            "\\u0022",
            "\\\\\\\"",
            "\\\\",
            "value=",
            "key=\"ApiKey\" ",
            "eyAi",
            "eyJhbGciOiJIUzI1NiJ9.",
            ":8080/",
            "name: ",
            "- name: ",
            "value: ",
            "  - value: ",
            "\"name\": ",
            "\"value\": ",
            "\"Key\":\"",
            "\\\"name\\\": \\\"",
            "DB_PASSWORD",
            " # note",
            "[[\"",
            "\", ",
        ];
        prop_oneof![
            prop::sample::select(pieces),
            prop::sample::select(fixed.map(String::from).to_vec()),
            "[ -~]{0,12}",
            "\\PC{0,4}",
        ]
    }

    fn confusing_text() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 0..12).prop_map(|v| v.concat())
    }

    fn confusing_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            confusing_text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((confusing_text(), inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// Prose built from words that name secrets but carry no value.
    fn prose() -> impl Strategy<Value = String> {
        let words = [
            "the",
            "password",
            "reset",
            "flow",
            "token",
            "usage",
            "secret",
            "sauce",
            "session",
            "ended",
            "auth",
            "middleware",
            "basic",
            "Bearer",
            "instruments",
            "api",
            "key",
            "rotation",
            "cookie",
            "banner",
            "is",
            "was",
            "credentials",
            "expired",
            "private",
            "access",
            "task-orchestrator",
            "128000",
            "2024-01-01",
            "review",
            "agent",
            "wrote",
            "tests",
            "and",
            "of",
            "Password",
            "Token",
            "TOKEN",
            "risk-assessment",
            "task_test",
            "pass",
            "Pass",
            "PASS",
            "compass",
            "bypass",
            "passed",
            "passenger",
            "creds",
            "master",
            "signing",
            "deploy",
            "ssh",
            "primary",
            "monkey",
            "keyboard",
        ];
        let punct = ["", "", "", ".", ",", "!", "?", " (see notes)", ";"];
        prop::collection::vec(
            (prop::sample::select(words.to_vec()), prop::sample::select(punct.to_vec())),
            0..16,
        )
        .prop_map(|v| v.into_iter().map(|(w, p)| format!("{w}{p}")).collect::<Vec<_>>().join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn redacting_text_twice_changes_nothing(text in confusing_text()) {
            let once = redact_text(&text);
            prop_assert_eq!(redact_text(&once), once.clone(), "input {:?}", text);
        }

        #[test]
        fn redacting_any_text_never_panics_and_is_idempotent(text in any::<String>()) {
            let once = redact_text(&text);
            prop_assert_eq!(redact_text(&once), once.clone());
        }

        #[test]
        fn redacting_json_twice_changes_nothing(value in confusing_json()) {
            let once = redacted_json(&value);
            prop_assert_eq!(redacted_json(&once), once);
        }

        /// Escapes make the text two readings; a replacement one makes must not leave the
        /// other something new to find: every name, escaped sign, opener and shape together.
        #[test]
        fn escaped_signs_before_any_value_redact_to_a_fixed_point(
            name in prop::sample::select(vec![
                "key=\"ApiKey\"", "ApiKey", "\"ApiKey\"", "password", "'token'", "\\\"secret\\\"",
                "api_key", "<add key=\"Password\"", "Authorization",
            ]),
            gap in prop::sample::select(vec!["", " ", "\t", "  "]),
            sign in prop::sample::select(vec![
                "%3D", "%3d", "%253D", "%3A", "\\u003d", "\\u003A", "%22%3A%22", "%3A%20", "%2525253D", "",
            ]),
            opener in prop::sample::select(vec!["{\"note\":\"", "\"", "'", "[", "(", "", "%22", "%7B", "\\u0022"]),
            which in any::<prop::sample::Index>(), seed in 0u64..1000,
            tail in prop::sample::select(vec![
                "\",\"ok\":\"kept\"}", " next", "", "&x=1", "%26x%3D1", "\"/>", " \nnext", " \n\",\"ok\":1}",
            ]),
        ) {
            let shapes = corpus::shapes(seed).unwrap();
            let shape = which.get(&shapes);
            let text = format!("{name}{gap}{sign}{opener}{}{tail}", shape.text);
            let once = redact_text(&text);
            prop_assert_eq!(redact_text(&once), once.clone(), "input {:?}", text);
            // A value on the line after its name is a word alone on that line (see
            // `next_line_value`): the text must end that line for it to be one.
            if tail.is_empty() || tail.starts_with(" \n") {
                let secret = &shape.text[shape.secret.clone()];
                prop_assert!(!once.contains(secret), "{:?} left {:?}", text, once);
            }
            let json = redacted_json(&json!({ text.clone(): null, "v": text }));
            prop_assert_eq!(redacted_json(&json), json);
        }

        #[test]
        fn a_secret_never_survives_whatever_surrounds_it(
            before in "[ -~\\n]{0,40}", after in "[ -~\\n]{0,40}", which in any::<prop::sample::Index>(),
            seed in 0u64..1000,
        ) {
            let shapes = corpus::shapes(seed).unwrap();
            let shape = which.get(&shapes);
            // A value written to the end of its line ends with the line.
            let text = format!("{before} {} \n{after}", shape.text);
            let secret = &shape.text[shape.secret.clone()];
            let sample = corpus::Sample {
                name: shape.name.clone(), context: corpus::Context::Line, secret: secret.into(),
                text: text.clone(), kept: vec![],
            };
            let clean = redact_text(&text);
            prop_assert_eq!(sample.leaked_in(clean.as_bytes()), None, "{}", clean);
            let json = redacted_json(&json!({"free": text, "list": [text], text.clone(): 1}));
            prop_assert_eq!(sample.leaked_in(json.to_string().as_bytes()), None);
        }

        #[test]
        fn keys_longer_than_their_patterns_beside_other_shapes_go_whole(
            prefix in prop::sample::select(GENERIC_PREFIXES.to_vec()),
            tail in "[A-Za-z0-9]{250,700}", glue in prop::sample::select(vec!["", "_", "-", " ", "_KEY_", "\n"]),
            which in any::<prop::sample::Index>(), seed in 0u64..1000,
        ) {
            let long = format!("{prefix}Ab3{tail}");
            let shapes = corpus::shapes(seed).unwrap();
            let other = which.get(&shapes);
            let after = format!("{long}{glue}{}", other.text);
            let before = format!("{}{glue}{long}", other.text);
            for (text, apart) in [(after, glue.contains([' ', '\n'])), (before, glue == "\n")] {
                let clean = redact_text(&text);
                prop_assert!(!clean.contains(&tail[..40]), "{}", clean);
                // Glued to the key without a blank, a name (`sk-…_AWS_SECRET_ACCESS_KEY = v`)
                // reads as more of the key and goes with it, so its value is judged alone; a
                // value below its name is one standing alone on its line.
                if apart {
                    let secret = &other.text[other.secret.clone()];
                    prop_assert!(!clean.contains(secret), "{} in {}", secret, clean);
                }
            }
        }

        #[test]
        fn name_pairs_are_taken_apart_as_the_capture_groups_do(text in confusing_text()) {
            let mut at = 0;
            while let Some((whole, by_captures)) = pair_by_captures(&text, at) {
                prop_assert_eq!(NamePair::parse(&text[whole.clone()]), by_captures, "{:?}", &text[whole.clone()]);
                at = whole.start + by_captures.name_len;
            }
        }

        #[test]
        fn a_value_below_its_name_never_survives(
            name in prop::sample::select(vec![
                "password", "DB_PASSWORD", "api_key", "\"password\"", "'client_secret'", "x-api-key", "Token",
            ]),
            sign in prop::sample::select(vec![":", "=", " = ", ": ", ":=", " => "]),
            indicator in prop::sample::select(vec!["", "", " |", " >-", " |+2"]),
            line_break in prop::sample::select(vec!["\n", "\r\n"]),
            (name_indent, more, blank_lines) in (0usize..4, 1usize..5, 0usize..3),
            layout in 0usize..3,
            // A word that holds no letter or digit alone on its line is kept (see next_line_value).
            secret in "[A-Za-z0-9!#*^]{6,14}[a-z][0-9]",
            depth in 0usize..3,
        ) {
            let pad = " ".repeat(name_indent);
            let value = match layout {
                0 => format!("{pad}{}\"{secret}\"", " ".repeat(more)),
                1 => format!("{pad}{}{secret}", " ".repeat(more)),
                _ => secret.clone(),
            };
            let blank = line_break.repeat(blank_lines);
            let text = format!(
                "{pad}{name}{sign}{indicator}{line_break}{blank}{value}{line_break}{pad}zz_next: kept"
            );
            let text = match depth {
                0 => text,
                _ => format!(r#"{{"note":"{}","ok":"kept"}}"#, json_escaped(&text, depth)),
            };
            let clean = redact_text(&text);
            prop_assert!(!clean.contains(&secret), "{:?} -> {:?}", text, clean);
            prop_assert!(clean.contains("zz_next: kept"), "{:?} -> {:?}", text, clean);
            prop_assert_eq!(redact_text(&clean), clean.clone());
        }

        /// Words of letters with the punctuation of prose between them (a comma glued to the
        /// next word, `pwd abcd,e`, is a symbol inside a value, which a credential may hold).
        #[test]
        fn text_without_secrets_is_unchanged(
            words in prop::collection::vec(
                ("[a-z]{1,10}", prop::sample::select(vec![" ", ", ", ". ", "  ", "\n"])),
                0..12,
            ),
        ) {
            let text: String = words.iter().map(|(w, p)| format!("{w}{p}")).collect();
            prop_assert_eq!(redact_text(&text), text.as_str());
        }

        /// Pairs and arguments made of any names, members and values, in arrays and objects
        /// of any shape, redact to a fixed point, and no value a secret name names survives.
        #[test]
        fn values_named_by_siblings_never_survive_and_redact_to_a_fixed_point(
            items in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(SECRET_PAIR_NAMES.to_vec()).prop_map(|n| json!(n)),
                    prop::sample::select(PLAIN_PAIR_NAMES.to_vec()).prop_map(|n| json!(n)),
                    prop::sample::select(SECRET_PAIR_NAMES.to_vec()).prop_map(|n| json!(format!("--{n}"))),
                    "[A-Za-z0-9]{10,14}".prop_map(|s| json!(format!("S3cr{s}"))),
                    any::<i64>().prop_map(|n| json!(n)),
                    Just(json!("[REDACTED]")),
                    Just(Value::Null),
                    confusing_text().prop_map(Value::String),
                ],
                0..8,
            ),
            keys in prop::collection::vec(
                prop::sample::select(vec!["name", "Key", "value", "Value", "data", "val", "id", "x"]),
                0..8,
            ),
            depth in 0usize..4,
        ) {
            let object: Map<String, Value> = keys.iter().map(|k| (*k).to_owned()).zip(items.iter().cloned()).collect();
            for value in [nest(Value::Array(items.clone()), depth), nest(Value::Object(object.clone()), depth)] {
                let once = redacted_json(&value);
                prop_assert_eq!(redacted_json(&once), once.clone(), "{}", value);
            }
            let once = redacted_json(&Value::Array(items.clone()));
            for (k, pair) in items.windows(2).enumerate() {
                if pair[0].as_str().is_some_and(|s| s.starts_with('-') && SECRET_PAIR_NAMES.contains(&s.trim_start_matches('-')))
                    && (pair[1].is_string() || pair[1].is_number())
                {
                    prop_assert_eq!(&once[k + 1], REDACTED, "{:?}", items);
                }
            }
            let named = object.iter().any(|(k, v)| {
                ["name", "key"].contains(&k.to_ascii_lowercase().as_str())
                    && v.as_str().is_some_and(|s| SECRET_PAIR_NAMES.contains(&s))
            });
            let once = redacted_json(&Value::Object(object.clone()));
            for (k, v) in &object {
                if named && ["value", "data", "val"].contains(&k.to_ascii_lowercase().as_str())
                    && (v.is_string() || v.is_number())
                {
                    prop_assert_eq!(&once[k], REDACTED, "{:?}", object);
                }
            }
            // The same object as text: JSON (compact, pretty, inside a string) and, when its
            // values are plain, a flow mapping. Other members may stand between name and value.
            let secrets: Vec<&str> = object
                .iter()
                .filter(|(k, _)| named && ["value", "data", "val"].contains(&k.to_ascii_lowercase().as_str()))
                .filter_map(|(_, v)| v.as_str().filter(|s| s.starts_with("S3cr")))
                .collect();
            let compact = Value::Object(object.clone()).to_string();
            let mut forms = vec![
                compact.clone(),
                serde_json::to_string_pretty(&Value::Object(object.clone())).unwrap(),
                json_escaped(&compact, 1),
            ];
            let plain = |v: &Value| match v {
                Value::String(s) => (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then(|| s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Null => Some("null".to_owned()),
                _ => None,
            };
            let entries: Option<Vec<String>> = object.iter().map(|(k, v)| plain(v).map(|v| format!("{k}: {v}"))).collect();
            forms.extend(entries.map(|e| format!("env: [{{{}}}]", e.join(", "))));
            for written in forms {
                let clean = redact_text(&written);
                for secret in &secrets {
                    prop_assert!(!clean.contains(secret), "{} -> {}", written, clean);
                }
                prop_assert_eq!(redact_text(&clean), clean.clone(), "{}", written);
            }
        }

        #[test]
        fn prose_naming_secrets_is_unchanged(text in prose()) {
            prop_assert_eq!(redact_text(&text), text.as_str());
            let value = json!({"note": text, "list": [text]});
            prop_assert_eq!(redacted_json(&value), value);
        }
    }
}
