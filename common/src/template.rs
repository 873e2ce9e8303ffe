//! Request templates (`{{ expr }}` in paths, headers and bodies): compiled once, rendered per request.
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;

use rand::Rng;

/// Every form an expression may take, for error messages.
const EXPECTED_EXPR: &str = "a variable name (`user_id`, `worker_index`, a `vars:` entry or a captured variable), \
     or a function: `uuid()`, `random_int(MIN, MAX)`, `random_choice(\"a\", \"b\", ...)`, \
     `random_string(N)`, `sequence()`, `now()`, `base64(...)` or `env(\"NAME\")`";

/// The functions a template may call, for "did you mean".
pub const FUNCTIONS: [&str; 8] = [
    "uuid",
    "random_int",
    "random_choice",
    "random_string",
    "sequence",
    "now",
    "base64",
    "env",
];

/// The variables every template can use without defining them.
pub const BUILT_INS: [&str; 2] = ["user_id", "worker_index"];

/// The longest `random_string(N)`: a request body may be large, but one
/// expression should not be a way to ask a worker for gigabytes.
pub const MAX_RANDOM_STRING: usize = 1 << 20;

/// Why a template was rejected; each message quotes the offending text so the
/// scenario author can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` in `{0}`: expected `}}}}` to end the expression")]
    Unclosed(String),
    #[error("empty expression `{0}`: expected {EXPECTED_EXPR}")]
    Empty(String),
    #[error("cannot read expression `{0}`: expected {EXPECTED_EXPR}")]
    BadExpression(String),
    #[error(
        "unknown function `{name}` in `{text}`{hint}: expected one of uuid(), random_int(MIN, MAX), random_choice(\"a\", ...), random_string(N), sequence(), now(), base64(...), env(\"NAME\")"
    )]
    UnknownFunction {
        name: String,
        text: String,
        hint: String,
    },
    #[error("bad arguments in `{text}`: expected {expected}")]
    BadArguments {
        text: String,
        expected: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("undefined variable `{0}`: it is neither built in nor captured by an earlier request")]
    Undefined(String),
    /// For callers whose rendered text fails a later check (a path or header
    /// value that HTTP rejects), so they need not misuse `Undefined`.
    #[error("the rendered request is not a {0}")]
    Invalid(String),
}

/// What a render can see: the built-ins plus whatever this user captured so far.
pub struct Vars<'a> {
    pub user_id: u64,
    pub worker_index: u32,
    pub captured: &'a HashMap<String, String>,
    /// The user's `sequence()` counter (1, 2, 3, ... per user); None counts from 1 every time.
    pub sequence: Option<&'a Cell<u64>>,
}

/// One argument of `base64(...)`: pieces joined before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Lit(String),
    Var(String),
    UserId,
    WorkerIndex,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    UserId,
    WorkerIndex,
    Var(String),
    Uuid,
    RandomInt(i64, i64),
    RandomChoice(Vec<String>),
    RandomString(usize),
    Sequence,
    /// Milliseconds since the Unix epoch.
    Now,
    Base64(Vec<Arg>),
    /// Resolved on the coordinator when the file is loaded ([`expand_env`]);
    /// one left in a template renders as an error.
    Env(String, Option<String>),
}

impl Expr {
    /// Numeric expressions may be emitted as bare JSON numbers.
    fn is_numeric(&self) -> bool {
        matches!(
            self,
            Expr::UserId | Expr::WorkerIndex | Expr::RandomInt(..) | Expr::Sequence | Expr::Now
        )
    }
}

/// How an expression's value is written: raw text, or escaped for the inside
/// of a JSON string literal (so a captured `"` cannot break the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    Raw,
    JsonString,
    /// Percent-encoded for a query string or form body (all but unreserved characters).
    Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Expr(Expr, Escape),
}

/// A compiled template: adjacent literal text is merged, so a template without
/// expressions is a single literal that callers can pre-build once.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// Referenced non-built-in variables, deduplicated, in order of appearance.
    vars: Vec<String>,
}

