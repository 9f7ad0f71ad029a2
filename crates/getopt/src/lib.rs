//! POSIX getopt(3) as vmctl and vmd use it: options first, parsing stops
//! at the first operand or at `--`, `-abc` bundles flags, an option's
//! argument is the rest of the word or the next word.
//!
//! A command may also accept getopt_long(3)-style long options (`--name
//! value` or `--name=value`), mixed with the short ones before the operands;
//! each long option reports itself under a key character chosen by the
//! command, as getopt_long's `val` does.

/// One parsed option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// A flag or an option with its argument.
    Found(char, Option<String>),
    /// A character not in the option string (getopt's `?`).
    Unknown(char),
    /// An option that needs an argument found none (also `?`).
    MissingArgument(char),
}

/// A long option: `--name`, reported as [`Opt::Found`] with `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongOpt {
    pub name: &'static str,
    pub has_arg: bool,
    /// The character reported for this option; pick one that is not in the
    /// short option string so the two cannot be confused.
    pub key: char,
}

/// Iterates over the options of `args` (the words after the command word)
/// according to a getopt option string such as `"cLB:b:d:"`. After the
/// iteration ends, [`Getopt::operands`] returns the remaining words.
pub struct Getopt<'a> {
    args: &'a [String],
    spec: &'a str,
    long_options: &'a [LongOpt],
    index: usize,
    offset: usize,
}

impl<'a> Getopt<'a> {
    pub fn new(args: &'a [String], spec: &'a str) -> Self {
        Getopt {
            args,
            spec,
            long_options: &[],
            index: 0,
            offset: 0,
        }
    }

    /// Also accepts the given long options. An unrecognised `--word` is
    /// reported as `Opt::Unknown('-')`; without long options a `--word` is
    /// parsed as bundled short options, as getopt(3) does.
    pub fn with_long_options(mut self, long_options: &'a [LongOpt]) -> Self {
        self.long_options = long_options;
        self
    }

    /// The words left once the options are consumed.
    pub fn operands(&self) -> &'a [String] {
        &self.args[self.index.min(self.args.len())..]
    }

    fn takes_argument(&self, c: char) -> Option<bool> {
        let mut chars = self.spec.chars().peekable();
        while let Some(s) = chars.next() {
            let has_arg = chars.peek() == Some(&':');
            if has_arg {
                chars.next();
            }
            if s == c && c != ':' {
                return Some(has_arg);
            }
        }
        None
    }

    /// Consumes the long option `--<text>` at `self.index` (and its
    /// argument word, if it takes one and has no `=value`).
    fn long_option(&mut self, text: &str) -> Opt {
        self.index += 1;
        let (name, inline_value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (text, None),
        };
        let Some(option) = self.long_options.iter().find(|o| o.name == name) else {
            return Opt::Unknown('-');
        };
        if !option.has_arg {
            return match inline_value {
                None => Opt::Found(option.key, None),
                Some(_) => Opt::Unknown('-'),
            };
        }
        if let Some(value) = inline_value {
            return Opt::Found(option.key, Some(value));
        }
        match self.args.get(self.index) {
            Some(value) => {
                self.index += 1;
                Opt::Found(option.key, Some(value.clone()))
            }
            None => Opt::MissingArgument(option.key),
        }
    }
}

