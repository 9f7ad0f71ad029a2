//! POSIX getopt(3) as vmctl's commands use it: options first, parsing stops
//! at the first operand or at `--`, `-abc` bundles flags, an option's
//! argument is the rest of the word or the next word.

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

/// Iterates over the options of `args` (the words after the command word)
/// according to a getopt option string such as `"cLB:b:d:"`. After the
/// iteration ends, [`Getopt::operands`] returns the remaining words.
pub struct Getopt<'a> {
    args: &'a [String],
    spec: &'a str,
    index: usize,
    offset: usize,
}

impl<'a> Getopt<'a> {
    pub fn new(args: &'a [String], spec: &'a str) -> Self {
        Getopt {
            args,
            spec,
            index: 0,
            offset: 0,
        }
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

    #[test]
    fn unknown_and_missing() {
        let args = words("-x -m");
        let mut g = Getopt::new(&args, "m:");
        assert_eq!(g.next(), Some(Opt::Unknown('x')));
        assert_eq!(g.next(), Some(Opt::MissingArgument('m')));
        assert_eq!(g.next(), None);
    }
}