/// One piece of a template string before it is placed into a `Template`.
enum Seg<'a> {
    Lit(&'a str),
    Expr(Expr),
}

/// Accumulates parts, merging literals, so compile paths share one builder.
#[derive(Default)]
struct Builder {
    parts: Vec<Part>,
    lit: String,
    vars: Vec<String>,
}

impl Builder {
    fn lit(&mut self, s: &str) {
        self.lit.push_str(s);
    }

    fn expr(&mut self, e: Expr, esc: Escape) {
        if !self.lit.is_empty() {
            self.parts.push(Part::Lit(std::mem::take(&mut self.lit)));
        }
        let mut note = |name: &String| {
            if !self.vars.contains(name) {
                self.vars.push(name.clone());
            }
        };
        match &e {
            Expr::Var(name) => note(name),
            Expr::Base64(args) => {
                for a in args {
                    if let Arg::Var(name) = a {
                        note(name);
                    }
                }
            }
            _ => {}
        }
        self.parts.push(Part::Expr(e, esc));
    }

    fn finish(mut self) -> Template {
        if !self.lit.is_empty() {
            self.parts.push(Part::Lit(self.lit));
        }
        Template {
            parts: self.parts,
            vars: self.vars,
        }
    }

    /// Writes `k=v&k=v`, literals and substituted values percent-encoded.
    fn pairs(&mut self, pairs: &[(String, String)]) -> Result<(), TemplateError> {
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                self.lit("&");
            }
            for (j, text) in [k, v].into_iter().enumerate() {
                if j == 1 {
                    self.lit("=");
                }
                for seg in parse(text)? {
                    match seg {
                        Seg::Lit(l) => escape_url_into(l, &mut self.lit),
                        Seg::Expr(e) => self.expr(e, Escape::Url),
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes a JSON value; string keys and values may hold expressions.
    fn json(&mut self, v: &serde_json::Value) -> Result<(), TemplateError> {
        use serde_json::Value;
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => {
                // serde_json's own text, so static bodies match `to_string()` exactly.
                self.lit(&v.to_string());
            }
            Value::String(s) => self.json_string(s, true)?,
            Value::Array(items) => {
                self.lit("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.lit(",");
                    }
                    self.json(item)?;
                }
                self.lit("]");
            }
            Value::Object(map) => {
                self.lit("{");
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        self.lit(",");
                    }
                    self.json_string(k, false)?;
                    self.lit(":");
                    self.json(item)?;
                }
                self.lit("}");
            }
        }
        Ok(())
    }

    /// A string that is exactly one numeric expression becomes a bare number
    /// (when `may_unquote`), so `"{{ random_int(1, 10) }}"` yields `7`, not `"7"`.
    fn json_string(&mut self, s: &str, may_unquote: bool) -> Result<(), TemplateError> {
        let mut segs = parse(s)?;
        if may_unquote
            && let [Seg::Expr(e)] = segs.as_slice()
            && e.is_numeric()
        {
            let Some(Seg::Expr(e)) = segs.pop() else {
                unreachable!("checked to be a single expression above")
            };
            self.expr(e, Escape::Raw);
            return Ok(());
        }
        self.lit("\"");
        for seg in segs {
            match seg {
                Seg::Lit(l) => escape_json_into(l, &mut self.lit),
                Seg::Expr(e) => self.expr(e, Escape::JsonString),
            }
        }
        self.lit("\"");
        Ok(())
    }
}

impl Template {
    pub fn compile(text: &str) -> Result<Template, TemplateError> {
        let mut b = Builder::default();
        for seg in parse(text)? {
            match seg {
                Seg::Lit(l) => b.lit(l),
                Seg::Expr(e) => b.expr(e, Escape::Raw),
            }
        }
        Ok(b.finish())
    }

