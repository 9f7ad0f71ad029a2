//! Turns the bytes of one configuration file into tokens (vm.conf(5), "DESCRIPTION"),
//! expanding `$macro`s on the way.
//!
//! The lexer works on bytes rather than chars so that a stray non-UTF-8
//! byte in a comment costs nothing; only the text of a string token has to
//! be UTF-8.

use crate::diagnostics::Report;
use crate::macros::MacroTable;

/// Longest string or number token: the reference reads tokens into an 8 KiB
/// buffer that also holds the terminating NUL.
pub(crate) const MAX_TOKEN_LEN: usize = 8191;

macro_rules! keywords {
    ($($variant:ident = $word:literal,)*) => {
        /// The reserved words. They cannot be unquoted strings or macro
        /// names; a quoted `"vm"` is a plain string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Keyword { $($variant,)* }

        /// The text of every reserved word.
        pub(crate) const RESERVED_WORDS: &[&str] = &[$(
            match std::str::from_utf8($word) {
                Ok(word) => word,
                Err(_) => panic!("keywords are ASCII"),
            },
        )*];

        impl Keyword {
            pub fn from_word(word: &[u8]) -> Option<Keyword> {
                match word {
                    $($word => Some(Keyword::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

keywords! {
    Add = b"add",
    Agentx = b"agentx",
    Allow = b"allow",
    Boot = b"boot",
    Cdrom = b"cdrom",
    Context = b"context",
    Delay = b"delay",
    Device = b"device",
    Disable = b"disable",
    Disk = b"disk",
    Down = b"down",
    Enable = b"enable",
    Format = b"format",
    Group = b"group",
    Id = b"id",
    Include = b"include",
    Inet6 = b"inet6",
    Instance = b"instance",
    Interface = b"interface",
    Interfaces = b"interfaces",
    Lladdr = b"lladdr",
    Local = b"local",
    Locked = b"locked",
    Memory = b"memory",
    Net = b"net",
    Owner = b"owner",
    Parallel = b"parallel",
    Path = b"path",
    Prefix = b"prefix",
    Rdomain = b"rdomain",
    Sev = b"sev",
    Size = b"size",
    Socket = b"socket",
    Staggered = b"staggered",
    Start = b"start",
    Switch = b"switch",
    Up = b"up",
    Vm = b"vm",
}

/// The Linux extensions' words (`cpus`, `cmdline`, `initrd`, `user-data`,
/// `ssh-key`): recognised by position and not reserved, so that every
/// file the reference accepts still parses.
pub(crate) const CPUS: &str = "cpus";
pub(crate) const CMDLINE: &str = "cmdline";
pub(crate) const INITRD: &str = "initrd";
pub(crate) const USER_DATA: &str = "user-data";
pub(crate) const SSH_KEY: &str = "ssh-key";
pub(crate) const EXTENSION_WORDS: &[&str] = &[CPUS, CMDLINE, INITRD, USER_DATA, SSH_KEY];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// End of a statement line.
    Newline,
    /// End of this file.
    Eof,
    Keyword(Keyword),
    /// A quoted string or an unquoted word that is not a keyword.
    Str(String),
    /// A number; `text` is how it was written (a prefix like `10/8` is
    /// lexed as the number 10 followed by the word `/8`).
    Number {
        value: i64,
        text: String,
    },
    /// Any other single character: `{ } = ,` and stray punctuation.
    Punct(u8),
    /// Something the lexer already reported (an undefined macro, a bad
    /// number, an overlong string); the parser skips the rest of the line
    /// without a further message.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    /// Line the token starts on.
    pub line: u32,
}

/// A byte together with where it came from: bytes of a macro's value are
/// never expanded again, which makes `a = "$a"` harmless.
#[derive(Debug, Clone, Copy)]
struct Byte {
    value: u8,
    from_macro: bool,
}

pub(crate) struct Lexer {
    /// Name used in diagnostics.
    pub file: String,
    input: Vec<u8>,
    pos: usize,
    line: u32,
    /// Bytes to read before `input`: expanded macro values and bytes read
    /// ahead and given back. The next byte is at the end.
    pushback: Vec<Byte>,
    peeked: Option<Token>,
    /// Whether the end of the input was met: the first time it reads as one
    /// more newline (so a last line without one still ends its statement,
    /// and the end itself is blamed on the line after it, as vmd does).
    eof_reached: bool,
}

fn is_blank(c: u8) -> bool {
    // `\r` is accepted as a blank so that files with DOS line ends parse.
    matches!(c, b' ' | b'\t' | b'\r')
}

fn starts_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'/') || c >= 0x80
}

fn continues_word(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || (c.is_ascii_punctuation()
            && !matches!(c, b'(' | b')' | b'{' | b'}' | b'!' | b'=' | b'#' | b','))
        || c >= 0x80
}

fn ends_number(c: Option<u8>) -> bool {
    match c {
        None => true,
        Some(c) => is_blank(c) || matches!(c, b'\n' | b')' | b',' | b'/' | b'}' | b'='),
    }
}

fn is_macro_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// strtonum(3)'s verdict on a decimal string, over the whole i64 range.
fn parse_number(text: &str) -> Result<i64, &'static str> {
    match text.parse::<i64>() {
        Ok(value) => Ok(value),
        Err(_) if text.starts_with('-') => Err("too small"),
        Err(_) => Err("too large"),
    }
}

impl Lexer {
    pub fn new(file: &str, input: Vec<u8>) -> Lexer {
        Lexer {
            file: file.to_string(),
            input,
            pos: 0,
            line: 1,
            pushback: Vec::new(),
            peeked: None,
            eof_reached: false,
        }
    }

    /// Next byte. Outside quotes a backslash right before a newline joins
    /// the lines: both disappear and only the line counter moves.
    fn getc(&mut self, join_lines: bool) -> Option<Byte> {
        if let Some(byte) = self.pushback.pop() {
            return Some(byte);
        }
        loop {
            let c = *self.input.get(self.pos)?;
            if join_lines && c == b'\\' && self.input.get(self.pos + 1) == Some(&b'\n') {
                self.pos += 2;
                self.line += 1;
                continue;
            }
            self.pos += 1;
            return Some(Byte {
                value: c,
                from_macro: false,
            });
        }
    }

    fn ungetc(&mut self, byte: Byte) {
        self.pushback.push(byte);
    }

    fn unget_all(&mut self, bytes: &[Byte]) {
        for &byte in bytes.iter().rev() {
            self.ungetc(byte);
        }
    }

    /// After an error: the rest of the line, its newline included, is
    /// skipped, so the error token stands for the whole line.
    fn find_eol(&mut self) {
        while let Some(byte) = self.getc(true) {
            if byte.value == b'\n' {
                if !byte.from_macro {
                    self.line += 1;
                }
                return;
            }
        }
    }

    pub fn peek(&mut self, macros: &mut MacroTable, report: &mut Report) -> &Token {
        if self.peeked.is_none() {
            let token = self.lex(macros, report);
            self.peeked = Some(token);
        }
        self.peeked.as_ref().expect("just filled")
    }

    pub fn next(&mut self, macros: &mut MacroTable, report: &mut Report) -> Token {
        match self.peeked.take() {
            Some(token) => token,
            None => self.lex(macros, report),
        }
    }

    fn lex(&mut self, macros: &mut MacroTable, report: &mut Report) -> Token {
        loop {
            if self.eof_reached {
                return Token {
                    kind: TokenKind::Eof,
                    line: self.line,
                };
            }
            let Some(byte) = self.skip_blanks_and_comment() else {
                self.eof_reached = true;
                let line = self.line;
                self.line += 1;
                return Token {
                    kind: TokenKind::Newline,
                    line,
                };
            };
            let line = self.line;
            let c = byte.value;
            let kind = if c == b'\n' {
                // A newline inside a macro value (possible with `-D`) ends
                // the statement but is not a line of the file.
                if !byte.from_macro {
                    self.line += 1;
                }
                TokenKind::Newline
            } else if c == b'"' || c == b'\'' {
                match self.quoted(c, line, report) {
                    Some(kind) => kind,
                    None => {
                        // The file ended inside the string: the end of the
                        // file comes at once, on the string's line.
                        self.eof_reached = true;
                        self.line = line;
                        TokenKind::Eof
                    }
                }
            } else if c == b'$' && !byte.from_macro {
                match self.expand_macro(macros, report) {
                    Some(()) => continue,
                    None => TokenKind::Error,
                }
            } else if let Some(kind) = self.number(byte, report) {
                kind
            } else if starts_word(c) {
                self.word(byte, report)
            } else {
                TokenKind::Punct(c)
            };
            if kind == TokenKind::Error {
                self.find_eol();
            }
            return Token { kind, line };
        }
    }

    /// Skips blanks and a comment; returns the first byte of what follows.
    fn skip_blanks_and_comment(&mut self) -> Option<Byte> {
        let mut byte = self.getc(true)?;
        while is_blank(byte.value) {
            byte = self.getc(true)?;
        }
        if byte.value == b'#' {
            loop {
                byte = self.getc(true)?;
                if byte.value == b'\n' {
                    break;
                }
            }
        }
        Some(byte)
    }

    /// A quoted string; `None` when the file ends inside it.
    fn quoted(&mut self, quote: u8, line: u32, report: &mut Report) -> Option<TokenKind> {
        let mut text = Vec::new();
        loop {
            let Some(Byte { value: c, .. }) = self.getc(false) else {
                report.error(
                    &self.file,
                    line,
                    "reached end of file while parsing quoted string",
                );
                return None;
            };
            if c == quote {
                break;
            }
            match c {
                b'\n' => {
                    // Kept out of the string; only counts the line.
                    self.line += 1;
                    continue;
                }
                b'\\' => match self.getc(false) {
                    Some(next) if next.value == quote || matches!(next.value, b' ' | b'\t') => {
                        text.push(next.value);
                    }
                    Some(next) if next.value == b'\n' => {
                        self.line += 1;
                    }
                    Some(next) => {
                        // Not an escape: the backslash is literal and the
                        // next byte is read normally.
                        text.push(c);
                        self.ungetc(next);
                    }
                    None => text.push(c),
                },
                _ => text.push(c),
            }
            if text.len() > MAX_TOKEN_LEN {
                report.error(&self.file, self.line, "string too long");
                self.skip_past_quote(quote);
                return Some(TokenKind::Error);
            }
        }
        Some(self.utf8(text, line, report))
    }

    /// After an overlong quoted string, resynchronises at its closing quote
    /// so that its contents are not lexed as tokens.
    fn skip_past_quote(&mut self, quote: u8) {
        while let Some(byte) = self.getc(false) {
            match byte.value {
                b'\n' => self.line += 1,
                // Escapes as in `quoted`, so that both agree on where the
                // string ends.
                b'\\' => match self.getc(false) {
                    Some(next) if next.value == b'\n' => self.line += 1,
                    Some(next) if next.value == quote || matches!(next.value, b' ' | b'\t') => {}
                    Some(next) => self.ungetc(next),
                    None => return,
                },
                c if c == quote => return,
                _ => {}
            }
        }
    }

    fn utf8(&self, text: Vec<u8>, line: u32, report: &mut Report) -> TokenKind {
        match String::from_utf8(text) {
            Ok(text) => TokenKind::Str(text),
            Err(_) => {
                report.error(&self.file, line, "string is not valid UTF-8");
                TokenKind::Error
            }
        }
    }

    /// `$name`: pushes the macro's value back into the input so that it is
    /// tokenised in place. `None` after reporting an undefined macro.
    fn expand_macro(&mut self, macros: &mut MacroTable, report: &mut Report) -> Option<()> {
        let line = self.line;
        let mut name = Vec::new();
        while let Some(byte) = self.getc(true) {
            if !is_macro_name_byte(byte.value) {
                self.ungetc(byte);
                break;
            }
            name.push(byte.value);
            if name.len() > MAX_TOKEN_LEN {
                report.error(&self.file, line, "string too long");
                return None;
            }
        }
        // Only ASCII bytes were collected.
        let name = String::from_utf8(name).expect("macro names are ASCII");
        let Some(value) = macros.expand(&name) else {
            report.error(&self.file, line, format!("macro '{name}' not defined"));
            return None;
        };
        let value = value.as_bytes().to_vec();
        for &c in value.iter().rev() {
            self.pushback.push(Byte {
                value: c,
                from_macro: true,
            });
        }
        Some(())
    }

    /// An optional `-` and digits followed by a terminator is a number;
    /// anything else is given back to be read as a word (so `512M` and
    /// `100.64.0.0/10` are strings). `None` when this is not a number.
    fn number(&mut self, first: Byte, report: &mut Report) -> Option<TokenKind> {
        if first.value != b'-' && !first.value.is_ascii_digit() {
            return None;
        }
        let mut read = vec![first];
        let mut digits = usize::from(first.value.is_ascii_digit());
        let after = loop {
            match self.getc(true) {
                Some(byte) if byte.value.is_ascii_digit() => {
                    read.push(byte);
                    digits += 1;
                }
                other => break other,
            }
        };
        if digits == 0 || !ends_number(after.map(|b| b.value)) {
            if let Some(after) = after {
                self.ungetc(after);
            }
            self.unget_all(&read[1..]);
            return None;
        }
        if let Some(after) = after {
            self.ungetc(after);
        }
        let text: String = read.iter().map(|b| char::from(b.value)).collect();
        if text.len() > MAX_TOKEN_LEN {
            report.error(&self.file, self.line, "string too long");
            return Some(TokenKind::Error);
        }
        Some(match parse_number(&text) {
            Ok(value) => TokenKind::Number { value, text },
            Err(reason) => {
                report.error(
                    &self.file,
                    self.line,
                    format!("\"{text}\" invalid number: {reason}"),
                );
                TokenKind::Error
            }
        })
    }

    fn word(&mut self, first: Byte, report: &mut Report) -> TokenKind {
        let line = self.line;
        let mut text = vec![first.value];
        while let Some(byte) = self.getc(true) {
            if !continues_word(byte.value) {
                self.ungetc(byte);
                break;
            }
            text.push(byte.value);
            if text.len() > MAX_TOKEN_LEN {
                report.error(&self.file, line, "string too long");
                // Swallow the rest of the word so that it does not come
                // back as more tokens.
                while let Some(byte) = self.getc(true) {
                    if !continues_word(byte.value) {
                        self.ungetc(byte);
                        break;
                    }
                }
                return TokenKind::Error;
            }
        }
        if let Some(keyword) = Keyword::from_word(&text) {
            return TokenKind::Keyword(keyword);
        }
        self.utf8(text, line, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex_with(input: &str, macros: &mut MacroTable) -> (Vec<(TokenKind, u32)>, Vec<String>) {
        let mut report = Report::default();
        let mut lexer = Lexer::new("t", input.as_bytes().to_vec());
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next(macros, &mut report);
            if token.kind == TokenKind::Eof {
                break;
            }
            tokens.push((token.kind, token.line));
        }
        // The newline the end of the input reads as, unless the input ended
        // inside a quoted string.
        if tokens
            .last()
            .is_some_and(|(kind, _)| *kind == TokenKind::Newline)
        {
            tokens.pop();
        }
        let errors = report.errors.iter().map(|d| d.to_string()).collect();
        (tokens, errors)
    }

    fn lex(input: &str) -> Vec<TokenKind> {
        let (tokens, errors) = lex_with(input, &mut MacroTable::default());
        assert!(errors.is_empty(), "{errors:?}");
        tokens.into_iter().map(|(kind, _)| kind).collect()
    }

    fn s(text: &str) -> TokenKind {
        TokenKind::Str(text.to_string())
    }

    fn n(value: i64) -> TokenKind {
        TokenKind::Number {
            value,
            text: value.to_string(),
        }
    }

    use TokenKind::{Newline, Punct};

    #[test]
    fn words_keywords_and_punctuation() {
        assert_eq!(
            lex("vm \"web\" {\n\tmemory 512M\n}\n"),
            [
                TokenKind::Keyword(Keyword::Vm),
                s("web"),
                Punct(b'{'),
                Newline,
                TokenKind::Keyword(Keyword::Memory),
                s("512M"),
                Newline,
                Punct(b'}'),
                Newline
            ]
        );
        assert_eq!(
            lex("/var/vm/a.img tap3 :x _y"),
            [s("/var/vm/a.img"), s("tap3"), s(":x"), s("_y")]
        );
        // Keywords are exact and case-sensitive.
        assert_eq!(
            lex("VM Vm vm"),
            [s("VM"), s("Vm"), TokenKind::Keyword(Keyword::Vm)]
        );
        // Words stop at ( ) { } ! = # , but take other punctuation.
        assert_eq!(
            lex("a,b=c{d}e!f(g)h"),
            [
                s("a"),
                Punct(b','),
                s("b"),
                Punct(b'='),
                s("c"),
                Punct(b'{'),
                s("d"),
                Punct(b'}'),
                s("e"),
                Punct(b'!'),
                s("f"),
                Punct(b'('),
                s("g"),
                Punct(b')'),
                s("h")
            ]
        );
        assert_eq!(lex("a$b'c\"d;e"), [s("a$b'c\"d;e")]);
        // Words cannot start with other characters.
        assert_eq!(lex(".x"), [Punct(b'.'), s("x")]);
        assert_eq!(lex("-x"), [Punct(b'-'), s("x")]);
    }

    #[test]
    fn numbers() {
        assert_eq!(lex("42 -7 0"), [n(42), n(-7), n(0)]);
        // Terminators: end, blank, ) , / } =
        assert_eq!(
            lex("1)2,3/4}5=6"),
            [
                n(1),
                Punct(b')'),
                n(2),
                Punct(b','),
                n(3),
                s("/4"),
                Punct(b'}'),
                n(5),
                Punct(b'='),
                n(6)
            ]
        );
        // Anything else makes it a word.
        assert_eq!(
            lex("512M 100.64.0.0/10 1g 12:34"),
            [s("512M"), s("100.64.0.0/10"), s("1g"), s("12:34")]
        );
        // `#` does not end a number: the digits are re-read as a word,
        // which `#` then ends, starting a comment.
        assert_eq!(
            lex("5#c
x"),
            [s("5"), Newline, s("x")]
        );
        assert_eq!(lex("10/8"), [n(10), s("/8")]);
        assert_eq!(lex("-5x"), [Punct(b'-'), s("5x")]);
        assert_eq!(lex("- 5"), [Punct(b'-'), n(5)]);
        assert_eq!(
            lex("9223372036854775807 -9223372036854775808"),
            [n(i64::MAX), n(i64::MIN)]
        );
        let (tokens, errors) = lex_with(
            "9223372036854775808\n-9223372036854775809\n",
            &mut MacroTable::default(),
        );
        assert_eq!(tokens[0].0, TokenKind::Error);
        assert_eq!(
            errors,
            [
                "t:1: \"9223372036854775808\" invalid number: too large",
                "t:2: \"-9223372036854775809\" invalid number: too small",
            ]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(
            lex(r#""a b" 'c d' "it's" 'say "hi"'"#),
            [s("a b"), s("c d"), s("it's"), s("say \"hi\"")]
        );
        // Backslash escapes the quote, a blank or a tab; otherwise it is
        // literal (so a doubled backslash stays doubled).
        assert_eq!(
            lex(r#""a\"b" 'c\'d' "e\ f" "g\	h" "i\nj" "k\\l""#),
            [
                s("a\"b"),
                s("c'd"),
                s("e f"),
                s("g\th"),
                s("i\\nj"),
                s("k\\\\l")
            ]
        );
        // `#` is literal inside quotes; keywords are not keywords.
        assert_eq!(lex("\"#x\" \"vm\""), [s("#x"), s("vm")]);
        // A newline inside quotes is dropped but counted.
        let (tokens, _) = lex_with("\"a\nb\" x\ny", &mut MacroTable::default());
        assert_eq!(
            tokens,
            [(s("ab"), 1), (s("x"), 2), (Newline, 2), (s("y"), 3)]
        );
        // Backslash-newline inside quotes continues the string.
        let (tokens, _) = lex_with("\"a\\\nb\"\nc", &mut MacroTable::default());
        assert_eq!(tokens, [(s("ab"), 1), (Newline, 2), (s("c"), 3)]);
        // The end of the file inside a string comes at once, on its line.
        let (tokens, errors) = lex_with("x \"abc\ny", &mut MacroTable::default());
        assert_eq!(tokens, [(s("x"), 1)]);
        assert_eq!(
            errors,
            ["t:1: reached end of file while parsing quoted string"]
        );
    }

    #[test]
    fn comments_continuations_and_lines() {
        let (tokens, _) = lex_with(
            "a # comment \"x\n\n  b\\\n c\td\\\ne\n",
            &mut MacroTable::default(),
        );
        assert_eq!(
            tokens,
            [
                (s("a"), 1),
                (Newline, 1),
                (Newline, 2),
                (s("b"), 3),
                (s("c"), 4),
                (s("de"), 4),
                (Newline, 5),
            ]
        );
        // A comment ending in a backslash continues onto the next line.
        assert_eq!(lex("# x \\\ny\nz"), [Newline, s("z")]);
        // DOS line ends.
        assert_eq!(lex("a\r\nb\r\n"), [s("a"), Newline, s("b"), Newline]);
    }

    #[test]
    fn macro_expansion() {
        let mut macros = MacroTable::default();
        macros.define("img", "/var/vm");
        macros.define("opts", "memory 1G");
        macros.define("self", "$self");
        macros.define("q", "\"a b\"");
        let (tokens, errors) = lex_with(
            "$img \"/x\" $img/y $opts \"$img\" $q x$img\n$self\n$nope z\n$",
            &mut macros,
        );
        let kinds: Vec<_> = tokens.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                s("/var/vm"),
                s("/x"),
                s("/var/vm/y"),
                TokenKind::Keyword(Keyword::Memory),
                s("1G"),
                s("$img"),
                s("a b"),
                s("x$img"),
                Newline,
                Punct(b'$'),
                s("self"),
                Newline,
                // An error token stands for the rest of its line.
                TokenKind::Error,
                TokenKind::Error,
            ]
        );
        assert_eq!(
            errors,
            ["t:3: macro 'nope' not defined", "t:4: macro '' not defined"]
        );
        assert_eq!(macros.unused().count(), 0);
    }

    #[test]
    fn overlong_tokens() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let fits = "a".repeat(MAX_TOKEN_LEN);
        assert_eq!(lex(&fits), [s(&fits)]);
        let (tokens, errors) = lex_with(
            &format!("{long} x\n\"{long}\" y\n"),
            &mut MacroTable::default(),
        );
        let kinds: Vec<_> = tokens.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            // Each error token stands for the rest of its line.
            [TokenKind::Error, TokenKind::Error]
        );
        assert_eq!(errors, ["t:1: string too long", "t:2: string too long"]);
        // Skipping the rest of an overlong string honours its escapes.
        let (tokens, errors) = lex_with(
            &format!("\"{long}\\\" still \\\\\" inside\" y\nz\n"),
            &mut MacroTable::default(),
        );
        let kinds: Vec<_> = tokens.into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [TokenKind::Error, s("z"), Newline]);
        assert_eq!(errors, ["t:1: string too long"]);
    }

    #[test]
    fn invalid_utf8_only_matters_in_strings() {
        let mut report = Report::default();
        let mut lexer = Lexer::new("t", b"# \xff comment\n\"\xff\"\n".to_vec());
        let mut macros = MacroTable::default();
        assert_eq!(lexer.next(&mut macros, &mut report).kind, Newline);
        assert_eq!(lexer.next(&mut macros, &mut report).kind, TokenKind::Error);
        assert_eq!(
            report.errors[0].to_string(),
            "t:2: string is not valid UTF-8"
        );
    }

    #[test]
    fn the_end_reads_as_a_newline_then_ends_on_the_line_after() {
        let mut report = Report::default();
        let mut macros = MacroTable::default();
        for (input, line) in [("", 2), ("a", 2), ("a\n", 3), ("a\nb", 3), ("a\nb\n\n", 5)] {
            let mut lexer = Lexer::new("t", input.as_bytes().to_vec());
            while lexer.peek(&mut macros, &mut report).kind != TokenKind::Eof {
                lexer.next(&mut macros, &mut report);
            }
            assert_eq!(lexer.next(&mut macros, &mut report).line, line, "{input:?}");
        }
    }
}