impl Iterator for Getopt<'_> {
    type Item = Opt;

    fn next(&mut self) -> Option<Opt> {
        if self.offset == 0 {
            let word = self.args.get(self.index)?;
            if word == "--" {
                self.index += 1;
                return None;
            }
            if !word.starts_with('-') || word == "-" {
                return None;
            }
            if let Some(long) = word.strip_prefix("--")
                && !self.long_options.is_empty()
            {
                return Some(self.long_option(long));
            }
            self.offset = 1;
        }
        let word = &self.args[self.index];
        let c = word[self.offset..].chars().next()?;
        self.offset += c.len_utf8();
        let at_end = self.offset >= word.len();
        match self.takes_argument(c) {
            None => {
                if at_end {
                    self.index += 1;
                    self.offset = 0;
                }
                Some(Opt::Unknown(c))
            }
            Some(false) => {
                if at_end {
                    self.index += 1;
                    self.offset = 0;
                }
                Some(Opt::Found(c, None))
            }
            Some(true) => {
                let value = if !at_end {
                    Some(word[self.offset..].to_string())
                } else {
                    self.args.get(self.index + 1).cloned()
                };
                let consumed = if at_end { 2 } else { 1 };
                self.index += consumed;
                self.offset = 0;
                match value {
                    Some(v) => Some(Opt::Found(c, Some(v))),
                    None => {
                        self.index = self.args.len();
                        Some(Opt::MissingArgument(c))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_arguments_and_operands() {
        let args = words("-cL -m 1G -dfoo.img name extra");
        let mut g = Getopt::new(&args, "cLm:d:");
        let opts: Vec<Opt> = g.by_ref().collect();
        assert_eq!(
            opts,
            vec![
                Opt::Found('c', None),
                Opt::Found('L', None),
                Opt::Found('m', Some("1G".into())),
                Opt::Found('d', Some("foo.img".into())),
            ]
        );
        assert_eq!(g.operands(), &words("name extra")[..]);
    }

    #[test]
    fn stops_at_operand_and_double_dash() {
        let args = words("name -f");
        let mut g = Getopt::new(&args, "f");
        assert_eq!(g.next(), None);
        assert_eq!(g.operands().len(), 2);

        let args = words("-f -- -a");
        let mut g = Getopt::new(&args, "fa");
        assert_eq!(g.next(), Some(Opt::Found('f', None)));
        assert_eq!(g.next(), None);
        assert_eq!(g.operands(), &words("-a")[..]);
    }

    const LONGS: &[LongOpt] = &[
        LongOpt {
            name: "cmdline",
            has_arg: true,
            key: '1',
        },
        LongOpt {
            name: "quiet",
            has_arg: false,
            key: '2',
        },
    ];

    #[test]
    fn long_options_mix_with_short_ones() {
        let args = words("-c --cmdline console=ttyS0 --cmdline=ro --quiet -m 1G vm");
        let mut g = Getopt::new(&args, "cm:").with_long_options(LONGS);
        let opts: Vec<Opt> = g.by_ref().collect();
        assert_eq!(
            opts,
            vec![
                Opt::Found('c', None),
                Opt::Found('1', Some("console=ttyS0".into())),
                Opt::Found('1', Some("ro".into())),
                Opt::Found('2', None),
                Opt::Found('m', Some("1G".into())),
            ]
        );
        assert_eq!(g.operands(), &words("vm")[..]);
    }

    #[test]
    fn long_option_errors() {
        let args = words("--bogus x");
        let mut g = Getopt::new(&args, "c").with_long_options(LONGS);
        assert_eq!(g.next(), Some(Opt::Unknown('-')));

        let args = words("--quiet=yes");
        let mut g = Getopt::new(&args, "c").with_long_options(LONGS);
        assert_eq!(g.next(), Some(Opt::Unknown('-')));

        let args = words("--cmdline");
        let mut g = Getopt::new(&args, "c").with_long_options(LONGS);
        assert_eq!(g.next(), Some(Opt::MissingArgument('1')));
        assert_eq!(g.next(), None);

        // Long options are operands-terminated like short ones.
        let args = words("vm --quiet");
        let mut g = Getopt::new(&args, "c").with_long_options(LONGS);
        assert_eq!(g.next(), None);
        assert_eq!(g.operands().len(), 2);

        // Without long options, `--x` is the short option `-` (unknown).
        let args = words("--x");
        let mut g = Getopt::new(&args, "x");
        assert_eq!(g.next(), Some(Opt::Unknown('-')));
    }

    #[test]
    fn unknown_and_missing() {
        let args = words("-x -m");
        let mut g = Getopt::new(&args, "m:");
        assert_eq!(g.next(), Some(Opt::Unknown('x')));
        assert_eq!(g.next(), Some(Opt::MissingArgument('m')));
        assert_eq!(g.next(), None);
    }
}