    /// Compiles a JSON body (`json:` in a request) to compact JSON text in
    /// which substituted values are JSON-escaped.
    pub fn compile_json(v: &serde_json::Value) -> Result<Template, TemplateError> {
        let mut b = Builder::default();
        b.json(v)?;
        Ok(b.finish())
    }

    /// Compiles `key=value&...` pairs (a query string or a form body), keys and
    /// values percent-encoded, substituted values included.
    pub fn compile_pairs(pairs: &[(String, String)]) -> Result<Template, TemplateError> {
        let mut b = Builder::default();
        b.pairs(pairs)?;
        Ok(b.finish())
    }

    /// Compiles a path with query parameters appended (`?` or `&` as needed).
    pub fn compile_url(path: &str, query: &[(String, String)]) -> Result<Template, TemplateError> {
        let mut b = Builder::default();
        for seg in parse(path)? {
            match seg {
                Seg::Lit(l) => b.lit(l),
                Seg::Expr(e) => b.expr(e, Escape::Raw),
            }
        }
        if !query.is_empty() {
            b.lit(if path.contains('?') { "&" } else { "?" });
            b.pairs(query)?;
        }
        Ok(b.finish())
    }

    /// Some(text) iff there are no expressions: lets callers pre-build static requests once.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Captured variables this template needs (built-ins excluded), so a
    /// scenario can be checked for variables nothing captures before any traffic.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(String::as_str)
    }

    /// Appends the rendered text to `out` without allocating anything else.
    /// On error `out` is left as it was.
    pub fn render<R: rand::Rng>(
        &self,
        vars: &Vars<'_>,
        rng: &mut R,
        out: &mut String,
    ) -> Result<(), RenderError> {
        let start = out.len();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Expr(e, esc) => {
                    if let Err(err) = render_expr(e, *esc, vars, rng, out) {
                        out.truncate(start);
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }
}

fn render_expr<R: Rng>(
    e: &Expr,
    esc: Escape,
    vars: &Vars<'_>,
    rng: &mut R,
    out: &mut String,
) -> Result<(), RenderError> {
    // Writing to a String cannot fail, hence the ignored fmt::Results.
    match e {
        Expr::UserId => {
            let _ = write!(out, "{}", vars.user_id);
        }
        Expr::WorkerIndex => {
            let _ = write!(out, "{}", vars.worker_index);
        }
        Expr::RandomInt(lo, hi) => {
            let _ = write!(out, "{}", rng.random_range(*lo..=*hi));
        }
        Expr::Uuid => push_uuid_v4(rng.random::<u128>(), out),
        Expr::Var(name) => {
            let value = vars
                .captured
                .get(name.as_str())
                .ok_or_else(|| RenderError::Undefined(name.clone()))?;
            push_escaped(value, esc, out);
        }
        Expr::RandomChoice(choices) => {
            let pick = &choices[rng.random_range(0..choices.len())];
            push_escaped(pick, esc, out);
        }
        Expr::RandomString(n) => {
            const ALPHABET: &[u8; 62] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            out.reserve(*n);
            for _ in 0..*n {
                out.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
            }
        }
        Expr::Sequence => {
            let n = match vars.sequence {
                Some(c) => {
                    let n = c.get().saturating_add(1);
                    c.set(n);
                    n
                }
                None => 1,
            };
            let _ = write!(out, "{n}");
        }
        Expr::Now => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let _ = write!(out, "{ms}");
        }
        Expr::Base64(args) => {
            use base64::Engine as _;
            let mut raw = String::new();
            for a in args {
                match a {
                    Arg::Lit(s) => raw.push_str(s),
                    Arg::UserId => {
                        let _ = write!(raw, "{}", vars.user_id);
                    }
                    Arg::WorkerIndex => {
                        let _ = write!(raw, "{}", vars.worker_index);
                    }
                    Arg::Var(name) => raw.push_str(
                        vars.captured
                            .get(name.as_str())
                            .ok_or_else(|| RenderError::Undefined(name.clone()))?,
                    ),
                }
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
            // The alphabet needs no JSON escaping, but `+`, `/`, `=` need URL escaping.
            push_escaped(&encoded, esc, out);
        }
        Expr::Env(name, _) => {
            return Err(RenderError::Undefined(format!("env(\"{name}\")")));
        }
    }
    Ok(())
}

/// Replaces every `{{ env("NAME") }}` (or `{{ env("NAME", "default") }}`) in
/// `text` by the variable's value, looked up with `get`. Runs on the
/// coordinator when the file is loaded, so workers receive the values and
/// need no environment of their own. A value holding `{{` is refused: it
/// would be read as a template.
pub fn expand_env(text: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    if !text.contains("{{") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = find_close(after) else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let whole = &rest[open..open + 2 + close + 2];
        match parse_expr(after[..close].trim(), whole) {
            Ok(Expr::Env(name, default)) => {
                let value = get(&name).or(default).ok_or_else(|| EnvError::Unset {
                    name: name.clone(),
                    text: whole.to_owned(),
                })?;
                if value.contains("{{") {
                    return Err(EnvError::Template { name });
                }
                out.push_str(&value);
            }
            _ => out.push_str(whole),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Why `{{ env(...) }}` could not be resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error(
        "environment variable `{name}` used in `{text}` is not set: set it before running, or give a default as in `env(\"{name}\", \"value\")`"
    )]
    Unset { name: String, text: String },
    #[error("environment variable `{name}` holds `{{{{`, which would be read as a template")]
    Template { name: String },
}

fn push_escaped(s: &str, esc: Escape, out: &mut String) {
    match esc {
        Escape::Raw => out.push_str(s),
        Escape::JsonString => escape_json_into(s, out),
        Escape::Url => escape_url_into(s, out),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn escape_url_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// Escapes like serde_json does (quote, backslash, control characters), so
/// static and rendered bodies agree byte for byte.
fn escape_json_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        run = i + 1;
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&s[run..]);
}

/// Formats 128 random bits as an RFC 4122 version 4 UUID (8-4-4-4-12 hex).
fn push_uuid_v4(bits: u128, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = (bits & !(0xf << 76)) | (0x4 << 76); // version 4
    let v = (v & !(0x3 << 62)) | (0x2 << 62); // variant 10xx
    for digit in 0..32 {
        if matches!(digit, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = (v >> (124 - 4 * digit)) & 0xf;
        out.push(HEX[nibble as usize] as char);
    }
}

/// Splits template text into literals and parsed expressions.
fn parse(text: &str) -> Result<Vec<Seg<'_>>, TemplateError> {
    let mut segs = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            segs.push(Seg::Lit(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = find_close(after) else {
            return Err(TemplateError::Unclosed(excerpt(&rest[open..])));
        };
        let whole = &rest[open..open + 2 + close + 2];
        segs.push(Seg::Expr(parse_expr(after[..close].trim(), whole)?));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        segs.push(Seg::Lit(rest));
    }
    Ok(segs)
}

/// Finds the closing `}}`, skipping quoted strings so `random_choice("}}")` works.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// Keeps error messages readable when an unclosed `{{` swallows a long body.
fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Whether `s` may name a variable or a feeder column.
pub fn is_name(s: &str) -> bool {
    is_ident(s)
}

/// `row.NAME`: a column of the user's feeder row, looked up like a variable.
fn is_row_column(s: &str) -> bool {
    s.strip_prefix("row.").is_some_and(is_ident)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_expr(inner: &str, whole: &str) -> Result<Expr, TemplateError> {
    if inner.is_empty() {
        return Err(TemplateError::Empty(whole.to_owned()));
    }
    let Some(paren) = inner.find('(') else {
        if !is_ident(inner) && !is_row_column(inner) {
            return Err(TemplateError::BadExpression(whole.to_owned()));
        }
        return Ok(match inner {
            "user_id" => Expr::UserId,
            "worker_index" => Expr::WorkerIndex,
            _ => Expr::Var(inner.to_owned()),
        });
    };
    let name = inner[..paren].trim_end();
    let Some(args) = inner[paren + 1..].strip_suffix(')') else {
        return Err(TemplateError::BadExpression(whole.to_owned()));
    };
    let bad = |expected| TemplateError::BadArguments {
        text: whole.to_owned(),
        expected,
    };
    match name {
        "uuid" => {
            if !args.trim().is_empty() {
                return Err(bad("`uuid()` without arguments"));
            }
            Ok(Expr::Uuid)
        }
        "random_int" => {
            const EXPECTED: &str = "two integers MIN <= MAX, as in `random_int(1, 10)`";
            let (lo, hi) = args.split_once(',').ok_or_else(|| bad(EXPECTED))?;
            let lo: i64 = lo.trim().parse().map_err(|_| bad(EXPECTED))?;
            let hi: i64 = hi.trim().parse().map_err(|_| bad(EXPECTED))?;
            if lo > hi {
                return Err(bad(EXPECTED));
            }
            Ok(Expr::RandomInt(lo, hi))
        }
        "random_choice" => {
            const EXPECTED: &str =
                "one or more quoted strings, as in `random_choice(\"a\", \"b\")`";
            let choices = parse_string_list(args).ok_or_else(|| bad(EXPECTED))?;
            if choices.is_empty() {
                return Err(bad(EXPECTED));
            }
            Ok(Expr::RandomChoice(choices))
        }
        "random_string" => {
            const EXPECTED: &str = "a length from 1 to 1048576, as in `random_string(16)`";
            let n: usize = args.trim().parse().map_err(|_| bad(EXPECTED))?;
            if n == 0 || n > MAX_RANDOM_STRING {
                return Err(bad(EXPECTED));
            }
            Ok(Expr::RandomString(n))
        }
        "sequence" | "now" => {
            if !args.trim().is_empty() {
                return Err(bad("no arguments, as in `sequence()` or `now()`"));
            }
            Ok(if name == "now" {
                Expr::Now
            } else {
                Expr::Sequence
            })
        }
        "base64" => {
            const EXPECTED: &str = "quoted strings and variable names joined before encoding, as in `base64(user, \":\", password)`";
            let args = parse_args(args).ok_or_else(|| bad(EXPECTED))?;
            if args.is_empty() {
                return Err(bad(EXPECTED));
            }
            Ok(Expr::Base64(args))
        }
        "env" => {
            const EXPECTED: &str =
                "a quoted variable name and an optional quoted default, as in `env(\"API_KEY\")`";
            let list = parse_string_list(args).ok_or_else(|| bad(EXPECTED))?;
            match list.as_slice() {
                [name] if !name.is_empty() => Ok(Expr::Env(name.clone(), None)),
                [name, default] if !name.is_empty() => {
                    Ok(Expr::Env(name.clone(), Some(default.clone())))
                }
                _ => Err(bad(EXPECTED)),
            }
        }
        _ if is_ident(name) => Err(TemplateError::UnknownFunction {
            name: name.to_owned(),
            text: whole.to_owned(),
            hint: crate::suggest::hint(name, FUNCTIONS),
        }),
        _ => Err(TemplateError::BadExpression(whole.to_owned())),
    }
}

/// Parses `base64`'s arguments: quoted strings and variable names, comma separated.
fn parse_args(args: &str) -> Option<Vec<Arg>> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        if rest.starts_with('"') || rest.starts_with('\'') {
            // The quoted piece, up to its closing quote (escapes honoured).
            let quote = rest.chars().next()?;
            let mut s = String::new();
            let mut chars = rest.char_indices().skip(1);
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => s.push(chars.next()?.1),
                    c if c == quote => {
                        end = Some(i + 1);
                        break;
                    }
                    c => s.push(c),
                }
            }
            out.push(Arg::Lit(s));
            rest = rest[end?..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let name = rest[..end].trim();
            if !is_ident(name) && !is_row_column(name) {
                return None;
            }
            out.push(match name {
                "user_id" => Arg::UserId,
                "worker_index" => Arg::WorkerIndex,
                _ => Arg::Var(name.to_owned()),
            });
            rest = &rest[end..];
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    Some(out)
}

/// Parses `"a", 'b', ...` (backslash escapes the next character); None if malformed.
fn parse_string_list(args: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = args.trim().chars().peekable();
    while chars.peek().is_some() {
        let quote = chars.next().filter(|c| *c == '"' || *c == '\'')?;
        let mut s = String::new();
        loop {
            match chars.next()? {
                '\\' => s.push(chars.next()?),
                c if c == quote => break,
                c => s.push(c),
            }
        }
        out.push(s);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn render_with(
        t: &Template,
        captured: &HashMap<String, String>,
    ) -> Result<String, RenderError> {
        let vars = Vars {
            user_id: 42,
            worker_index: 3,
            captured,
            sequence: None,
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let mut out = String::from(">");
        t.render(&vars, &mut rng, &mut out)?;
        Ok(out[1..].to_owned())
    }

    fn render(text: &str) -> String {
        let t = Template::compile(text).expect("compiles");
        render_with(&t, &HashMap::new()).expect("renders")
    }

    fn render_json(v: serde_json::Value, captured: &HashMap<String, String>) -> String {
        let t = Template::compile_json(&v).expect("compiles");
        render_with(&t, captured).expect("renders")
    }

    #[test]
    fn static_text_is_static() {
        let t = Template::compile("/api/workflows?x={y}").expect("compiles");
        assert_eq!(t.as_static(), Some("/api/workflows?x={y}"));
        assert_eq!(
            Template::compile("").expect("compiles").as_static(),
            Some("")
        );
        assert_eq!(render("/plain"), "/plain");
    }

    #[test]
    fn builtins_and_captured_variables() {
        let captured = HashMap::from([("token".to_owned(), "abc".to_owned())]);
        let t = Template::compile("Bearer {{token}} u{{ user_id }}/w{{  worker_index }}")
            .expect("compiles");
        assert_eq!(t.as_static(), None);
        assert_eq!(
            render_with(&t, &captured).expect("renders"),
            "Bearer abc u42/w3"
        );
        assert_eq!(t.variables().collect::<Vec<_>>(), ["token"]);
    }

    #[test]
    fn variables_are_deduplicated_and_exclude_builtins() {
        let t = Template::compile("{{a}}{{ user_id }}{{b}}{{a}}{{ uuid() }}").expect("compiles");
        assert_eq!(t.variables().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn undefined_variable_fails_at_render_and_leaves_out_untouched() {
        let t = Template::compile("x{{ user_id }}{{ token }}").expect("compiles");
        let vars = Vars {
            user_id: 1,
            worker_index: 0,
            captured: &HashMap::new(),
            sequence: None,
        };
        let mut out = String::from("keep");
        let err = t
            .render(&vars, &mut SmallRng::seed_from_u64(1), &mut out)
            .expect_err("token is not defined");
        assert_eq!(err, RenderError::Undefined("token".into()));
        assert_eq!(out, "keep");
        assert!(err.to_string().contains("`token`"), "{err}");
    }

    #[test]
    fn uuid_is_v4_format() {
        let t = Template::compile("{{ uuid() }}").expect("compiles");
        let vars = Vars {
            user_id: 0,
            worker_index: 0,
            captured: &HashMap::new(),
            sequence: None,
        };
        let mut rng = SmallRng::seed_from_u64(99);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut s = String::new();
            t.render(&vars, &mut rng, &mut s).expect("renders");
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{s}"
            );
            assert!(
                s.chars()
                    .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert!(groups[2].starts_with('4'), "{s}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{s}"
            );
            let parsed = uuid::Uuid::parse_str(&s).expect("valid uuid");
            assert_eq!(parsed.get_version_num(), 4);
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn random_int_stays_in_bounds_and_covers_them() {
        let t = Template::compile("{{ random_int(-3, 4) }}").expect("compiles");
        let vars = Vars {
            user_id: 0,
            worker_index: 0,
            captured: &HashMap::new(),
            sequence: None,
        };
        let mut rng = SmallRng::seed_from_u64(5);
        let mut hits = [0u32; 8];
        for _ in 0..4000 {
            let mut s = String::new();
            t.render(&vars, &mut rng, &mut s).expect("renders");
            let n: i64 = s.parse().expect("an integer");
            assert!((-3..=4).contains(&n), "{n}");
            hits[usize::try_from(n + 3).expect("in range")] += 1;
        }
        assert!(hits.iter().all(|&h| h > 0), "{hits:?}");
        assert_eq!(render("{{ random_int(5,5) }}"), "5");
    }

    #[test]
    fn random_choice_picks_a_listed_value() {
        let t = Template::compile(r#"{{ random_choice("a", 'b c', "d\"}}") }}"#).expect("compiles");
        let vars = Vars {
            user_id: 0,
            worker_index: 0,
            captured: &HashMap::new(),
            sequence: None,
        };
        let mut rng = SmallRng::seed_from_u64(5);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut s = String::new();
            t.render(&vars, &mut rng, &mut s).expect("renders");
            seen.insert(s);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b c", "d\"}}"]);
    }

    #[test]
    fn static_json_matches_serde_json() {
        let v = serde_json::json!({
            "name": "plain \"quoted\" \\ \n \u{1} é",
            "n": 1.5, "big": -12, "ok": true, "none": null,
            "list": [1, "two", {"three": []}], "empty": {}
        });
        let t = Template::compile_json(&v).expect("compiles");
        assert_eq!(t.as_static(), Some(v.to_string().as_str()));
    }

    #[test]
    fn json_escapes_substituted_values() {
        let captured = HashMap::from([("who".to_owned(), "a \"b\" \\ c\n\u{7}".to_owned())]);
        let out = render_json(serde_json::json!({ "name": "hi {{ who }}!" }), &captured);
        let back: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(back["name"], "hi a \"b\" \\ c\n\u{7}!");
        assert_eq!(out, r#"{"name":"hi a \"b\" \\ c\n\u0007!"}"#);
    }

    #[test]
    fn json_numeric_expressions_are_unquoted() {
        let captured = HashMap::from([("token".to_owned(), "5".to_owned())]);
        let out = render_json(
            serde_json::json!({
                "steps": "{{ random_int(7, 7) }}",
                "user": "user{{ user_id }}",
                "id": "{{user_id}}",
                "w": ["{{ worker_index }}"],
                "tok": "{{ token }}",
                "spaced": " {{ user_id }}",
            }),
            &captured,
        );
        assert_eq!(
            out,
            r#"{"id":42,"spaced":" 42","steps":7,"tok":"5","user":"user42","w":[3]}"#
        );
    }

    #[test]
    fn json_keys_may_hold_expressions_but_stay_quoted() {
        let out = render_json(serde_json::json!({ "{{ user_id }}": 1 }), &HashMap::new());
        assert_eq!(out, r#"{"42":1}"#);
    }

    #[test]
    fn compile_errors_quote_the_offending_text() {
        let cases: [(&str, &str); 11] = [
            ("/a/{{ user_id", "unclosed `{{` in `{{ user_id`"),
            ("x{{}}", "empty expression `{{}}`"),
            ("{{   }}", "empty expression `{{   }}`"),
            (
                "{{ nope(1) }}",
                "unknown function `nope` in `{{ nope(1) }}`",
            ),
            ("{{ uuid(3) }}", "bad arguments in `{{ uuid(3) }}`"),
            (
                "{{ random_int(10, 1) }}",
                "bad arguments in `{{ random_int(10, 1) }}`: expected two integers MIN <= MAX",
            ),
            (
                "{{ random_int(1) }}",
                "bad arguments in `{{ random_int(1) }}`",
            ),
            ("{{ random_int(a, 2) }}", "bad arguments"),
            (
                "{{ random_choice() }}",
                "bad arguments in `{{ random_choice() }}`",
            ),
            ("{{ random_choice(a) }}", "bad arguments"),
            (
                "{{ two words }}",
                "cannot read expression `{{ two words }}`",
            ),
        ];
        for (text, want) in cases {
            let err = Template::compile(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = Template::compile_json(&serde_json::json!({"a": ["{{ uuid( }}"]}))
            .expect_err("bad nested expression");
        assert!(matches!(err, TemplateError::BadExpression(_)), "{err}");
    }

    #[test]
    fn new_functions_render() {
        let seq = Cell::new(0);
        let captured = HashMap::from([("u".to_owned(), "al ice".to_owned())]);
        let vars = Vars {
            user_id: 42,
            worker_index: 3,
            captured: &captured,
            sequence: Some(&seq),
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let render = |text: &str, rng: &mut SmallRng| {
            let mut out = String::new();
            Template::compile(text)
                .expect("compiles")
                .render(&vars, rng, &mut out)
                .expect("renders");
            out
        };
        let r = render("{{ random_string(12) }}", &mut rng);
        assert_eq!(r.len(), 12);
        assert!(r.bytes().all(|b| b.is_ascii_alphanumeric()), "{r}");
        assert_eq!(render("{{ sequence() }},{{ sequence() }}", &mut rng), "1,2");
        assert_eq!(
            render("{{ base64(u, ':', \"pw\") }}", &mut rng),
            "YWwgaWNlOnB3"
        );
        assert_eq!(render("{{ base64(user_id) }}", &mut rng), "NDI=");
        let now: u128 = render("{{ now() }}", &mut rng).parse().expect("a number");
        assert!(now > 1_600_000_000_000);
        // Query pairs: literals and values percent-encoded, base64's `=` too.
        let t = Template::compile_url(
            "/a?x=1",
            &[
                ("q".into(), "{{ u }}".into()),
                ("b".into(), "{{ base64(user_id) }}".into()),
            ],
        )
        .expect("compiles");
        let mut out = String::new();
        t.render(&vars, &mut rng, &mut out).expect("renders");
        assert_eq!(out, "/a?x=1&q=al%20ice&b=NDI%3D");
        // Numbers unquoted in JSON.
        let j = Template::compile_json(&serde_json::json!({"n": "{{ sequence() }}"}))
            .expect("compiles");
        let mut out = String::new();
        j.render(&vars, &mut rng, &mut out).expect("renders");
        assert_eq!(out, r#"{"n":3}"#);
    }

    #[test]
    fn env_is_expanded_with_defaults_and_refused_when_unset() {
        let get = |name: &str| (name == "KEY").then(|| "s3cret".to_owned());
        assert_eq!(
            expand_env("Bearer {{ env(\"KEY\") }} {{ user_id }}", &get),
            Ok("Bearer s3cret {{ user_id }}".to_owned())
        );
        assert_eq!(
            expand_env("{{ env('NOPE', 'dflt') }}", &get),
            Ok("dflt".to_owned())
        );
        assert!(matches!(
            expand_env("{{ env(\"NOPE\") }}", &get),
            Err(EnvError::Unset { .. })
        ));
        let templ = |_: &str| Some("{{ x }}".to_owned());
        assert!(matches!(
            expand_env("{{ env(\"A\") }}", &templ),
            Err(EnvError::Template { .. })
        ));
    }

    #[test]
    fn long_unclosed_text_is_shortened() {
        let text = format!("{{{{ {}", "x".repeat(200));
        let err = Template::compile(&text).expect_err("unclosed").to_string();
        assert!(err.len() < 150 && err.contains("..."), "{err}");
    }
}
