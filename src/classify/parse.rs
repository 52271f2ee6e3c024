//! The watch-query parser: query text to an expression tree with byte offsets.
//!
//! In: one query string as the user wrote it (untrusted in the sense that it may be anything;
//! it never panics). Out: [`Expr`] or a [`ParseError`] with the byte offset to point at and a
//! hint. The grammar, loosest binding first:
//!
//! ```text
//! query   := or
//! or      := and ( "OR" and )*
//! and     := unary ( ["AND"] unary )*          (adjacent terms are ANDed)
//! unary   := ("NOT" | "-") unary | near
//! near    := primary ( ("NEAR/n" | "ONEAR/n") primary )*
//! primary := "(" or ")" | FIELD ":" primary | "caps(" or ")" | "atleastN(" or ")"
//!          | word["*"]["^"w] | "\"phrase\""["^"w] | "@"set | "lang:" code | "lang:(" code (OR code)* ")"
//! ```
//!
//! `@name` stands for a named term set (resolved against the config's sets by the caller);
//! `lang:` tests the item's language.

use std::sync::Arc;

use crate::item::Field;
use crate::lang::Lang;

/// Bit set over [`Field::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldMask(pub u8);

impl FieldMask {
    pub const DEFAULT: FieldMask = FieldMask(0b111); // title, summary, content
    pub fn of(f: Field) -> FieldMask {
        FieldMask(1 << field_index(f))
    }
    pub fn has(self, f: Field) -> bool {
        self.0 & (1 << field_index(f)) != 0
    }
    pub fn fields(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.has(*f))
    }
}

pub fn field_index(f: Field) -> usize {
    Field::ALL.iter().position(|x| *x == f).unwrap_or(0)
}

/// Field scope names accepted before `:`.
pub const FIELD_NAMES: &str = "title, summary, content, author, category, feed, link";

fn field_by_name(s: &str) -> Option<Field> {
    Field::ALL
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(s))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The term text without quotes, `*` and `^weight`.
    pub text: String,
    /// The term as written in the query (what evidence reports).
    pub display: String,
    pub phrase: bool,
    pub prefix: bool,
    pub caps: bool,
    pub weight: f64,
    pub fields: Option<FieldMask>,
    pub offset: usize,
    /// For a term of a named set: the set it was listed in, its label and weight.
    pub set: Option<SetOrigin>,
    /// The language key the term was listed under in its set; `None` for terms written in the
    /// query (and a set's `any`). Decides where it may match accented text (see `matcher`).
    pub lang: Option<Lang>,
}

/// Where a term of a set came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SetOrigin {
    pub set: Arc<str>,
    pub concept: Arc<str>,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Term(Term),
    /// `@name`: a named term set, replaced by the OR of its terms before lowering.
    Set {
        name: String,
        offset: usize,
        fields: Option<FieldMask>,
        caps: bool,
    },
    /// `lang:vi`, `lang:(vi OR zh)`: the item is in one of these languages.
    Lang {
        langs: Vec<Lang>,
        offset: usize,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Near {
        a: Box<Expr>,
        b: Box<Expr>,
        n: u32,
        ordered: bool,
    },
    AtLeast {
        n: u32,
        inner: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
}

fn err<T>(offset: usize, message: impl Into<String>, hint: Option<&str>) -> Result<T, ParseError> {
    Err(ParseError {
        offset,
        message: message.into(),
        hint: hint.map(str::to_string),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Minus,
    Near {
        n: u32,
        ordered: bool,
    },
    Field(Field),
    Caps,
    AtLeast(u32),
    Word {
        text: String,
        prefix: bool,
        weight: f64,
    },
    Phrase {
        text: String,
        prefix: bool,
        weight: f64,
    },
    Set(String),
    Lang(Vec<Lang>),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

const MAX_NEAR: u32 = 1000;
const MAX_ATLEAST: u32 = 100;
const MAX_DEPTH: usize = 64;
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

fn is_delim(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')' || c == '"'
}

/// Splits a trailing `^weight`; returns (rest, weight).
fn split_weight(word: &str, start: usize) -> Result<(&str, f64), ParseError> {
    if let Some(pos) = word.rfind('^') {
        let w = &word[pos + 1..];
        match w.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 100.0 => Ok((&word[..pos], v)),
            _ => err(
                start + pos,
                format!("bad term weight `^{w}`"),
                Some("a weight is a positive number up to 100 after the term: chip^2"),
            ),
        }
    } else {
        Ok((word, 1.0))
    }
}

fn lex(q: &str) -> Result<Vec<Token>, ParseError> {
    let mut toks = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < q.len() {
        let c = match q[i..].chars().next() {
            Some(c) => c,
            None => break,
        };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        match c {
            '(' => {
                toks.push(Token {
                    tok: Tok::LParen,
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
            ')' => {
                toks.push(Token {
                    tok: Tok::RParen,
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
            '"' => {
                let rest = &q[i + 1..];
                let close = match rest.find('"') {
                    Some(p) => p,
                    None => {
                        return err(i, "unterminated quote", Some("close the phrase with `\"`"))
                    }
                };
                let inner = &rest[..close];
                let mut end = i + 1 + close + 1;
                let (inner, prefix) = match inner.trim_end().strip_suffix('*') {
                    Some(s) => (s, true),
                    None => (inner, false),
                };
                if inner.trim().is_empty() {
                    return err(
                        i,
                        "empty phrase",
                        Some("write the words between the quotes, or remove them"),
                    );
                }
                if let Some(p) = inner.find('*') {
                    return err(
                        i + 1 + p,
                        "`*` inside a phrase",
                        Some("a wildcard may only end a phrase: \"export contr*\""),
                    );
                }
                let mut weight = 1.0;
                if b.get(end) == Some(&b'^') {
                    let wstart = end;
                    let mut j = end + 1;
                    while j < q.len() && !is_delim(q[j..].chars().next().unwrap_or(' ')) {
                        j += q[j..].chars().next().map(char::len_utf8).unwrap_or(1);
                    }
                    let (_, w) = split_weight(&q[wstart..j], wstart)?;
                    weight = w;
                    end = j;
                }
                toks.push(Token {
                    tok: Tok::Phrase {
                        text: inner.trim().to_string(),
                        prefix,
                        weight,
                    },
                    start: i,
                    end,
                });
                i = end;
            }
            _ => {
                let mut j = i;
                while j < q.len() {
                    let d = q[j..].chars().next().unwrap_or(' ');
                    if is_delim(d) {
                        break;
                    }
                    j += d.len_utf8();
                }
                let word = &q[i..j];
                // A leading '-' is negation when something follows it.
                if word.starts_with('-')
                    && (word.len() > 1 || matches!(b.get(j), Some(b'(') | Some(b'"')))
                {
                    toks.push(Token {
                        tok: Tok::Minus,
                        start: i,
                        end: i + 1,
                    });
                    i += 1;
                    continue;
                }
                if let Some(name) = word.strip_prefix('@') {
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return err(
                            i,
                            format!("`{word}` is not a set name"),
                            Some("a set is written @name, with letters, digits and `_`: @entity_list"),
                        );
                    }
                    toks.push(Token {
                        tok: Tok::Set(name.to_string()),
                        start: i,
                        end: j,
                    });
                    i = j;
                    continue;
                }
                // Field scope: ASCII letters then ':'.
                if let Some(colon) = word.find(':') {
                    let name = &word[..colon];
                    if name.eq_ignore_ascii_case("lang") {
                        let (langs, end) = lex_lang(q, i, i + colon + 1)?;
                        toks.push(Token {
                            tok: Tok::Lang(langs),
                            start: i,
                            end,
                        });
                        i = end;
                        continue;
                    }
                    if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphabetic()) {
                        match field_by_name(name) {
                            Some(f) => {
                                toks.push(Token { tok: Tok::Field(f), start: i, end: i + colon + 1 });
                                i += colon + 1;
                                continue;
                            }
                            None => {
                                return err(
                                    i,
                                    format!("unknown field scope `{name}:`"),
                                    Some(&format!("valid scopes: {FIELD_NAMES}; quote the term if the colon belongs to it: \"{word}\"")),
                                )
                            }
                        }
                    }
                }
                let followed_by_paren = b.get(j) == Some(&b'(');
                if followed_by_paren {
                    let lw = word.to_ascii_lowercase();
                    if lw == "caps" {
                        toks.push(Token {
                            tok: Tok::Caps,
                            start: i,
                            end: j + 1,
                        });
                        i = j + 1;
                        continue;
                    }
                    if let Some(num) = lw.strip_prefix("atleast") {
                        if num.is_empty() {
                            return err(
                                i,
                                "atleast needs a count",
                                Some("write the count into the name: atleast3(chip*)"),
                            );
                        }
                        match num.parse::<u32>() {
                            Ok(n) if (1..=MAX_ATLEAST).contains(&n) => {
                                toks.push(Token {
                                    tok: Tok::AtLeast(n),
                                    start: i,
                                    end: j + 1,
                                });
                                i = j + 1;
                                continue;
                            }
                            _ => return err(
                                i,
                                format!("bad count in `{word}`"),
                                Some("the count is a whole number from 1 to 100: atleast3(chip*)"),
                            ),
                        }
                    }
                }
                match word {
                    "AND" => toks.push(Token {
                        tok: Tok::And,
                        start: i,
                        end: j,
                    }),
                    "OR" => toks.push(Token {
                        tok: Tok::Or,
                        start: i,
                        end: j,
                    }),
                    "NOT" => toks.push(Token {
                        tok: Tok::Not,
                        start: i,
                        end: j,
                    }),
                    _ if word.starts_with("NEAR") || word.starts_with("ONEAR") => {
                        let ordered = word.starts_with('O');
                        let rest = if ordered { &word[5..] } else { &word[4..] };
                        let op = if ordered { "ONEAR" } else { "NEAR" };
                        let n = rest.strip_prefix('/').and_then(|n| n.parse::<u32>().ok());
                        match n {
                            Some(n) if n <= MAX_NEAR => toks.push(Token {
                                tok: Tok::Near { n, ordered },
                                start: i,
                                end: j,
                            }),
                            Some(_) => {
                                return err(
                                    i,
                                    format!("{op} distance too large"),
                                    Some("use at most NEAR/1000"),
                                )
                            }
                            None => {
                                return err(
                                    i,
                                    format!("{op} needs a number: {op}/5"),
                                    Some(&format!(
                                    "`a {op}/5 b` matches when at most 5 words separate a and b"
                                )),
                                )
                            }
                        }
                    }
                    _ => {
                        let (w, weight) = split_weight(word, i)?;
                        let (w, prefix) = match w.strip_suffix('*') {
                            Some(s) => (s, true),
                            None => (w, false),
                        };
                        if let Some(p) = w.find('*') {
                            return err(
                                i + p,
                                "`*` in the middle of a word",
                                Some("a wildcard may only end a word: sanction*"),
                            );
                        }
                        if w.is_empty() {
                            return err(
                                i,
                                "empty term",
                                Some("a wildcard needs a word before it: sanction*"),
                            );
                        }
                        if prefix {
                            let cjk = w.chars().any(crate::text::is_cjk);
                            let n = w.chars().filter(|c| c.is_alphanumeric()).count();
                            if !cjk && n < 3 {
                                return err(
                                    i,
                                    format!(
                                        "wildcard too short: `{w}*` would match far too many words"
                                    ),
                                    Some("give at least 3 letters before `*`"),
                                );
                            }
                        }
                        toks.push(Token {
                            tok: Tok::Word {
                                text: w.to_string(),
                                prefix,
                                weight,
                            },
                            start: i,
                            end: j,
                        });
                    }
                }
                i = j;
            }
        }
    }
    Ok(toks)
}

/// The codes after `lang:` at `from` (`vi`, or `(vi OR zh)`); returns them and the end.
fn lex_lang(q: &str, start: usize, from: usize) -> Result<(Vec<Lang>, usize), ParseError> {
    let rest = &q[from..];
    let (body, body_at, end) = if let Some(r) = rest.strip_prefix('(') {
        match r.find(')') {
            Some(p) => (&r[..p], from + 1, from + 1 + p + 1),
            None => {
                return err(
                    start,
                    "unbalanced parenthesis opened here",
                    Some("add the missing `)`: lang:(vi OR zh)"),
                )
            }
        }
    } else {
        let n = rest.find(is_delim).unwrap_or(rest.len());
        (&rest[..n], from, from + n)
    };
    let mut langs = Vec::new();
    let mut at = body_at;
    for w in body.split_inclusive(char::is_whitespace) {
        let code = w.trim();
        let here = at;
        at += w.len();
        if code.is_empty() || code == "OR" {
            continue;
        }
        match Lang::from_code(code) {
            Some(l) => langs.push(l),
            None => {
                let hint = match crate::lang::suggest(code) {
                    Some(s) => format!("did you mean lang:{s}? Languages are ISO 639-1 codes"),
                    None => "write a two-letter ISO 639-1 code: lang:vi, lang:(de OR nl)".into(),
                };
                return err(here, format!("unknown language `{code}`"), Some(&hint));
            }
        }
    }
    if langs.is_empty() {
        return err(
            start,
            "`lang:` needs a language",
            Some("write lang:vi or lang:(de OR nl)"),
        );
    }
    Ok((langs, end))
}

#[derive(Clone, Copy)]
struct Ctx {
    fields: Option<FieldMask>,
    caps: bool,
}

struct Parser<'a> {
    q: &'a str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn is_operand_start(t: &Tok) -> bool {
    matches!(
        t,
        Tok::LParen
            | Tok::Not
            | Tok::Minus
            | Tok::Field(_)
            | Tok::Caps
            | Tok::AtLeast(_)
            | Tok::Word { .. }
            | Tok::Phrase { .. }
            | Tok::Set(_)
            | Tok::Lang(_)
    )
}

/// Expressions that yield positions: terms and OR-groups of them.
pub fn is_positional(e: &Expr) -> bool {
    match e {
        Expr::Term(_) | Expr::Set { .. } => true,
        Expr::Or(v) => v.iter().all(is_positional),
        _ => false,
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }
    fn end_offset(&self) -> usize {
        self.q.len()
    }
    fn here(&self) -> usize {
        self.peek().map(|t| t.start).unwrap_or(self.end_offset())
    }

    fn need_operand(&self, op_start: usize, op: &str) -> Result<(), ParseError> {
        match self.peek() {
            Some(t) if is_operand_start(&t.tok) => Ok(()),
            _ => err(
                op_start,
                format!("`{op}` needs a term after it"),
                Some("remove the operator or add the missing term"),
            ),
        }
    }

    fn or(&mut self, ctx: Ctx) -> Result<Expr, ParseError> {
        let mut items = vec![self.and(ctx)?];
        while let Some(t) = self.peek() {
            if t.tok != Tok::Or {
                break;
            }
            let s = t.start;
            self.pos += 1;
            self.need_operand(s, "OR")?;
            items.push(self.and(ctx)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Or(vec![]))
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self, ctx: Ctx) -> Result<Expr, ParseError> {
        let mut items = vec![self.unary(ctx)?];
        while let Some(t) = self.peek() {
            if t.tok == Tok::And {
                let s = t.start;
                self.pos += 1;
                self.need_operand(s, "AND")?;
            } else if !is_operand_start(&t.tok) {
                break;
            }
            items.push(self.unary(ctx)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::And(vec![]))
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self, ctx: Ctx) -> Result<Expr, ParseError> {
        if let Some(t) = self.peek() {
            if matches!(t.tok, Tok::Not | Tok::Minus) {
                let s = t.start;
                let name = if t.tok == Tok::Not { "NOT" } else { "-" };
                self.pos += 1;
                self.need_operand(s, name)?;
                self.enter(s)?;
                let inner = self.unary(ctx)?;
                self.depth -= 1;
                return Ok(Expr::Not(Box::new(inner)));
            }
        }
        self.near(ctx)
    }

    fn near(&mut self, ctx: Ctx) -> Result<Expr, ParseError> {
        let start = self.here();
        let mut left = self.primary(ctx)?;
        while let Some(t) = self.peek() {
            let Tok::Near { n, ordered } = t.tok else {
                break;
            };
            let op_start = t.start;
            let op = if ordered { "ONEAR" } else { "NEAR" };
            self.pos += 1;
            match self.peek() {
                Some(t) if is_operand_start(&t.tok) => {}
                _ => {
                    return err(
                        op_start,
                        format!("`{op}/{n}` needs a term after it"),
                        Some("write `a NEAR/5 b`"),
                    )
                }
            }
            if !is_positional(&left) {
                return err(
                    start,
                    format!("{op} works on terms, phrases or (a OR b) groups"),
                    Some("move AND/NOT outside: (a NEAR/5 b) AND c"),
                );
            }
            let rstart = self.here();
            let right = self.primary(ctx)?;
            if !is_positional(&right) {
                return err(
                    rstart,
                    format!("{op} works on terms, phrases or (a OR b) groups"),
                    Some("move AND/NOT outside: (a NEAR/5 b) AND c"),
                );
            }
            left = Expr::Near {
                a: Box::new(left),
                b: Box::new(right),
                n,
                ordered,
            };
        }
        Ok(left)
    }

    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                at,
                "query nested too deeply",
                Some("simplify the parentheses"),
            );
        }
        Ok(())
    }

    /// Parses a parenthesised body after an opening token at `open`; consumes the `)`.
    fn group(&mut self, open: usize, ctx: Ctx) -> Result<Expr, ParseError> {
        self.enter(open)?;
        if matches!(self.peek(), Some(t) if t.tok == Tok::RParen) {
            return err(
                open,
                "empty parentheses",
                Some("put a term inside or remove them"),
            );
        }
        if self.peek().is_none() {
            return err(
                open,
                "unbalanced parenthesis opened here",
                Some("add the missing `)`"),
            );
        }
        let e = self.or(ctx)?;
        match self.peek() {
            Some(t) if t.tok == Tok::RParen => {
                self.pos += 1;
            }
            _ => {
                return err(
                    open,
                    "unbalanced parenthesis opened here",
                    Some("add the missing `)`"),
                )
            }
        }
        self.depth -= 1;
        Ok(e)
    }

    fn primary(&mut self, ctx: Ctx) -> Result<Expr, ParseError> {
        let Some(t) = self.peek().cloned() else {
            return err(
                self.end_offset(),
                "expected a term",
                Some("the query ends too early"),
            );
        };
        self.pos += 1;
        match t.tok {
            Tok::LParen => self.group(t.start, ctx),
            Tok::Field(f) => {
                match self.peek() {
                    Some(n) if is_operand_start(&n.tok) && n.start == t.end => {}
                    _ => {
                        return err(
                            t.start,
                            format!("`{}:` needs a term or group right after it", f.as_str()),
                            Some(&format!(
                                "write {0}:word or {0}:(a OR b) without a space",
                                f.as_str()
                            )),
                        )
                    }
                }
                self.enter(t.start)?;
                let inner = self.unary(Ctx {
                    fields: Some(FieldMask::of(f)),
                    ..ctx
                })?;
                self.depth -= 1;
                Ok(inner)
            }
            Tok::Caps => {
                let e = self.group(t.start, Ctx { caps: true, ..ctx })?;
                if !is_positional(&e) {
                    return err(
                        t.start,
                        "caps() takes terms or phrases (optionally ORed)",
                        Some("write caps(BIS) or caps(BIS OR ITC)"),
                    );
                }
                Ok(e)
            }
            Tok::AtLeast(n) => {
                let e = self.group(t.start, ctx)?;
                if !is_positional(&e) {
                    return err(
                        t.start,
                        "atleast() takes terms or phrases (optionally ORed)",
                        Some("write atleast3(chip* OR semiconductor*)"),
                    );
                }
                Ok(Expr::AtLeast {
                    n,
                    inner: Box::new(e),
                })
            }
            Tok::Word {
                text,
                prefix,
                weight,
            }
            | Tok::Phrase {
                text,
                prefix,
                weight,
            } => {
                let phrase = matches!(self.toks[self.pos - 1].tok, Tok::Phrase { .. });
                Ok(Expr::Term(Term {
                    text,
                    display: self.q[t.start..t.end].to_string(),
                    phrase,
                    prefix,
                    caps: ctx.caps,
                    weight,
                    fields: ctx.fields,
                    offset: t.start,
                    set: None,
                    lang: None,
                }))
            }
            Tok::Set(name) => Ok(Expr::Set {
                name,
                offset: t.start,
                fields: ctx.fields,
                caps: ctx.caps,
            }),
            Tok::Lang(langs) => Ok(Expr::Lang {
                langs,
                offset: t.start,
            }),
            Tok::RParen => err(
                t.start,
                "`)` without a matching `(`",
                Some("remove it or add the `(` it closes"),
            ),
            Tok::And => err(
                t.start,
                "`AND` needs a term before it",
                Some("remove the operator or add the missing term"),
            ),
            Tok::Or => err(
                t.start,
                "`OR` needs a term before it",
                Some("remove the operator or add the missing term"),
            ),
            Tok::Near { ordered, .. } => err(
                t.start,
                format!(
                    "`{}` needs a term before it",
                    if ordered { "ONEAR" } else { "NEAR" }
                ),
                Some("write `a NEAR/5 b`"),
            ),
            Tok::Not | Tok::Minus => err(t.start, "unexpected negation", None),
        }
    }
}

/// Parses one query.
pub fn parse(q: &str) -> Result<Expr, ParseError> {
    if q.len() > MAX_QUERY_BYTES {
        return err(0, "query too long", Some("split it into several watches"));
    }
    let toks = lex(q)?;
    if toks.is_empty() {
        return err(
            0,
            "empty query",
            Some("write at least one term, e.g. \"export controls\""),
        );
    }
    let mut p = Parser {
        q,
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.or(Ctx {
        fields: None,
        caps: false,
    })?;
    if let Some(t) = p.peek() {
        return match t.tok {
            Tok::RParen => err(
                t.start,
                "`)` without a matching `(`",
                Some("remove it or add the `(` it closes"),
            ),
            _ => err(t.start, "unexpected token", None),
        };
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perr(q: &str) -> ParseError {
        parse(q).expect_err(q)
    }

    #[test]
    fn precedence_and_implicit_and() {
        let e = parse("a b OR c").unwrap();
        match e {
            Expr::Or(v) => {
                assert!(matches!(&v[0], Expr::And(x) if x.len() == 2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_point_at_the_right_place() {
        let e = perr("chips AND (nvidia OR amd");
        assert_eq!(e.offset, 10);
        assert!(e.message.contains("unbalanced"));
        let e = perr("a NEAR b");
        assert!(
            e.message.contains("NEAR needs a number: NEAR/5"),
            "{}",
            e.message
        );
        assert_eq!(e.offset, 2);
        let e = perr("a AND \"\"");
        assert!(e.message.contains("empty phrase"));
        assert_eq!(e.offset, 6);
        let e = perr("titel:chip");
        assert!(e.message.contains("unknown field"));
        assert!(e.hint.unwrap().contains("title, summary"));
        assert_eq!(perr("a OR").offset, 2);
        assert_eq!(perr("a \"open").offset, 2);
        assert_eq!(perr("x a*").offset, 2);
        assert_eq!(perr("a)").offset, 1);
        assert!(perr("(a AND b) NEAR/3 c").message.contains("NEAR works on"));
        assert!(perr("atleast(chip)").message.contains("count"));
        assert!(perr("title: chip").message.contains("right after"));
    }

    #[test]
    fn scopes_caps_weights() {
        let e = parse("title:(nvidia OR caps(BIS^2)) -foo").unwrap();
        let Expr::And(v) = e else { panic!() };
        let Expr::Or(o) = &v[0] else { panic!() };
        let Expr::Term(t) = &o[1] else { panic!() };
        assert!(t.caps);
        assert_eq!(t.fields, Some(FieldMask::of(Field::Title)));
        let Expr::Term(n) = &o[0] else { panic!() };
        assert_eq!(n.weight, 1.0);
        assert!(matches!(&v[1], Expr::Not(_)));
        let Expr::Term(w) = parse("chip^2.5").unwrap() else {
            panic!()
        };
        assert_eq!(w.weight, 2.5);
        assert_eq!(w.text, "chip");
    }
}
